/**
 * The browser console in a real browser: playwright-core driving Debian's chromium
 * (installed by .ci/run) against startWebServer and against `chardev run`.
 * The page's terminal is read back from xterm.js's own buffer (window.chardevTerm).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import WebSocket from 'ws';
import { open } from '../../src/index.ts';
import type { Chardev } from '../../src/core/chardev.ts';
import type { Domain } from '../../src/core/domain.ts';
import { startWebServer, type WebServer } from '../../src/web/server.ts';
import { parseWebAddress } from '../../src/cli/commands/run.ts';
import { run } from '../core/helpers.ts';
import { eventually } from '../platform/helpers.ts';
import { ROOT } from '../helpers/paths.ts';
import { launchChromium, screen } from '../helpers/chromium.ts';

const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const CLI = path.join(ROOT, 'src', 'cli', 'main.ts');
const T = { timeout: 20000 };

const XML = `<domain type='kvm' xmlns:cd='urn:chardev:1'>
  <name>webtest</name>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='vc'>
      <target port='0'/>
      <cd:history size='65536'/>
      <cd:clients max='8'/>
    </serial>
    <serial type='null'>
      <target port='1'/>
      <cd:history size='65536'/>
    </serial>
  </devices>
</domain>
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface StatusLine {
  state: string;
  role: string;
  text: string;
  readonlyMarked: boolean;
  takeoverShown: boolean;
}
function status(page: Page): Promise<StatusLine> {
  return page.evaluate<StatusLine>(`(() => {
    const s = document.getElementById('status');
    return {
      state: s.dataset.state,
      role: s.dataset.role,
      text: s.innerText.replace(/\\s+/g, ' '),
      readonlyMarked: document.body.classList.contains('readonly'),
      takeoverShown: !document.getElementById('st-takeover').hidden,
    };
  })()`);
}

async function connected(page: Page, role: 'writer' | 'viewer'): Promise<void> {
  await eventually(async () => {
    const s = await status(page);
    return s.state === 'connected' && s.role === role;
  }, `the page to be connected as ${role}`);
}

/** Try a WebSocket handshake; resolves with 'open' or the HTTP status it was refused with. */
function handshake(url: string, origin: string | undefined): Promise<number | 'open'> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, origin === undefined ? {} : { origin });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no handshake answer from ${url}`));
    }, 5000);
    ws.on('open', () => {
      clearTimeout(timer);
      ws.close();
      resolve('open');
    });
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('error', () => {});
  });
}

/** A raw GET (no URL normalisation on our side), for traversal attempts. */
function rawGet(port: number, rawPath: string, headers: http.OutgoingHttpHeaders = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: rawPath, headers }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

describe('browser console (chromium)', () => {
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let domain: Domain | undefined;
  let web: WebServer | undefined;
  let vc: Chardev;
  let watched: Chardev;
  let fromVc = Buffer.alloc(0);
  let fromWatched = Buffer.alloc(0);
  const pages: Page[] = [];

  before(async () => {
    domain = await open(XML, { load: { file: 'web.xml' } });
    vc = domain.device('serial0');
    watched = domain.device('serial1');
    // The guest side: collect what reaches it.
    vc.on('data', (b) => (fromVc = Buffer.concat([fromVc, b])));
    watched.on('data', (b) => (fromWatched = Buffer.concat([fromWatched, b])));
    web = await startWebServer(domain, {});
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 960, height: 540 } });
    context.setDefaultTimeout(5000);
  });

  after(async () => {
    try {
      await context?.close();
      await browser?.close();
    } finally {
      await domain?.stop();
      await web?.close();
    }
  });

  async function newPage(url: string): Promise<Page> {
    assert.ok(context !== undefined);
    const page = await context.newPage();
    pages.push(page);
    const res = await page.goto(url);
    assert.equal(res?.status(), 200);
    return page;
  }

  it('guest output appears in the terminal; typing reaches the guest; the terminal fits the window; screenshot', T, async () => {
    assert.ok(web !== undefined);
    vc.write(Buffer.from('\x1b[1;32mchardev\x1b[0m guest on \x1b[36mserial0\x1b[0m (vc)\r\nlogin: '));
    const page = await newPage(web.urlFor('serial0'));
    await connected(page, 'writer');
    // Before the tab, the history: after, live output.
    await eventually(async () => (await screen(page)).includes('chardev guest on serial0 (vc)'), 'the history on screen');
    vc.write(Buffer.from('\r\nlive line from the guest\r\n$ '));
    await eventually(async () => (await screen(page)).includes('live line from the guest'), 'live output on screen');
    const st = await status(page);
    assert.match(st.text, /webtest/);
    assert.match(st.text, /serial0/);
    assert.match(st.text, /connected/);
    assert.match(st.text, /writer/);
    assert.equal(st.readonlyMarked, false);

    await page.locator('#terminal').click();
    await page.keyboard.type('uname -a');
    await page.keyboard.press('Enter');
    await eventually(() => fromVc.toString().includes('uname -a\r'), `the keys at the guest (got ${JSON.stringify(fromVc.toString())})`);
    assert.equal(fromVc.toString(), 'uname -a\r');
    // The guest echoes, as a shell on a terminal would.
    vc.write(Buffer.from('uname -a\r\nLinux guest 6.1.0 x86_64 GNU/Linux\r\n$ '));
    await eventually(async () => (await screen(page)).includes('Linux guest 6.1.0'), 'the echo on screen');

    // Fitted to the window, and refitted when it changes.
    const cols = (): Promise<number> => page.evaluate<number>('window.chardevTerm.cols');
    const wide = await cols();
    assert.ok(wide > 80, `a 960 px window is wider than 80 columns (${wide})`);
    await page.setViewportSize({ width: 480, height: 400 });
    await eventually(async () => (await cols()) < wide / 1.5, 'the terminal to refit a narrower window');
    await page.setViewportSize({ width: 960, height: 540 });
    await eventually(async () => (await cols()) === wide, 'the terminal to refit back');

    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, 'web-console.png');
    await page.screenshot({ path: shot });
    assert.ok(fs.statSync(shot).size > 1000, 'a real PNG');
  });

  it('copy and paste: Ctrl+Shift+C copies the selection, Ctrl+Shift+V and pastes reach the guest', T, async () => {
    assert.ok(web !== undefined && context !== undefined);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: web.origin });
    const page = pages[0];
    assert.ok(page !== undefined);
    fromVc = Buffer.alloc(0);
    await page.evaluate('window.chardevTerm.paste("pasted by the page")');
    await eventually(() => fromVc.toString() === 'pasted by the page', `a paste at the guest (got ${JSON.stringify(fromVc.toString())})`);

    await page.evaluate('window.chardevTerm.focus(); window.chardevTerm.selectLines(0, 0)');
    await page.keyboard.press('Control+Shift+C');
    await eventually(
      async () => (await page.evaluate<string>('navigator.clipboard.readText()')).includes('chardev guest on serial0'),
      'the selection in the clipboard',
    );

    fromVc = Buffer.alloc(0);
    await page.evaluate('navigator.clipboard.writeText("from the clipboard")');
    await page.keyboard.press('Control+Shift+V');
    await eventually(() => fromVc.toString() === 'from the clipboard', `the clipboard at the guest (got ${JSON.stringify(fromVc.toString())})`);
  });

  it('the page recovers after the server drops its WebSocket: it reconnects and the history is replayed', T, async () => {
    assert.ok(web !== undefined);
    const page = pages[0];
    assert.ok(page !== undefined);
    await connected(page, 'writer');
    assert.equal(web.dropConnections(), 1);
    await eventually(async () => /reconnecting in \d+s/.test((await status(page)).text), 'the status line to say reconnecting');
    // Written while no tab is attached: only the history can bring it to the page.
    vc.write(Buffer.from('written while the tab was away\r\n$ '));
    await connected(page, 'writer');
    await eventually(async () => (await screen(page)).includes('written while the tab was away'), 'the replayed history on screen');
    const text = await screen(page);
    // Reset before the replay: the old screen is not left above it.
    assert.equal(text.split('Linux guest 6.1.0').length - 1, 1, text);
    fromVc = Buffer.alloc(0);
    await page.locator('#terminal').click();
    await page.keyboard.type('after');
    await eventually(() => fromVc.toString() === 'after', 'keys after the reconnect');
  });

  it('read-only viewers: ?readonly=1 on the vc device and any other device are marked and cannot type', T, async () => {
    assert.ok(web !== undefined);
    const writer = pages[0];
    assert.ok(writer !== undefined);
    const viewer = await newPage(`${web.urlFor('serial0')}&readonly=1`);
    await connected(viewer, 'viewer');
    const st = await status(viewer);
    assert.match(st.text, /read-only viewer/);
    assert.equal(st.readonlyMarked, true);
    assert.equal(st.takeoverShown, false, 'a forced viewer is offered no take-over');
    await eventually(async () => (await screen(viewer)).includes('written while the tab was away'), 'the viewer sees the history');
    vc.write(Buffer.from('output for everyone\r\n'));
    await eventually(async () => (await screen(viewer)).includes('output for everyone'), 'the viewer sees live output');
    await viewer.screenshot({ path: path.join(ARTIFACTS, 'web-console-readonly.png') });

    fromVc = Buffer.alloc(0);
    const droppedBefore = vc.hub.inputDropped;
    await viewer.locator('#terminal').click();
    await viewer.keyboard.type('viewer-keys');
    await viewer.keyboard.press('Enter');
    await writer.locator('#terminal').click();
    await writer.keyboard.type('writer-keys');
    await eventually(() => fromVc.toString().includes('writer-keys'), 'the writer’s keys');
    await sleep(200);
    assert.equal(fromVc.toString(), 'writer-keys', 'only the writer reaches the guest');
    assert.equal(vc.hub.inputDropped, droppedBefore, 'the page did not even send the viewer’s keys');

    // Any other device can be watched, never typed into.
    watched.write(Buffer.from('null device output\r\n'));
    const watcher = await newPage(web.urlFor('serial1'));
    await connected(watcher, 'viewer');
    const ws = await status(watcher);
    assert.match(ws.text, /serial1/);
    assert.equal(ws.readonlyMarked, true);
    assert.equal(ws.takeoverShown, false);
    await eventually(async () => (await screen(watcher)).includes('null device output'), 'the watched device’s history');
    await watcher.locator('#terminal').click();
    await watcher.keyboard.type('nope');
    // Even a client that sends anyway is a viewer on the server side.
    const sock = new WebSocket(`ws://127.0.0.1:${web.port}/ws/serial1?token=${web.token}`, { origin: web.origin });
    const first = await new Promise<string>((resolve, reject) => {
      sock.once('message', (d: Buffer, binary: boolean) => (binary ? reject(new Error('binary before hello')) : resolve(d.toString())));
      sock.once('error', reject);
    });
    assert.deepEqual(JSON.parse(first), {
      type: 'hello',
      version: 1,
      domain: 'webtest',
      device: 'serial1',
      label: 'charserial1',
      deviceType: 'null',
      role: 'viewer',
      readonly: true,
      interactive: false,
    });
    sock.send(Buffer.from('forced-in'));
    await eventually(() => watched.hub.inputDropped >= 'forced-in'.length, 'the server to drop a viewer’s input');
    sock.close();
    assert.equal(fromWatched.length, 0, 'nothing reached the watched device’s guest');

    // A second interactive tab is a viewer that may take over; taking over demotes the first.
    await viewer.close();
    await watcher.close();
    const second = await newPage(web.urlFor('serial0'));
    await connected(second, 'viewer');
    assert.equal((await status(second)).takeoverShown, true);
    await second.locator('#st-takeover').click();
    await connected(second, 'writer');
    await connected(writer, 'viewer');
    assert.equal((await status(writer)).readonlyMarked, true);
    await second.close();
    await connected(writer, 'writer');
  });

  it('a wrong or missing token gets 401 (page, static files, WebSocket); a foreign Origin is refused', T, async () => {
    assert.ok(web !== undefined);
    const base = `http://127.0.0.1:${web.port}`;
    const wsUrl = `ws://127.0.0.1:${web.port}/ws/serial0`;
    for (const p of ['/', '/?token=wrong', '/console/serial0', `/console/serial0?token=${web.token}x`, '/static/xterm.mjs', '/ws/serial0']) {
      assert.equal((await fetch(base + p)).status, 401, p);
    }
    assert.equal(await handshake(`${wsUrl}?token=wrong`, web.origin), 401);
    assert.equal(await handshake(wsUrl, web.origin), 401);
    assert.equal(await handshake(`${wsUrl}?token=${web.token}`, 'http://evil.example'), 403);
    assert.equal(await handshake(`${wsUrl}?token=${web.token}`, `http://127.0.0.1:${web.port + 1}`), 403);
    assert.equal(await handshake(`${wsUrl}?token=${web.token}`, undefined), 403);
    assert.equal(await handshake(`${wsUrl}?token=${web.token}`, web.origin), 'open');
    assert.equal(await handshake(`ws://127.0.0.1:${web.port}/ws/nope?token=${web.token}`, web.origin), 404);

    // In the browser (a fresh profile: no cookie from the pages above): a wrong token is a 401 page.
    assert.ok(browser !== undefined);
    const fresh = await browser.newContext();
    const page = await fresh.newPage();
    assert.equal((await page.goto(`${base}/console/serial0?token=wrong`))?.status(), 401);

    // A page of another origin, even knowing the token, cannot open the console's WebSocket.
    const other = http.createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end('<!doctype html><title>elsewhere</title>');
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    try {
      const clientsBefore = vc.hub.size;
      await page.goto(`http://127.0.0.1:${(other.address() as AddressInfo).port}/`);
      const outcome = await page.evaluate<string>(`new Promise((resolve) => {
        const ws = new WebSocket(${JSON.stringify(`${wsUrl}?token=${web.token}`)});
        ws.onopen = () => resolve('open');
        ws.onclose = (e) => resolve('closed ' + e.code);
        setTimeout(() => resolve('timeout'), 4000);
      })`);
      assert.equal(outcome, 'closed 1006');
      assert.equal(vc.hub.size, clientsBefore);
    } finally {
      await fresh.close();
      other.closeAllConnections();
      await new Promise<void>((resolve) => other.close(() => resolve()));
    }
  });

  it('only the whitelisted static files are served, with their content types', T, async () => {
    assert.ok(web !== undefined);
    const base = `http://127.0.0.1:${web.port}`;
    const auth = `token=${web.token}`;
    const types: Array<[string, RegExp]> = [
      ['/static/xterm.mjs', /^text\/javascript/],
      ['/static/addon-fit.mjs', /^text\/javascript/],
      ['/static/console.js', /^text\/javascript/],
      ['/static/xterm.css', /^text\/css/],
      ['/static/console.css', /^text\/css/],
      ['/console/serial0', /^text\/html/],
      ['/', /^text\/html/],
    ];
    for (const [p, type] of types) {
      const res = await fetch(`${base}${p}?${auth}`);
      assert.equal(res.status, 200, p);
      assert.match(res.headers.get('content-type') ?? '', type, p);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      await res.arrayBuffer();
    }
    // The page load sets a cookie that stands for the token (the page's own requests use it).
    const page = await fetch(`${base}/console/serial0?${auth}`);
    const cookie = (page.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
    assert.match(page.headers.get('set-cookie') ?? '', /HttpOnly; SameSite=Strict/);
    assert.equal(await rawGet(web.port, '/static/xterm.css', { cookie }), 200);
    assert.equal(await rawGet(web.port, '/static/xterm.css', { cookie: `${cookie}x` }), 401);
    // Anything else is 404, however it is spelled.
    for (const p of [
      '/static/package.json',
      '/static/xterm.js',
      '/static/../package.json',
      '/static/..%2fpackage.json',
      '/static/%2e%2e/%2e%2e/package.json',
      '/static/..%2F..%2Fpackage.json',
      '/static//etc/passwd',
      '/static/',
      '/node_modules/@xterm/xterm/package.json',
      '/src/web/server.ts',
      '/console/nope',
      '/console/serial0/../../package.json',
    ]) {
      const code = await rawGet(web.port, `${p}${p.includes('?') ? '&' : '?'}${auth}`);
      assert.ok(code === 404 || code === 403 || code === 400, `${p}: ${code}`);
    }
    assert.equal((await fetch(`${base}/?${auth}`, { method: 'POST' })).status, 405);
  });

  it('misbehaving clients (bad handshakes, oversized or invalid frames, garbage) are dropped; the server keeps serving', T, async () => {
    assert.ok(web !== undefined);
    const w = web;
    const clientsBefore = vc.hub.size;
    fromVc = Buffer.alloc(0);
    const raw = (text: string | Buffer): Promise<string> =>
      new Promise((resolve) => {
        const sock = net.connect(w.port, '127.0.0.1', () => sock.write(text));
        let got = '';
        sock.on('data', (b: Buffer) => (got += b.toString('latin1')));
        sock.on('error', () => {});
        sock.on('close', () => resolve(got));
        sock.setTimeout(3000, () => sock.destroy());
      });
    const upgrade = `GET /ws/serial0?token=${w.token} HTTP/1.1\r\nHost: 127.0.0.1:${w.port}\r\nOrigin: ${w.origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n`;
    assert.match(await raw(`${upgrade}Sec-WebSocket-Key: short\r\n\r\n`), /^HTTP\/1\.1 400/);
    // A good handshake, then bytes that are no WebSocket frames (unmasked, reserved bits).
    const garbage = await raw(
      Buffer.concat([Buffer.from(`${upgrade}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 0x02])]),
    );
    assert.match(garbage, /^HTTP\/1\.1 101/);
    assert.match(await raw('NOT HTTP AT ALL\r\n\r\n'), /^(HTTP\/1\.1 400|)/);

    const closedWith = (send: (ws: WebSocket) => void): Promise<number> =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${w.port}/ws/serial0?token=${w.token}`, { origin: w.origin });
        const timer = setTimeout(() => reject(new Error('the server did not close the connection')), 5000);
        ws.on('open', () => send(ws));
        ws.on('error', () => {});
        ws.on('close', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
    assert.equal(await closedWith((ws) => ws.send(Buffer.alloc(2 * 1024 * 1024, 0x61))), 1009, 'a frame over the limit');
    assert.equal(await closedWith((ws) => ws.send(Buffer.from([0xc3, 0x28]), { binary: false })), 1007, 'a text frame that is not UTF-8');

    await eventually(() => vc.hub.size === clientsBefore, 'every misbehaving client to be gone');
    assert.equal(fromVc.length, 0, 'nothing reached the guest');
    const res = await fetch(w.urlFor('serial0'));
    assert.equal(res.status, 200, 'still serving');
    await res.arrayBuffer();
  });

  it('chardev run (the default domain): prints the URL; the page shows the guest and types into it', { timeout: 30000 }, async () => {
    assert.ok(context !== undefined);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-web-run-'));
    const runDir = path.join(tmp, 'run');
    fs.mkdirSync(runDir, { mode: 0o700 });
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        CLI,
        'run',
        '--run-dir',
        runDir,
        '--log-dir',
        path.join(tmp, 'logs'),
        '--tty',
        '--',
        'sh',
        '-c',
        'echo from-the-guest; read l; echo "got:$l"',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    try {
      await eventually(() => /guest is/.test(stdout), `chardev run to start (${stderr})`, 15000);
      // stdout is a pipe here, not a terminal: the URLs are printed without the token, which
      // is in the owner-only status file (and `chardev status`), never in a log.
      const page0 = /^web console: (http:\/\/127\.0\.0\.1:\d+\/console\/serial3) \(charserial3; token: chardev status chardev\)$/m.exec(stdout)?.[1];
      const index0 = /^web console: (http:\/\/127\.0\.0\.1:\d+\/) \(every device; others read-only; token: chardev status chardev\)$/m.exec(stdout)?.[1];
      assert.ok(page0 !== undefined && index0 !== undefined, stdout);
      assert.doesNotMatch(stdout, /token=/);
      const st = JSON.parse(fs.readFileSync(path.join(runDir, 'chardev.json'), 'utf8')) as { webUrl?: string };
      const token = /\?token=([\w-]+)$/.exec(st.webUrl ?? '')?.[1];
      assert.ok(token !== undefined, `the status file has the URL with its token: ${String(st.webUrl)}`);
      const index = `${index0}?token=${token}`;
      const url = `${page0}?token=${token}`;
      assert.equal(st.webUrl, index, 'the status file has the URL');
      const page = await context.newPage();
      pages.push(page);
      assert.equal((await page.goto(url))?.status(), 200);
      await connected(page, 'writer');
      await eventually(async () => (await screen(page)).includes('from-the-guest'), 'the guest’s output in the page');
      assert.match((await status(page)).text, /chardev.*serial3/);
      const cliStatus = await new Promise<string>((resolve, reject) => {
        const st2 = spawn(process.execPath, ['--import', 'tsx', CLI, 'status', '--run-dir', runDir, 'chardev'], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        st2.stdout.on('data', (b: Buffer) => (out += b.toString()));
        const timer = setTimeout(() => st2.kill('SIGKILL'), 10000);
        st2.on('error', reject);
        st2.on('close', () => {
          clearTimeout(timer);
          resolve(out);
        });
      });
      assert.ok(cliStatus.includes(`web console: ${index}\n`), cliStatus);
      assert.match(cliStatus, /^serial3\s+vc\s+\d+\s+\d+\s+\d+\s+writer browser 127\.0\.0\.1:\d+\s+vc$/m);
      await page.locator('#terminal').click();
      await page.keyboard.type('ping');
      await page.keyboard.press('Enter');
      await eventually(async () => (await screen(page)).includes('got:ping'), 'the guest’s answer in the page', 10000);
      assert.equal(await Promise.race([exited, sleep(10000).then(() => 'timeout')]), 0, stderr);
      // The device stopped and the server closed: the page says so and keeps trying.
      await eventually(async () => (await status(page)).state !== 'connected', 'the page to notice the end');
      await page.close();
    } finally {
      child.kill('SIGKILL');
      await exited;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('close(): open tabs are told and the server stops promptly', T, async () => {
    assert.ok(web !== undefined && domain !== undefined);
    const page = pages[0];
    assert.ok(page !== undefined);
    await connected(page, 'writer');
    await domain.stop();
    await eventually(async () => /the device was stopped/.test((await status(page)).text), 'the stop notice on the page');
    const t0 = Date.now();
    await web.close();
    assert.ok(Date.now() - t0 < 2000, 'closed within the grace period');
    assert.equal((await fetch(`${web.url}`).catch(() => undefined))?.status, undefined, 'nothing listens any more');
  });
});

describe('chardev run: where the web console listens', () => {
  it('--web HOST:PORT parsing', () => {
    assert.deepEqual(parseWebAddress('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseWebAddress('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseWebAddress('localhost:1'), { host: 'localhost', port: 1 });
    assert.deepEqual(parseWebAddress('9000'), { host: '127.0.0.1', port: 9000 });
    for (const bad of ['', '127.0.0.1', '127.0.0.1:', '127.0.0.1:65536', 'a b:1', '::1:80', 'http://x:1']) {
      assert.throws(() => parseWebAddress(bad), /--web must be HOST:PORT/, bad);
    }
  });

  it('<cd:web> in a vc device sets the address; --web serves a domain without one (index only)', { timeout: 30000 }, async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-web-addr-'));
    try {
      const runDir = path.join(tmp, 'run');
      fs.mkdirSync(runDir, { mode: 0o700 });
      const probe = http.createServer();
      await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
      const port = (probe.address() as AddressInfo).port;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      const withVc = path.join(tmp, 'vc.xml');
      fs.writeFileSync(
        withVc,
        `<domain type='kvm' xmlns:cd='urn:chardev:1'><name>webaddr</name><os><type arch='x86_64'>hvm</type></os><devices>
        <serial type='null'><target port='0'/></serial>
        <serial type='vc'><target port='1'/><cd:web listen='127.0.0.1' port='${port}'/></serial>
      </devices></domain>`,
      );
      const noVc = path.join(tmp, 'novc.xml');
      fs.writeFileSync(noVc, `<domain type='kvm'><name>webnovc</name><os><type arch='x86_64'>hvm</type></os><devices><serial type='null'/></devices></domain>`);
      // One run directory each: two runs of one domain at once would collide.
      const cli = (name: string, args: string[]) => {
        const dir = path.join(runDir, name);
        fs.mkdirSync(dir, { mode: 0o700 });
        return run(process.execPath, ['--import', 'tsx', CLI, 'run', '--run-dir', dir, '--log-dir', path.join(tmp, 'logs'), ...args], 20000);
      };
      const [a, b, c, bad] = await Promise.all([
        cli('a', [withVc, '--', 'true']),
        cli('b', ['--web', '127.0.0.1:0', noVc, '--', 'true']),
        cli('c', [noVc, '--', 'true']),
        cli('d', ['--web', 'nope', noVc, '--', 'true']),
      ]);
      assert.equal(a.code, 0, a.stderr);
      assert.match(
        a.stdout.toString(),
        new RegExp(`^web console: http://127\\.0\\.0\\.1:${port}/console/serial1 \\(charserial1; token: chardev status webaddr\\)$`, 'm'),
      );
      assert.equal(b.code, 0, b.stderr);
      assert.deepEqual(
        b.stdout
          .toString()
          .match(/^web console: .*$/gm)
          ?.map((l) => l.replace(/:\d+\//, ':PORT/')),
        ['web console: http://127.0.0.1:PORT/ (every device; others read-only; token: chardev status webnovc)'],
      );
      assert.equal(c.code, 0, c.stderr);
      assert.doesNotMatch(c.stdout.toString(), /web console/, 'no vc device, no --web: no server');
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--web must be HOST:PORT/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
