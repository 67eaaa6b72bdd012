/**
 * The console window in Chromium (playwright-core): one window per domain, a tab per device,
 * Ctrl+Alt+1…9 to switch, BREAK and the terminal's size as control messages, the token out
 * of the address bar, copy on select; and `chardev run --tty`, whose guest's `stty size`
 * follows the window. What the guest gets is read on the guest side of each device.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import WebSocket from 'ws';
import { open } from '../../src/index.ts';
import type { Chardev } from '../../src/core/chardev.ts';
import type { Domain } from '../../src/core/domain.ts';
import { startWebServer, type WebServer } from '../../src/web/server.ts';
import { eventually } from '../platform/helpers.ts';
import { ROOT } from '../helpers/paths.ts';
import { launchChromium, screen } from '../helpers/chromium.ts';

const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const CLI = path.join(ROOT, 'src', 'cli', 'main.ts');
const T = { timeout: 30000 };

const XML = `<domain type='kvm' xmlns:cd='urn:chardev:1'>
  <name>wintest</name>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='vc'><target port='0'/><cd:history size='65536'/></serial>
    <serial type='vc'><target port='1'/><cd:history size='65536'/></serial>
    <serial type='null'><target port='2'/><cd:history size='65536'/></serial>
  </devices>
</domain>
`;

interface Shown {
  alias: string;
  role: string;
  state: string;
  selected: string[];
  title: string;
  breakShown: boolean;
}
function shown(page: Page): Promise<Shown> {
  return page.evaluate<Shown>(`(() => ({
    alias: window.chardevConsole?.alias ?? '',
    role: window.chardevConsole?.role ?? '',
    state: document.getElementById('status').dataset.state,
    selected: [...document.querySelectorAll('#tabs .tab[aria-selected="true"]')].map((b) => b.dataset.alias),
    title: document.title,
    breakShown: !document.getElementById('st-break').hidden,
  }))()`);
}

async function showing(page: Page, alias: string, role: 'writer' | 'viewer'): Promise<void> {
  await eventually(async () => {
    const s = await shown(page);
    return s.alias === alias && s.role === role && s.state === 'connected';
  }, `the window to show ${alias} as ${role}`);
}

describe('the console window (chromium)', () => {
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let domain: Domain | undefined;
  let web: WebServer | undefined;
  const got = new Map<string, string>();
  const breaks = new Map<string, number>();
  const sizes = new Map<string, string[]>();
  let page: Page;

  before(async () => {
    domain = await open(XML, { load: { file: 'window.xml' } });
    for (const d of domain.devices.values()) {
      const dev: Chardev = d;
      got.set(dev.alias, '');
      breaks.set(dev.alias, 0);
      sizes.set(dev.alias, []);
      dev.on('data', (b) => got.set(dev.alias, (got.get(dev.alias) ?? '') + b.toString('latin1')));
      dev.on('break', () => breaks.set(dev.alias, (breaks.get(dev.alias) ?? 0) + 1));
      dev.on('resize', (s) => sizes.get(dev.alias)?.push(`${s.cols}x${s.rows}`));
    }
    domain.device('serial0').write(Buffer.from('this is serial0\r\n'));
    domain.device('serial1').write(Buffer.from('this is serial1\r\n'));
    domain.device('serial2').write(Buffer.from('this is serial2, read-only\r\n'));
    web = await startWebServer(domain, {});
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1000, height: 560 } });
    context.setDefaultTimeout(5000);
    page = await context.newPage();
  });

  after(async () => {
    try {
      await context?.close();
      await browser?.close();
    } finally {
      await web?.close();
      await domain?.stop();
    }
  });

  it(
    'the window: a tab per device in order, the first vc shown, the token gone from the address bar, the title names domain and device; screenshot',
    T,
    async () => {
      assert.ok(web !== undefined);
      assert.equal((await page.goto(web.url))?.status(), 200);
      await showing(page, 'serial0', 'writer');
      const tabs = await page.evaluate<string[]>(`[...document.querySelectorAll('#tabs .tab')].map((b) => b.innerText.replace(/\\s+/g, ' ').trim())`);
      assert.deepEqual(tabs, ['1 serial0 vc', '2 serial1 vc', '3 serial2 null']);
      assert.doesNotMatch(page.url(), /token/, 'the token left the address bar');
      assert.equal((await shown(page)).title, 'serial0 · wintest — chardev');
      await eventually(async () => (await screen(page)).includes('this is serial0'), 'serial0’s history');
      // The writer's size is the device's as soon as the tab connects.
      let size = '';
      await eventually(
        async () => {
          size = (await page.evaluate<number[]>('[window.chardevTerm.cols, window.chardevTerm.rows]')).join('x');
          return sizes.get('serial0')?.at(-1) === size;
        },
        `serial0 to get the tab's size ${size} (${sizes.get('serial0')?.join(',')})`,
      );
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      const shot = path.join(ARTIFACTS, 'web-window.png');
      await page.screenshot({ path: shot });
      assert.ok(fs.statSync(shot).size > 1000);
    },
  );

  it('Ctrl+Alt+N switches tabs before the guest sees the keys; input goes to the shown device only; each tab keeps its own screen', T, async () => {
    await page.locator('#terminal').click();
    await page.keyboard.type('to-zero');
    await eventually(() => got.get('serial0') === 'to-zero', `serial0's input (${JSON.stringify(got.get('serial0'))})`);
    await page.keyboard.press('Control+Alt+2');
    await showing(page, 'serial1', 'writer');
    assert.deepEqual((await shown(page)).selected, ['serial1']);
    assert.equal((await shown(page)).title, 'serial1 · wintest — chardev');
    await eventually(async () => (await screen(page)).includes('this is serial1'), 'serial1’s history in its own tab');
    assert.doesNotMatch(await screen(page), /serial0/);
    await page.keyboard.type('to-one');
    await eventually(() => got.get('serial1') === 'to-one', `serial1's input (${JSON.stringify(got.get('serial1'))})`);
    domain?.device('serial0').write(Buffer.from('while hidden\r\n'));
    await page.keyboard.press('Control+Alt+1');
    await showing(page, 'serial0', 'writer');
    await eventually(async () => (await screen(page)).includes('while hidden'), 'output that came while the tab was hidden');
    assert.match(await screen(page), /this is serial0/);
    await page.keyboard.press('Control+Alt+3');
    await showing(page, 'serial2', 'viewer');
    await page.keyboard.type('nope');
    await page.keyboard.press('Control+Alt+1');
    await showing(page, 'serial0', 'writer');
    await page.keyboard.type('!');
    await eventually(() => got.get('serial0') === 'to-zero!', `serial0's input (${JSON.stringify(got.get('serial0'))})`);
    // No hotkey (nor the viewer's typing) reached any guest.
    assert.equal(got.get('serial1'), 'to-one');
    assert.equal(got.get('serial2'), '');
    // A hotkey past the last tab does nothing.
    await page.keyboard.press('Control+Alt+9');
    assert.equal((await shown(page)).alias, 'serial0');
  });

  it('Send BREAK (button and Ctrl+Alt+B) reaches the shown device as a break event; not from a read-only tab', T, async () => {
    assert.ok((await shown(page)).breakShown, 'the writer has the button');
    await page.locator('#st-break').click();
    await eventually(() => breaks.get('serial0') === 1, 'a break at serial0');
    await page.keyboard.press('Control+Alt+B');
    await eventually(() => breaks.get('serial0') === 2, 'a second break at serial0');
    await page.keyboard.press('Control+Alt+3');
    await showing(page, 'serial2', 'viewer');
    assert.equal((await shown(page)).breakShown, false, 'no button on a read-only tab');
    await page.keyboard.press('Control+Alt+B');
    await page.keyboard.press('Control+Alt+1');
    await showing(page, 'serial0', 'writer');
    assert.deepEqual([breaks.get('serial0'), breaks.get('serial1'), breaks.get('serial2')], [2, 0, 0]);
    assert.equal(got.get('serial0'), 'to-zero!', 'a BREAK is no input byte');
  });

  it('the window’s size is the writer’s device’s size; copy on select puts a selection in the clipboard', T, async () => {
    assert.ok(web !== undefined && context !== undefined);
    await page.setViewportSize({ width: 640, height: 400 });
    // The terminal refits when the layout has settled (a ResizeObserver): one resize, both numbers.
    await eventually(async () => (await page.evaluate<number>('window.chardevTerm.cols')) < 80, 'a 640 px window to fit fewer than 80 columns');
    const [cols, rows] = await page.evaluate<[number, number]>('[window.chardevTerm.cols, window.chardevTerm.rows]');
    await eventually(
      () => sizes.get('serial0')?.at(-1) === `${cols}x${rows}`,
      `serial0 to follow the window to ${cols}x${rows} (${sizes.get('serial0')?.join(',')})`,
    );
    await page.setViewportSize({ width: 1000, height: 560 });

    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: web.origin });
    await page.locator('#opt-copy-select').check();
    await page.evaluate('window.chardevTerm.selectLines(0, 0)');
    await eventually(async () => (await page.evaluate<string>('navigator.clipboard.readText()')).includes('this is serial0'), 'the selection in the clipboard');
    await page.locator('#opt-copy-select').uncheck();
  });

  it('the wire for other clients: binary is input, text is JSON control (counters, resize, break, take, errors); /devices; /domain/NAME/', T, async () => {
    assert.ok(web !== undefined);
    const w = web;
    const res = await fetch(`http://127.0.0.1:${w.port}/devices?token=${w.token}`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      version: 1,
      domain: 'wintest',
      devices: [
        { alias: 'serial0', id: 'charserial0', type: 'vc', interactive: true, clients: 1 },
        { alias: 'serial1', id: 'charserial1', type: 'vc', interactive: true, clients: 1 },
        { alias: 'serial2', id: 'charserial2', type: 'null', interactive: false, clients: 1 },
      ],
    });
    for (const [p, status] of [
      ['/domain/wintest/', 200],
      ['/domain/wintest/console/serial1', 200],
      ['/domain/wintest/devices', 200],
      ['/domain/nope/', 404],
      ['/domain/wintest/console/nope', 404],
    ] as const) {
      const r = await fetch(`http://127.0.0.1:${w.port}${p}?token=${w.token}`);
      assert.equal(r.status, status, p);
      await r.arrayBuffer();
    }

    // A client of its own on serial1, under the domain's prefix: a viewer (the page is the writer).
    const ws = new WebSocket(`ws://127.0.0.1:${w.port}/domain/wintest/ws/serial1?token=${w.token}`, { origin: w.origin });
    const texts: Array<Record<string, unknown>> = [];
    ws.on('message', (d: Buffer, binary: boolean) => {
      if (!binary) texts.push(JSON.parse(d.toString()) as Record<string, unknown>);
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const reply = async (type: string): Promise<Record<string, unknown>> => {
      let found: Record<string, unknown> | undefined;
      await eventually(() => (found = texts.find((m) => m['type'] === type)) !== undefined, `a ${type} message`);
      texts.splice(texts.indexOf(found as Record<string, unknown>), 1);
      return found as Record<string, unknown>;
    };
    assert.equal((await reply('hello'))['role'], 'viewer');
    ws.send('typed as text');
    assert.match(String((await reply('error'))['text']), /guest input goes in binary frames/);
    ws.send(JSON.stringify({ type: 'resize', cols: 0, rows: 24 }));
    assert.match(String((await reply('error'))['text']), /resize needs whole cols and rows/);
    ws.send(JSON.stringify({ type: 'break' }));
    assert.equal((await reply('error'))['text'], 'a BREAK needs the writer role');
    ws.send(JSON.stringify({ type: 'counters' }));
    const k = await reply('counters');
    assert.equal(k['clients'], 2);
    assert.equal(k['bytesToGuest'], 'to-one'.length);
    assert.match(String(k['writer']), /^browser 127\.0\.0\.1:\d+$/);
    const sizesBefore = sizes.get('serial1')?.length;
    ws.send(JSON.stringify({ type: 'resize', cols: 33, rows: 11 }));
    // Take over: the viewer's size becomes the device's, its bytes and BREAKs reach the guest.
    ws.send(JSON.stringify({ type: 'take' }));
    assert.equal((await reply('role'))['role'], 'writer');
    await eventually(() => sizes.get('serial1')?.at(-1) === '33x11', `the new writer's size (${sizes.get('serial1')?.join(',')})`);
    assert.equal(sizes.get('serial1')?.length, (sizesBefore ?? 0) + 1, 'a viewer’s size is not the guest’s');
    ws.send(Buffer.from('+binary'));
    ws.send(JSON.stringify({ type: 'break' }));
    await eventually(() => got.get('serial1') === 'to-one+binary' && breaks.get('serial1') === 1, 'the new writer’s input and BREAK');
    ws.close();
    // The page was told, and has its writer role back when the other client leaves.
    await page.keyboard.press('Control+Alt+2');
    await showing(page, 'serial1', 'writer');
  });

  it('several domains (WebDomains): / lists them, each at /domain/NAME/ (its window works there), nothing at the bare paths', T, async () => {
    assert.ok(domain !== undefined && context !== undefined);
    const d = domain;
    const multi = await startWebServer({ get: (n) => (n === d.name ? d : undefined), list: () => [d] }, {});
    const other = await context.newPage();
    try {
      const get = async (p: string): Promise<[number, string]> => {
        const r = await fetch(`http://127.0.0.1:${multi.port}${p}${p.includes('?') ? '&' : '?'}token=${multi.token}`, { redirect: 'manual' });
        return [r.status, r.status === 301 ? (r.headers.get('location') ?? '') : await r.text()];
      };
      const [status, list] = await get('/');
      assert.equal(status, 200);
      assert.match(list, /<a href="\/domain\/wintest\/">wintest<\/a> \(3 devices\)/);
      assert.deepEqual(await get('/domain/wintest'), [301, `/domain/wintest/?token=${multi.token}`]);
      assert.equal((await get('/console/serial0'))[0], 404);
      assert.equal((await get('/devices'))[0], 404);
      assert.match(multi.urlFor('serial2', 'wintest'), /\/domain\/wintest\/console\/serial2\?token=/);
      assert.equal((await other.goto(`${multi.url.replace('/?', '/domain/wintest/?')}#serial2`))?.status(), 200);
      await showing(other, 'serial2', 'viewer');
      await eventually(async () => (await screen(other)).includes('this is serial2'), 'serial2 under /domain/wintest/');
    } finally {
      await other.close();
      await multi.close();
    }
  });

  it('a reload (the token no longer in the address) keeps the session, by the cookie, and the tab shown', T, async () => {
    assert.match(page.url(), /#serial1$/);
    assert.equal((await page.reload())?.status(), 200);
    await showing(page, 'serial1', 'writer');
    await eventually(async () => (await screen(page)).includes('this is serial1'), 'serial1’s history after the reload');
  });

  it('chardev run --tty: `stty size` in the guest follows the window', { timeout: 40000 }, async () => {
    assert.ok(context !== undefined);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-web-tty-'));
    const runDir = path.join(tmp, 'run');
    fs.mkdirSync(runDir, { mode: 0o700 });
    const guest = 'echo tty-ready; while read l; do echo "size:$(stty size)"; done';
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', CLI, 'run', '--run-dir', runDir, '--log-dir', path.join(tmp, 'logs'), '--tty', '--', 'sh', '-c', guest],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const tty = await context.newPage();
    try {
      await eventually(
        () => fs.existsSync(path.join(runDir, 'chardev.json')) && /token=/.test(fs.readFileSync(path.join(runDir, 'chardev.json'), 'utf8')),
        `chardev run to start (${stderr})`,
        20000,
      );
      const st = JSON.parse(fs.readFileSync(path.join(runDir, 'chardev.json'), 'utf8')) as { webUrl: string };
      await tty.setViewportSize({ width: 900, height: 500 });
      assert.equal((await tty.goto(st.webUrl))?.status(), 200);
      // The default domain's vc device is the first interactive tab: the guest's terminal.
      await showing(tty, 'serial3', 'writer');
      await eventually(async () => (await screen(tty)).includes('tty-ready'), 'the guest on screen', 10000);
      const asked = async (): Promise<string> => {
        const [cols, rows] = await tty.evaluate<[number, number]>('[window.chardevTerm.cols, window.chardevTerm.rows]');
        return `size:${rows} ${cols}`;
      };
      const wide = await asked();
      await tty.keyboard.press('Enter');
      await eventually(async () => (await screen(tty)).includes(wide), `the guest's stty size to be the window's (${wide})`, 10000);
      await tty.setViewportSize({ width: 500, height: 300 });
      let narrow = wide;
      await eventually(async () => (narrow = await asked()) !== wide, 'the terminal to refit the smaller window');
      await eventually(
        async () => {
          await tty.keyboard.press('Enter');
          return (await screen(tty)).includes(narrow);
        },
        `the guest's stty size to follow the window (${narrow})`,
        10000,
      );
      await tty.screenshot({ path: path.join(ARTIFACTS, 'web-window-tty.png') });
    } finally {
      await tty.close();
      child.kill('SIGTERM');
      await exited;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
