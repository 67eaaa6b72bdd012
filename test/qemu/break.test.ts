/**
 * BREAK end to end with a real guest: Linux on QEMU under `chardev qemu`, its ttyS0 console
 * a `vc` device. A BREAK then `h` on a Linux serial console is the magic SysRq key: the
 * kernel prints its `sysrq: HELP` line on that console. Sent from the browser window (the
 * Send BREAK button) and from `chardev console` (`~B`, on a pty of its own), both reach the
 * 16550 through QEMU's own `chardev-send-break`.
 *
 * In CI (CI set) a missing kit is a failure; elsewhere these tests skip and say why
 * (test/qemu/guest-kit.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import { linuxPlatform } from '../../src/platform/index.ts';
import { launchChromium, screen } from '../helpers/chromium.ts';
import { ROOT } from '../helpers/paths.ts';
import { eventually } from '../platform/helpers.ts';
import { BIN, buildInitramfs, chardevQemu, findKit, needs, requireKit, within, type Kit, guestQemuArgv } from './guest-kit.ts';

const kit = findKit();
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

/** A shell on the console; SysRq on for every key, whatever the kernel's default. */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/sysrq
echo chardev-guest-ready
exec setsid cttyhack sh
`;

const count = (text: string, what: string): number => text.split(what).length - 1;

describe('BREAK reaches a real guest (chardev qemu)', () => {
  let dir = '';
  let browser: Browser | undefined;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-break-'));
  });
  after(async () => {
    await browser?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('Send BREAK in the browser window, then h: the kernel’s sysrq: HELP line; the same from chardev console’s ~B', {
    timeout: 150000,
    ...needs(typeof kit === 'string' ? kit : undefined),
  }, async (t) => {
    requireKit(typeof kit === 'string' ? kit : undefined);
    const { kernel, busybox } = kit as Kit;
    const t0 = Date.now();
    const initrd = buildInitramfs(dir, busybox, INIT);
    const file = path.join(dir, 'brk.xml');
    fs.writeFileSync(
      file,
      `<domain type='kvm' xmlns:cd='urn:chardev:1'>
  <name>brk</name>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='vc'><target port='0'/><cd:history size='1048576'/></serial>
  </devices>
</domain>
`,
    );
    const runDir = path.join(dir, 'run');
    const c = chardevQemu([
      file,
      '--run-dir',
      runDir,
      '--log-dir',
      path.join(dir, 'logs'),
      '--',
      ...guestQemuArgv(kernel, initrd, { append: 'sysrq_always_enabled' }),
    ]);
    let consolePty: { masterFd: number; slavePath: string } | undefined;
    let consoleChild: ReturnType<typeof spawn> | undefined;
    try {
      await c.until(() => /qemu: every device connected/.test(c.stdout()), 'QEMU to connect', 30000);
      const statusFile = path.join(runDir, 'brk.json');
      const st = JSON.parse(fs.readFileSync(statusFile, 'utf8')) as { webUrl?: string };
      assert.match(st.webUrl ?? '', /token=/);
      browser = await launchChromium();
      const page = await browser.newPage({ viewport: { width: 1000, height: 600 } });
      assert.equal((await page.goto(st.webUrl ?? ''))?.status(), 200);
      await eventually(async () => /chardev-guest-ready[\s\S]*# $/m.test(await screen(page)), 'the guest’s shell prompt in the window', 100000);
      t.diagnostic(`boot to the prompt: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

      await page.locator('#st-break').click();
      await page.keyboard.press('h');
      await eventually(async () => count(await screen(page), 'sysrq: HELP') === 1, 'the kernel’s sysrq: HELP line after BREAK, h', 10000);
      await page.screenshot({ path: path.join(ARTIFACTS, 'web-window-sysrq.png') });

      // chardev console on a terminal of its own (a pty we hold), taking the writer role over.
      const pty = linuxPlatform.openPty();
      consolePty = pty;
      const slave = fs.openSync(pty.slavePath, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
      consoleChild = spawn(process.execPath, [BIN, 'console', '--run-dir', runDir, '--force', 'brk'], { stdio: [slave, slave, slave] });
      fs.closeSync(slave);
      let consoleOut = '';
      const reader = linuxPlatform.openPtyReader(pty.masterFd, { onData: (b) => (consoleOut += b.toString('latin1')) });
      const writer = linuxPlatform.openWriter(pty.masterFd);
      try {
        await eventually(
          async () => count(consoleOut, 'sysrq: HELP') === 1 && (await page.evaluate<string>('window.chardevConsole.role')) === 'viewer',
          'the console to take over from the window (and replay the history)',
        );
        // At the start of a line: ~B is the BREAK, then h is the SysRq key.
        writer.write(Buffer.from('~B'));
        writer.write(Buffer.from('h'));
        // The console's history replay has the first one.
        await eventually(
          () => count(consoleOut, 'sysrq: HELP') === 2,
          `a second sysrq: HELP at the console after ~B, h: ${JSON.stringify(consoleOut.slice(-300))}`,
          10000,
        );
        await eventually(async () => count(await screen(page), 'sysrq: HELP') === 2, 'and in the window, now a viewer', 10000);
        writer.write(Buffer.from([0x1d]));
        const code = await within(new Promise<number | null>((resolve) => consoleChild?.once('close', (code) => resolve(code))), 10000);
        assert.equal(code, 0, consoleOut);
      } finally {
        reader.close();
        writer.close();
      }
      t.diagnostic(`whole test: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      consoleChild?.kill('SIGKILL');
      if (consolePty !== undefined) linuxPlatform.close(consolePty.masterFd);
      await c.stop();
    }
  });
});
