// chardev's browser console: one window per domain, a tab per device (xterm.js), each over a
// WebSocket of its own. Served as is by src/web/server.ts, next to xterm.mjs and
// addon-fit.mjs from node_modules: an ES module, no bundler, no CDN.
//
// Wire (docs/browser.md): binary frames are guest bytes, both ways; text frames are JSON
// control messages — hello, notice, role, counters, error from the server; resize, break,
// take, counters from us.
//
// The sockets are wired here rather than with @xterm/addon-attach: the attach addon writes
// every text frame into the terminal (our control messages would show up as JSON), cannot
// gate keystrokes on the current role, and is bound to one socket for its life, while a tab
// opens a new socket on every reconnect and must reset its terminal before the history
// replay of the new one.
import { Terminal } from './xterm.mjs';
import { FitAddon } from './addon-fit.mjs';

const params = new URLSearchParams(location.search);
const on = (v) => v !== null && ['1', 'true', 'yes', 'on'].includes(v.toLowerCase());
const token = params.get('token');
const askedReadonly = on(params.get('readonly'));
const askedForce = on(params.get('force'));

// `PREFIX` is the domain's window, `PREFIX console/ALIAS` one device alone; PREFIX is `/` or
// `/domain/NAME/`, and every path the page uses is under it.
const single = /^(.*\/)console\/([^/]+)$/.exec(location.pathname);
const base = single !== null ? single[1] : location.pathname.replace(/[^/]*$/, '');
const singleAlias = single !== null ? decodeURIComponent(single[2]) : undefined;

// The token leaves the address bar (and the history, and whatever the user copies from it):
// the cookie this page's response set keeps the session, for reloads too.
if (token !== null) {
  params.delete('token');
  const q = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${q === '' ? '' : `?${q}`}${location.hash}`);
}

const $ = (id) => document.getElementById(id);
const ui = {
  tabs: $('tabs'),
  container: $('terminal'),
  status: $('status'),
  domain: $('st-domain'),
  device: $('st-device'),
  state: $('st-state'),
  role: $('st-role'),
  takeover: $('st-takeover'),
  brk: $('st-break'),
  notice: $('st-notice'),
  counters: $('st-counters'),
  copySelect: $('opt-copy-select'),
  keys: $('st-keys'),
};

const encoder = new TextEncoder();
const COPY_SELECT_KEY = 'chardev.copyOnSelect';
let copyOnSelect = false;
try {
  copyOnSelect = localStorage.getItem(COPY_SELECT_KEY) === '1';
} catch {
  // Storage refused (privacy settings): the option lasts for this page only.
}
ui.copySelect.checked = copyOnSelect;
ui.copySelect.addEventListener('change', () => {
  copyOnSelect = ui.copySelect.checked;
  try {
    localStorage.setItem(COPY_SELECT_KEY, copyOnSelect ? '1' : '0');
  } catch {
    // as above
  }
  active?.term?.focus();
});

/** @type {Tab[]} */
const tabs = [];
/** @type {Tab | undefined} */
let active;
let domainName = '';

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u += 1;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

function copyText(text, tab) {
  if (text === '') return;
  if (navigator.clipboard?.writeText !== undefined) {
    navigator.clipboard.writeText(text).then(
      () => tab.notice('copied'),
      () => tab.notice('copy: the browser refused clipboard access'),
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
  tab.notice('copied');
}

/** One device: its terminal, its socket, its role; created when first shown. */
class Tab {
  constructor(dev, index) {
    this.alias = dev.alias;
    this.label = dev.id ?? '';
    this.deviceType = dev.type ?? '';
    this.interactive = dev.interactive !== false;
    this.index = index;
    this.readonly = askedReadonly || !this.interactive;
    this.wantForce = askedForce;
    this.role = '';
    this.state = 'idle';
    this.stateText = 'not opened';
    this.noticeText = '';
    this.noticeTimer = undefined;
    this.counters = undefined;
    this.attempt = 0;
    this.ws = undefined;
    this.retryTimer = undefined;
    this.term = undefined;
    this.fit = undefined;
    this.el = document.createElement('div');
    this.el.className = 'term';
    this.el.hidden = true;
    this.el.id = `term-${index}`;
    ui.container.append(this.el);
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'tab';
    b.setAttribute('role', 'tab');
    b.setAttribute('aria-controls', this.el.id);
    b.dataset.alias = this.alias;
    const key = index < 9 ? `Ctrl+Alt+${index + 1}` : '';
    b.title = `${this.label || this.alias} (${this.deviceType || 'device'}${this.interactive ? '' : ', read-only'})${key === '' ? '' : ` — ${key}`}`;
    const num = document.createElement('span');
    num.className = 'num';
    num.textContent = index < 9 ? String(index + 1) : '·';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = this.alias;
    const kind = document.createElement('span');
    kind.className = 'kind';
    kind.textContent = this.deviceType;
    b.append(num, name, kind);
    b.addEventListener('click', () => show(this));
    this.button = b;
    ui.tabs.append(b);
    this.paint();
  }

  /** The terminal and the connection, the first time the tab is shown. */
  open() {
    if (this.term !== undefined) return;
    const term = new Terminal({
      cursorBlink: true,
      scrollback: 10000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      // Room below the baseline: at 1.0 some fonts' underscores are clipped.
      lineHeight: 1.15,
      theme: { background: '#1e1e1e', foreground: '#d4d4d4' },
      disableStdin: true,
    });
    this.fit = new FitAddon();
    term.loadAddon(this.fit);
    term.open(this.el);
    this.term = term;
    term.onData((data) => this.send(encoder.encode(data)));
    // Mouse reports in X10 mode are bytes, not text.
    term.onBinary((data) => this.send(Uint8Array.from(data, (ch) => ch.charCodeAt(0) & 0xff)));
    // The writer's size is the guest's (a `run --tty` guest's pty; see docs/browser.md).
    term.onResize(({ cols, rows }) => this.control({ type: 'resize', cols, rows }));
    term.onSelectionChange(() => {
      if (copyOnSelect && term.hasSelection()) copyText(term.getSelection(), this);
    });
    term.attachCustomKeyEventHandler((ev) => this.key(ev));
    this.refit();
    this.connect();
  }

  refit() {
    if (this.fit === undefined || this.el.hidden) return;
    try {
      this.fit.fit();
    } catch {
      // Not laid out yet; the next resize fits it.
    }
  }

  /** Guest input: only the writer's, only while connected. */
  send(bytes) {
    const ws = this.ws;
    if (this.role !== 'writer' || ws === undefined || ws.readyState !== WebSocket.OPEN) return;
    ws.send(bytes);
  }

  control(msg) {
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify(msg));
  }

  sendBreak() {
    if (this.role !== 'writer') {
      this.notice('a BREAK needs the writer role');
      return;
    }
    this.control({ type: 'break' });
    this.notice('BREAK sent');
  }

  // Ctrl+C and Ctrl+V belong to the guest (^C, ^V), so copy and paste are Ctrl+Shift+C/V as
  // in most terminal emulators. Selecting with the mouse and the browser's own Copy/Paste
  // (context menu, Edit menu) work too; xterm.js turns a paste event into term.paste.
  key(ev) {
    // The window's hotkeys were taken before xterm.js saw them (see the capture listener);
    // this keeps xterm.js from acting on the keyup or a repeat that slipped through.
    if (hotkey(ev) !== undefined) return false;
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey || ev.altKey || ev.metaKey) return true;
    if (ev.code === 'KeyC') {
      ev.preventDefault();
      copyText(this.term.getSelection(), this);
      return false;
    }
    if (ev.code === 'KeyV') {
      if (navigator.clipboard?.readText !== undefined) {
        ev.preventDefault();
        navigator.clipboard.readText().then(
          (text) => {
            if (text !== '') this.term.paste(text);
          },
          () => this.notice("paste: the browser refused clipboard access; use the browser's Paste"),
        );
      }
      // Otherwise the browser's own paste event follows, which xterm.js handles.
      return false;
    }
    return true;
  }

  notice(text) {
    this.noticeText = text;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => {
      this.noticeText = '';
      this.paint();
    }, 15000);
    this.paint();
  }

  setState(state, text) {
    this.state = state;
    this.stateText = text ?? state;
    this.paint();
  }

  setRole(role) {
    this.role = role;
    if (this.term !== undefined) this.term.options.disableStdin = role !== 'writer';
    if (role === 'writer' && this === active) this.term?.focus();
    this.paint();
  }

  /** The tab button, and the status line when this is the tab shown. */
  paint() {
    const b = this.button;
    b.dataset.state = this.state;
    b.dataset.role = this.role;
    b.setAttribute('aria-selected', String(this === active));
    if (this === active) render();
  }

  onControl(msg) {
    if (msg.type === 'hello') {
      // A fresh session: the history replay that follows redraws the screen from scratch.
      this.term.reset();
      this.readonly = msg.readonly === true;
      this.interactive = msg.interactive !== false;
      this.label = msg.label ?? this.label;
      if (typeof msg.deviceType === 'string') this.deviceType = msg.deviceType;
      domainName = msg.domain ?? domainName;
      this.attempt = 0;
      this.wantForce = false;
      this.setState('connected');
      this.setRole(msg.role);
      this.refit();
      // The server learns our size only when we say it; a writer's becomes the guest's.
      if (this.term.cols > 0 && this.term.rows > 0) this.control({ type: 'resize', cols: this.term.cols, rows: this.term.rows });
      this.control({ type: 'counters' });
    } else if (msg.type === 'role') {
      this.setRole(msg.role);
    } else if (msg.type === 'notice' || msg.type === 'error') {
      this.notice(msg.text);
    } else if (msg.type === 'counters') {
      this.counters = msg;
      this.paint();
    }
  }

  scheduleReconnect() {
    // 1 s, 2 s, 4 s, … up to 15 s between attempts; a session that got going starts over at 1 s.
    const delay = Math.min(15, 2 ** this.attempt);
    this.attempt += 1;
    let left = delay;
    const tick = () => {
      if (left <= 0) {
        this.connect();
        return;
      }
      this.setState('reconnecting', `reconnecting in ${left}s`);
      left -= 1;
      this.retryTimer = setTimeout(tick, 1000);
    };
    tick();
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setState('connecting');
    const q = new URLSearchParams();
    // The cookie would do; the token (kept in memory, not in the address bar) also works where cookies are off.
    if (token !== null) q.set('token', token);
    if (askedReadonly) q.set('readonly', '1');
    if (this.wantForce) q.set('force', '1');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}${base}ws/${encodeURIComponent(this.alias)}?${q}`);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.addEventListener('message', (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data === 'string') {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (msg !== null && typeof msg === 'object') this.onControl(msg);
      } else {
        this.term.write(new Uint8Array(ev.data));
      }
    });
    ws.addEventListener('close', () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      // Coming back after a drop: take the writer role again if it was ours.
      if (this.role === 'writer') this.wantForce = true;
      this.setRole('');
      this.scheduleReconnect();
    });
  }
}

/** The status line and the title: the tab shown. */
function render() {
  const t = active;
  if (t === undefined) return;
  const writer = t.role === 'writer';
  ui.status.dataset.state = t.state;
  ui.status.dataset.role = t.role;
  ui.domain.textContent = domainName || '…';
  ui.device.textContent = t.alias;
  ui.device.title = `device ${t.label}`;
  ui.state.textContent = t.stateText;
  ui.role.textContent = writer ? 'writer' : t.role === '' ? '' : 'read-only viewer';
  document.body.classList.toggle('readonly', t.role !== '' && !writer);
  // A viewer of a vc device that may write can take the writer role over.
  ui.takeover.hidden = writer || t.role === '' || t.readonly || !t.interactive;
  ui.brk.hidden = !writer;
  ui.notice.textContent = t.noticeText;
  ui.notice.title = t.noticeText;
  const k = t.counters;
  ui.counters.textContent =
    k === undefined ? '' : `↓ ${formatBytes(k.bytesFromGuest)} · ↑ ${formatBytes(k.bytesToGuest)} · ${k.clients} client${k.clients === 1 ? '' : 's'}`;
  ui.keys.textContent = writer ? 'copy Ctrl+Shift+C · paste Ctrl+Shift+V · BREAK Ctrl+Alt+B' : 'copy Ctrl+Shift+C';
  document.title = domainName === '' ? `${t.alias} — chardev` : `${t.alias} · ${domainName} — chardev`;
}

function show(tab) {
  if (tab === undefined) return;
  const before = active;
  active = tab;
  for (const t of tabs) {
    t.el.hidden = t !== tab;
    t.paint();
  }
  tab.open();
  tab.refit();
  tab.term.focus();
  // The tab shown survives a reload.
  if (singleAlias === undefined && before !== tab)
    history.replaceState(history.state, '', `${location.pathname}${location.search}#${encodeURIComponent(tab.alias)}`);
  render();
}

/**
 * The window's own keys, as QEMU's display has them: Ctrl+Alt+N shows console N;
 * Ctrl+Alt+B sends a BREAK (so does the Pause/Break key). AltGr, which some systems report
 * as Ctrl+Alt, types characters instead.
 */
function hotkey(ev) {
  if (ev.getModifierState?.('AltGraph') === true) return undefined;
  if (ev.code === 'Pause' && !ev.ctrlKey && !ev.altKey && !ev.metaKey) return { brk: true };
  if (!ev.ctrlKey || !ev.altKey || ev.metaKey) return undefined;
  const digit = /^Digit([1-9])$/.exec(ev.code);
  if (digit !== null) return { tab: Number(digit[1]) - 1 };
  if (ev.code === 'KeyB') return { brk: true };
  return undefined;
}

// The capture phase at the window runs before xterm.js's listener on its textarea: the guest
// never sees these keys.
window.addEventListener(
  'keydown',
  (ev) => {
    const k = hotkey(ev);
    if (k === undefined) return;
    ev.preventDefault();
    ev.stopPropagation();
    if (ev.repeat) return;
    if (k.tab !== undefined) show(tabs[k.tab]);
    else active?.sendBreak();
  },
  true,
);

ui.takeover.addEventListener('click', () => {
  active?.control({ type: 'take' });
  active?.term?.focus();
});
ui.brk.addEventListener('click', () => {
  active?.sendBreak();
  active?.term?.focus();
});
ui.tabs.addEventListener('keydown', (ev) => {
  // Arrow keys move along the tab bar, as in any tab list.
  if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
  const i = tabs.indexOf(active);
  const next = tabs[(i + (ev.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
  show(next);
  next?.button.focus();
});

// A paste while the focus is outside the terminal (the status line) still goes to it.
document.addEventListener('paste', (ev) => {
  if (active?.term === undefined || active.el.contains(ev.target)) return;
  const text = ev.clipboardData?.getData('text/plain') ?? '';
  if (text !== '') {
    ev.preventDefault();
    active.term.paste(text);
  }
});

new ResizeObserver(() => active?.refit()).observe(ui.container);
window.addEventListener('resize', () => active?.refit());
ui.container.addEventListener('click', () => active?.term?.focus());

// Now and again, the shown device's counters.
setInterval(() => {
  if (active?.state === 'connected' && document.visibilityState === 'visible') active.control({ type: 'counters' });
}, 5000);

// For tests and for poking at it from the devtools console: the tab shown.
Object.defineProperty(window, 'chardevTerm', { get: () => active?.term });
Object.defineProperty(window, 'chardevConsole', { get: () => active });
window.chardevTabs = tabs;

async function start() {
  if (singleAlias !== undefined) {
    document.body.classList.add('single');
    tabs.push(new Tab({ alias: singleAlias }, 0));
    show(tabs[0]);
    return;
  }
  let list;
  try {
    const q = token === null ? '' : `?token=${encodeURIComponent(token)}`;
    const res = await fetch(`${base}devices${q}`, { credentials: 'same-origin', cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    list = await res.json();
  } catch (e) {
    ui.state.textContent = 'error';
    ui.notice.textContent = `cannot list the devices: ${e.message}`;
    return;
  }
  domainName = list.domain ?? '';
  list.devices.forEach((d, i) => tabs.push(new Tab(d, i)));
  if (tabs.length === 0) {
    ui.state.textContent = 'no devices';
    return;
  }
  // The tab in the address (a reload), else the first interactive one, else the first.
  const wanted = decodeURIComponent(location.hash.slice(1));
  show(tabs.find((t) => t.alias === wanted) ?? tabs.find((t) => t.interactive) ?? tabs[0]);
}

void start();
