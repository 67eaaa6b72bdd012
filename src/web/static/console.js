// chardev's browser console: one device's terminal (xterm.js) over a WebSocket.
// Served as is by src/web/server.ts, next to xterm.mjs and addon-fit.mjs from
// node_modules: an ES module, no bundler, no CDN.
//
// Wire (see server.ts): binary frames from the server are guest output; text frames are
// JSON control messages (hello, notice, role); what we send is guest input.
//
// The socket is wired here rather than with @xterm/addon-attach: the attach addon writes
// every text frame into the terminal (our control messages would show up as JSON), cannot
// gate keystrokes on the current role, and is bound to one socket for its life, while this
// page opens a new socket on every reconnect and must reset the terminal before the
// history replay of the new one.
import { Terminal } from './xterm.mjs';
import { FitAddon } from './addon-fit.mjs';

const params = new URLSearchParams(location.search);
const on = (v) => v !== null && ['1', 'true', 'yes', 'on'].includes(v.toLowerCase());
const token = params.get('token');
const alias = decodeURIComponent(location.pathname.replace(/^\/console\//, ''));
const askedReadonly = on(params.get('readonly'));
/** Take the writer role when connecting: asked in the URL, or we had it before a drop. */
let wantForce = on(params.get('force'));

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  domain: $('st-domain'),
  device: $('st-device'),
  state: $('st-state'),
  role: $('st-role'),
  takeover: $('st-takeover'),
  notice: $('st-notice'),
  keys: $('st-keys'),
};
ui.device.textContent = alias;

const term = new Terminal({
  cursorBlink: true,
  scrollback: 10000,
  fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
  fontSize: 14,
  // Room below the baseline: at 1.0 some fonts' underscores are clipped.
  lineHeight: 1.15,
  theme: { background: '#1e1e1e', foreground: '#d4d4d4' },
});
const fit = new FitAddon();
term.loadAddon(fit);
const container = $('terminal');
term.open(container);
// For tests and for poking at it from the devtools console.
window.chardevTerm = term;

function refit() {
  try {
    fit.fit();
  } catch {
    // Not laid out yet (hidden tab); the next resize fits it.
  }
}
new ResizeObserver(() => refit()).observe(container);
window.addEventListener('resize', refit);
refit();

/** Current connection, role and what the server said about us. */
const conn = { ws: undefined, role: '', readonly: askedReadonly, interactive: true, attempt: 0 };
window.chardevConsole = conn;

let noticeTimer;
function notice(text) {
  ui.notice.textContent = text;
  ui.notice.title = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    ui.notice.textContent = '';
  }, 15000);
}

function setState(state, text) {
  ui.status.dataset.state = state;
  ui.state.textContent = text ?? state;
}

function setRole(role) {
  conn.role = role;
  const writer = role === 'writer';
  ui.status.dataset.role = role;
  ui.role.textContent = writer ? 'writer' : role === '' ? '' : 'read-only viewer';
  document.body.classList.toggle('readonly', role !== '' && !writer);
  // A viewer of a vc device that may write can take the writer role over.
  ui.takeover.hidden = writer || role === '' || conn.readonly || !conn.interactive;
  term.options.disableStdin = !writer;
  ui.keys.textContent = writer ? 'copy Ctrl+Shift+C · paste Ctrl+Shift+V' : 'copy Ctrl+Shift+C';
  if (writer) term.focus();
}

function send(data) {
  const ws = conn.ws;
  if (conn.role !== 'writer' || ws === undefined || ws.readyState !== WebSocket.OPEN) return;
  ws.send(data);
}

term.onData((data) => send(data));
// Mouse reports in X10 mode are bytes, not text.
term.onBinary((data) => send(Uint8Array.from(data, (ch) => ch.charCodeAt(0) & 0xff)));

function copySelection() {
  const text = term.getSelection();
  if (text === '') return;
  if (navigator.clipboard?.writeText !== undefined) {
    navigator.clipboard.writeText(text).then(
      () => notice('copied'),
      () => notice('copy: the browser refused clipboard access'),
    );
    return;
  }
  // Not a secure context (http to another machine): the old way.
  const ta = document.createElement('textarea');
  ta.value = text;
  document.body.append(ta);
  ta.select();
  document.execCommand('copy');
  ta.remove();
  notice('copied');
}

// Ctrl+C and Ctrl+V belong to the guest (^C, ^V), so copy and paste are Ctrl+Shift+C/V as
// in most terminal emulators. Selecting with the mouse and the browser's own Copy/Paste
// (context menu, Edit menu) work too; xterm.js turns a paste event into term.paste.
term.attachCustomKeyEventHandler((ev) => {
  if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey || ev.altKey || ev.metaKey) return true;
  if (ev.code === 'KeyC') {
    ev.preventDefault();
    copySelection();
    return false;
  }
  if (ev.code === 'KeyV') {
    if (navigator.clipboard?.readText !== undefined) {
      ev.preventDefault();
      navigator.clipboard.readText().then(
        (text) => {
          if (text !== '') term.paste(text);
        },
        () => notice("paste: the browser refused clipboard access; use the browser's Paste"),
      );
    }
    // Otherwise the browser's own paste event follows, which xterm.js handles.
    return false;
  }
  return true;
});
// A paste while the focus is outside the terminal (the status line) still goes to it.
document.addEventListener('paste', (ev) => {
  if (container.contains(ev.target)) return;
  const text = ev.clipboardData?.getData('text/plain') ?? '';
  if (text !== '') {
    ev.preventDefault();
    term.paste(text);
  }
});

ui.takeover.addEventListener('click', () => {
  wantForce = true;
  conn.ws?.close(1000, 'taking over');
});

function onControl(msg) {
  if (msg.type === 'hello') {
    // A fresh session: the history replay that follows redraws the screen from scratch.
    term.reset();
    conn.readonly = msg.readonly === true;
    conn.interactive = msg.interactive !== false;
    ui.domain.textContent = msg.domain;
    ui.device.textContent = msg.device;
    ui.device.title = `device ${msg.label}`;
    document.title = `${msg.device} · ${msg.domain} — chardev`;
    setState('connected');
    setRole(msg.role);
    refit();
  } else if (msg.type === 'role') {
    setRole(msg.role);
  } else if (msg.type === 'notice') {
    notice(msg.text);
  }
}

let retryTimer;
function scheduleReconnect() {
  // 1 s, 2 s, 4 s, … up to 15 s between attempts; a session that got going starts over at 1 s.
  const delay = Math.min(15, 2 ** conn.attempt);
  conn.attempt += 1;
  let left = delay;
  const tick = () => {
    if (left <= 0) {
      connect();
      return;
    }
    setState('reconnecting', `reconnecting in ${left}s`);
    left -= 1;
    retryTimer = setTimeout(tick, 1000);
  };
  tick();
}

function connect() {
  clearTimeout(retryTimer);
  setState('connecting');
  const q = new URLSearchParams();
  if (token !== null) q.set('token', token);
  if (askedReadonly) q.set('readonly', '1');
  if (wantForce) q.set('force', '1');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws/${encodeURIComponent(alias)}?${q}`);
  ws.binaryType = 'arraybuffer';
  conn.ws = ws;
  ws.addEventListener('message', (ev) => {
    if (conn.ws !== ws) return;
    if (typeof ev.data === 'string') {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg !== null && typeof msg === 'object') onControl(msg);
      if (msg?.type === 'hello') {
        conn.attempt = 0;
        wantForce = false;
      }
    } else {
      term.write(new Uint8Array(ev.data));
    }
  });
  ws.addEventListener('close', () => {
    if (conn.ws !== ws) return;
    conn.ws = undefined;
    // Coming back after a drop: take the writer role again if it was ours.
    if (conn.role === 'writer') wantForce = true;
    setRole('');
    scheduleReconnect();
  });
}

connect();
