/**
 * `chardev daemon`'s one browser console for all its domains, in Chromium: three domains
 * with stand-in guests (test/helpers/standin-qemu.ts), `/` lists them, a device page under
 * `/domain/NAME/` shows that guest's output and what is typed there reaches that guest
 * only; no token is refused (page and WebSocket); the token is kept owner-only in
 * RUNDIR/daemon/web.json; `chardev status` and `chardev list` show each domain's URL; a
 * daemon restart brings the server back on the same port with the same token, and the open
 * tab reconnects by itself.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import WebSocket from 'ws';
import { QmpClient } from '../../src/control/qmp-client.ts';
import { Daemon, BIN } from '../cli/daemon.ts';
import { q } from '../core/helpers.ts';
import { eventually } from '../platform/helpers.ts';
import { launchChromium, screen } from '../helpers/chromium.ts';
import { Proc } from '../helpers/proc.ts';
import { STANDIN_QEMU, StandinHub, type StandinGuest } from '../helpers/standin-qemu.ts';

function shownAs(page: Page): Promise<string> {
  return page.evaluate<string>(
    `(() => (window.chardevConsole?.alias ?? '') + ' ' + (window.chardevConsole?.role ?? '') + ' ' + document.getElementById('status').dataset.state)()`,
  );
}

interface Status {
  readonly webUrl?: string;
  readonly qemuPid: number;
}

describe('chardev daemon: one browser console for every domain (chromium)', () => {
  let dir = '';
  let hub: StandinHub;
  let daemon: Daemon | undefined;
  let browser: Browser | undefined;
  const runDir = (): string => path.join(dir, 'run');
  const startDaemon = (extra: readonly string[] = []): Daemon =>
    new Daemon(['daemon', '--run-dir', runDir(), '--log-dir', path.join(dir, 'logs'), '--verbose', ...extra], { ...process.env, ...hub.env });
  const cliOut = async (args: readonly string[]): Promise<string> => {
    const p = new Proc(`chardev ${args[0] ?? ''}`, process.execPath, [BIN, ...args, '--run-dir', runDir()]);
    assert.equal(await p.waitExit(20000), true, `${args.join(' ')} exits`);
    assert.equal(p.exitCode, 0, `${args.join(' ')}: ${p.stderr}`);
    return p.text;
  };
  const status = (name: string): Status => JSON.parse(fs.readFileSync(path.join(runDir(), `${name}.json`), 'utf8')) as Status;
  const guestOf = (name: string): StandinGuest => {
    const pid = status(name).qemuPid;
    const g = hub.guests.find((x) => x.pid === pid);
    assert.ok(g !== undefined, `the stand-in of ${name} (pid ${pid})`);
    return g;
  };

  /** vm1 and vm2 have a vc device (interactive in the browser); vm0 only a file, watched read-only. */
  const xml = (name: string, vc: boolean): string => `<domain type='kvm' xmlns:cd='urn:chardev:1'><name>${name}</name><devices>
      ${vc ? "<serial type='vc'><cd:history size='65536'/></serial>" : `<serial type='file'><source path='${q(path.join(dir, `${name}.out`))}'/></serial>`}
    </devices></domain>`;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-daemon-web-'));
    hub = await StandinHub.start(dir);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await daemon?.kill();
    hub.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves every domain at /domain/NAME/ with one token; input reaches the right guest; survives a restart', { timeout: 28000 }, async () => {
    assert.ok(browser !== undefined);
    daemon = startDaemon(['--web', '127.0.0.1:0']);
    // Started with the daemon (--web), before any domain: the token is not printed to a pipe.
    const [, port] = await daemon.match(
      /^daemon: browser console http:\/\/127\.0\.0\.1:(\d+)\/ \(token: (\S+)\): every domain at \/domain\/NAME\/$/m,
      'the browser console',
    );
    assert.doesNotMatch(daemon.stdout, /token=/);
    const webJson = path.join(runDir(), 'daemon', 'web.json');
    assert.equal(fs.statSync(webJson).mode & 0o777, 0o600, 'web.json is owner-only');
    const saved = JSON.parse(fs.readFileSync(webJson, 'utf8')) as { port: number; token: string };
    assert.equal(String(saved.port), port);
    const base = `http://127.0.0.1:${port}`;

    const qmp = await QmpClient.connect(path.join(runDir(), 'daemon', 'control.qmp'));
    try {
      for (const [name, vc] of [
        ['vm0', false],
        ['vm1', true],
        ['vm2', true],
      ] as const) {
        await qmp.execute('x-domain-start', { xml: xml(name, vc), qemu: { argv: [STANDIN_QEMU] } }, 20000);
      }
    } finally {
      await qmp.close();
    }
    // Every domain's status points at its page on the one server; no domain listens on a port of its own.
    for (const name of ['vm0', 'vm1', 'vm2']) assert.equal(status(name).webUrl, `${base}/domain/${name}/?token=${saved.token}`);
    assert.match(await cliOut(['status', 'vm1']), new RegExp(`^web console: ${base}/domain/vm1/\\?token=${saved.token}$`, 'm'));
    assert.match(await cliOut(['list']), new RegExp(`^\\d+\\s+vm2\\s+running\\s+\\S+\\s+${base}/domain/vm2/\\?token=${saved.token}$`, 'm'));

    // No token: refused, the page and the WebSocket alike.
    assert.equal((await fetch(`${base}/`)).status, 401);
    assert.equal((await fetch(`${base}/domain/vm1/`)).status, 401);
    assert.equal((await fetch(`${base}/domain/vm1/?token=${'x'.repeat(saved.token.length)}`)).status, 401);
    const refused = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/domain/vm1/ws/serial0`, { origin: base });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => {});
    });
    assert.equal(refused, 401);

    const context = await browser.newContext({ viewport: { width: 900, height: 500 } });
    try {
      const page = await context.newPage();
      // `/` lists the daemon's domains.
      assert.equal((await page.goto(`${base}/?token=${saved.token}`))?.status(), 200);
      assert.deepEqual(await page.locator('li a').allTextContents(), ['vm0', 'vm1', 'vm2']);
      assert.equal(await page.locator('li a', { hasText: 'vm1' }).getAttribute('href'), '/domain/vm1/');

      // vm1's vc device: the guest's output on screen, typing reaches vm1's guest and no other.
      const vm1 = guestOf('vm1').port('charserial0');
      const vm2 = guestOf('vm2').port('charserial0');
      await vm1.write('hello from vm1\r\n');
      await vm2.write('hello from vm2\r\n');
      assert.equal((await page.goto(`${base}/domain/vm1/console/serial0`))?.status(), 200, 'the cookie from / lets the device page through');
      await eventually(async () => (await shownAs(page)) === 'serial0 writer connected', 'vm1 serial0 as writer', 10000);
      await eventually(async () => (await screen(page)).includes('hello from vm1'), "vm1's output on screen", 5000);
      assert.doesNotMatch(await screen(page), /vm2/);
      await page.keyboard.type('to-vm1');
      await eventually(() => vm1.receivedText() === 'to-vm1', `vm1's guest to get the keys (${JSON.stringify(vm1.receivedText())})`);
      assert.equal(vm2.receivedText(), '', "vm2's guest got nothing");

      // A restart (no --web now): the server comes back, same port and token, the tab reconnects.
      daemon.child.kill('SIGTERM');
      assert.equal(await daemon.exitWithin(15000), 0);
      daemon = startDaemon();
      await daemon.match(/^daemon: took back 3 domains: vm0, vm1, vm2$/m, 'the domains taken back');
      assert.match(daemon.stdout, new RegExp(`^daemon: browser console ${base}/ \\(token: `, 'm'));
      assert.equal(daemon.stdout.match(/^daemon: browser console /gm)?.length, 1, 'said once, though two domains asked for it at once');
      assert.equal((JSON.parse(fs.readFileSync(webJson, 'utf8')) as { token: string }).token, saved.token);
      for (const name of ['vm0', 'vm1', 'vm2']) assert.equal(status(name).webUrl, `${base}/domain/${name}/?token=${saved.token}`);
      await eventually(async () => (await shownAs(page)) === 'serial0 writer connected', 'the tab to reconnect after the restart', 10000);
      await eventually(() => guestOf('vm1').allConnected, "vm1's guest to reconnect", 5000);
      await page.keyboard.type('+again');
      await eventually(
        () => vm1.receivedText() === 'to-vm1+again',
        `vm1's guest to get the keys after the restart (${JSON.stringify(vm1.receivedText())})`,
        5000,
      );
      assert.equal(vm2.receivedText(), '');
    } finally {
      await context.close();
    }
  });
});
