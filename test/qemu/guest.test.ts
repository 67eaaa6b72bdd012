/**
 * `chardev qemu` with a real QEMU and a real Linux guest: Debian's qemu-system-x86, a kernel
 * from Debian's linux-image-amd64 (scripts/guest-kit.sh puts it in .cache/guest/) and an
 * initramfs built here from busybox-static whose /init runs a shell on ttyS0, booted under
 * TCG. The clients are real too: inetutils telnet, socat on the pty and the UNIX sockets.
 *
 * In CI (CI set) a missing kit is a failure; elsewhere these tests skip and say why
 * (test/qemu/guest-kit.ts).
 */
import { domainXml } from '../helpers/domain-xml.ts';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Proc } from '../helpers/proc.ts';
import { q, waitFor } from '../core/helpers.ts';
import { QEMU, alive, buildInitramfs, chardevQemu, findKit, needs, qemuMissing, requireKit, within, type Kit, guestQemuArgv } from './guest-kit.ts';

const kit = findKit();

/** /init: mount what a shell needs and run one on the console (ttyS0, from console=), as its controlling tty. */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo chardev-guest-ready
exec setsid cttyhack sh
`;

/** `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` → ['7.2.22', 'Debian 1:7.2+dfsg-7+deb12u18+b3']. */
function qemuVersion(): string[] {
  const out = execFileSync(QEMU, ['--version'], { encoding: 'utf8' });
  const m = /version (\S+)(?: \(([^)]*)\))?/.exec(out);
  assert.ok(m !== null, out);
  return [m[1] as string, ...(m[2] !== undefined && m[2] !== '' ? [m[2]] : [])];
}

describe('chardev qemu with a real guest', () => {
  let dir = '';
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-qemu-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A domain named `name`: the XML's devices, written to DIR/NAME.xml. */
  function writeDomain(name: string, devices: string): string {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(file, domainXml(devices, name));
    return file;
  }
  const common = (): string[] => ['--run-dir', path.join(dir, 'run'), '--log-dir', path.join(dir, 'logs')];

  it("Linux boots on chardev's host interfaces: telnet, file log, pty and UNIX socket see one console; the shell answers; the HMP monitor answers; poweroff ends chardev", {
    timeout: 150000,
    ...needs(typeof kit === 'string' ? kit : undefined),
  }, async (t) => {
    requireKit(typeof kit === 'string' ? kit : undefined);
    const { kernel, busybox } = kit as Kit;
    const t0 = Date.now();
    const initrd = buildInitramfs(dir, busybox, INIT);
    const consoleLog = path.join(dir, 'console.log');
    const consoleSock = path.join(dir, 'console.sock');
    const monitorSock = path.join(dir, 'monitor.sock');
    // serial0 is the guest's ttyS0 and the console (the <console> is serial 0 seen again);
    // serial1 (pty) and serial2 (UNIX socket) are joined to it with --hub; serial3 carries
    // QEMU's monitor. Every view keeps history, so late readers miss nothing; the telnet
    // server takes several clients at once (a writer and viewers).
    const file = writeDomain(
      'linux',
      `
    <serial type='tcp'>
      <source mode='bind' host='127.0.0.1' service='0'/>
      <protocol type='telnet'/>
      <log file='${q(consoleLog)}'/>
      <target port='0'/>
      <cd:history size='1048576'/>
      <cd:clients max='4'/>
    </serial>
    <serial type='pty'><target port='1'/><cd:history size='1048576'/></serial>
    <serial type='unix'><source mode='bind' path='${q(consoleSock)}'/><target port='2'/><cd:history size='1048576'/></serial>
    <serial type='unix'><source mode='bind' path='${q(monitorSock)}'/><target port='3'/><cd:history size='65536'/></serial>
    <console type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='telnet'/><target type='serial' port='0'/></console>`,
    );
    const c = chardevQemu([file, ...common(), '--hub', 'serial0,serial1,serial2', '--monitor', 'serial3', '--', ...guestQemuArgv(kernel, initrd)]);
    const clients: Proc[] = [];
    try {
      // Clients attach as soon as the host interfaces exist, before the guest prints anything.
      // The port lines come after the host interfaces' own lines: wait for them too, not just
      // the first (asserting right after the interfaces appeared raced with their printing).
      await c.until(
        () =>
          /listening on telnet:127\.0\.0\.1:\d+/.test(c.stdout()) &&
          /redirected to \/dev\/pts\/\d+ \(label charserial1\)/.test(c.stdout()) &&
          /^charserial3: QEMU monitor \(HMP\)$/m.test(c.stdout()),
        'the host interfaces and the guest ports',
        20000,
      );
      const port = /charserial0: listening on telnet:127\.0\.0\.1:(\d+)/.exec(c.stdout())?.[1] as string;
      const pts = /redirected to (\/dev\/pts\/\d+) \(label charserial1\)/.exec(c.stdout())?.[1] as string;
      assert.match(c.stdout(), /^charserial0, charserial1, charserial2: guest serial0 \(-device isa-serial\)$/m);
      assert.match(c.stdout(), /^charserial3: QEMU monitor \(HMP\)$/m);
      const telnet = new Proc('telnet', 'telnet', ['127.0.0.1', port]);
      const ptyReader = new Proc('socat pty', 'socat', ['-u', `${pts},raw,echo=0`, '-']);
      const unixReader = new Proc('socat unix', 'socat', ['-u', `UNIX-CONNECT:${consoleSock}`, '-']);
      clients.push(telnet, ptyReader, unixReader);
      await c.until(() => /qemu: every device connected/.test(c.stdout()), 'QEMU to connect every device', 20000);
      const pid = Number(/started \(pid (\d+)\)/.exec(c.stdout())?.[1]);

      // The kernel's boot messages, live at the telnet client and in the <log> file.
      await telnet.until(() => telnet.text.includes('Linux version'), 'the kernel banner at telnet', 60000);
      await telnet.until(() => /chardev-guest-ready[\s\S]*# /.test(telnet.text), 'the guest shell prompt at telnet', 90000);
      const bootMs = Date.now() - t0;
      t.diagnostic(`boot to the shell prompt under TCG: ${(bootMs / 1000).toFixed(1)} s`);
      assert.match(fs.readFileSync(consoleLog, 'latin1'), /Linux version \d+\.\d+/);

      // A command typed at telnet, answered by the guest's shell (the answer, not the echo).
      telnet.child.stdin.write('echo chardev-$((6*7))\n');
      await telnet.until(() => /^chardev-42\r?$/m.test(telnet.text), 'the shell to answer at telnet', 20000);

      // The pty and the UNIX socket carry the same console: the same bytes, boot to answer.
      await ptyReader.until(() => /^chardev-42\r?$/m.test(ptyReader.text), 'the answer on the pty', 10000);
      await unixReader.until(() => /^chardev-42\r?$/m.test(unixReader.text), 'the answer on the UNIX socket', 10000);
      for (const r of [ptyReader, unixReader]) {
        assert.match(r.text, /Linux version \d+\.\d+/, `${r.label}: the boot messages`);
        assert.match(r.text, /echo chardev-\$\(\(6\*7\)\)/, `${r.label}: the command as the guest echoed it`);
      }
      const upTo = (s: string): string => s.slice(0, s.search(/^chardev-42\r?$/m));
      assert.equal(upTo(ptyReader.text), upTo(unixReader.text), 'pty and UNIX socket saw the same bytes');
      assert.ok(upTo(telnet.text).includes(upTo(unixReader.text).slice(-2000)), 'telnet saw them too');
      assert.ok(fs.readFileSync(consoleLog, 'latin1').includes(upTo(unixReader.text)), 'and so did the <log> file');

      // What QEMU lacks: a second telnet client, late, gets the boot from the device's history.
      const late = new Proc('late telnet', 'telnet', ['127.0.0.1', port]);
      clients.push(late);
      await late.until(() => late.text.includes('Linux version') && /^chardev-42\r?$/m.test(late.text), 'history replay at a late telnet client', 10000);

      // QEMU's HMP monitor on serial3, through chardev: `info version` is QEMU's own version.
      const monitor = new Proc('socat monitor', 'socat', ['-', `UNIX-CONNECT:${monitorSock}`]);
      clients.push(monitor);
      await monitor.until(() => monitor.text.includes('(qemu)'), 'the monitor prompt (from history)', 10000);
      monitor.child.stdin.write('info version\n');
      const [version, pkg] = qemuVersion();
      await monitor.until(
        () => monitor.text.includes(`\n${version}`) && (pkg === undefined || monitor.text.includes(pkg)),
        `'info version' answered with ${version} ${pkg ?? ''}`,
        10000,
      );
      assert.match(monitor.text, /QEMU \d+\.\d+\.\d+ monitor/);

      // QEMU's own output and command line are in the domain log.
      const domainLog = fs.readFileSync(path.join(dir, 'logs', 'linux.log'), 'utf8');
      assert.match(
        domainLog,
        /starting up chardev, domain linux, qemu command line:\nqemu-system-x86_64 .*-chardev socket,id=charserial0,path=.*-device '\{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0\}'/,
      );

      // The guest powers off: QEMU exits 0, and so does chardev, cleaning up behind it.
      telnet.child.stdin.write('poweroff -f\n');
      const code = await within(c.exited, 30000);
      assert.equal(code, 0, `chardev exits with QEMU's status\n${c.stderr()}`);
      assert.equal(alive(pid), false, 'QEMU is gone');
      assert.match(fs.readFileSync(path.join(dir, 'logs', 'linux.log'), 'utf8'), /qemu exited \(status 0\)\n$/);
      assert.deepEqual(fs.readdirSync(path.join(dir, 'run')), [], 'no status file or socket left');
      t.diagnostic(`whole test: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      await c.stop();
      await Promise.all(clients.map((p) => p.kill()));
    }
  });

  it("QEMU's own error is one line on stderr, with QEMU's exit status", { timeout: 30000, ...needs(qemuMissing) }, async () => {
    requireKit(qemuMissing);
    const file = writeDomain('bad', `<serial type='pty'/>`);
    const c = chardevQemu([file, ...common(), '--', QEMU, '-display', 'none', '-no-such-option']);
    assert.equal(await c.exited, 1);
    assert.equal(c.stderr(), 'qemu: qemu-system-x86_64 exited with status 1: qemu-system-x86_64: -no-such-option: invalid option\n');
    assert.match(fs.readFileSync(path.join(dir, 'logs', 'bad.log'), 'utf8'), /-no-such-option: invalid option/);
    assert.deepEqual(
      fs.readdirSync(path.join(dir, 'run')).filter((f) => f.startsWith('bad.')),
      [],
    );

    const missing = chardevQemu([file, ...common(), '--', 'qemu-system-none-such']);
    assert.equal(await missing.exited, 127);
    assert.equal(missing.stderr(), 'qemu: cannot start qemu-system-none-such: No such file or directory (is QEMU installed?)\n');
  });

  it('SIGTERM to chardev quits QEMU cleanly (QMP quit) and exits; quit in the monitor ends chardev; chardev killed outright takes QEMU along', {
    timeout: 60000,
    ...needs(qemuMissing),
  }, async () => {
    requireKit(qemuMissing);
    const monitorSock = path.join(dir, 'hmp.sock');
    const file = writeDomain('idle', `<serial type='pty'/><serial type='unix'><source mode='bind' path='${q(monitorSock)}'/></serial>`);
    // No kernel: the firmware finds nothing to boot and waits; enough for a running QEMU.
    const qemuArgs = ['--', QEMU, '-accel', 'tcg', '-m', '64', '-display', 'none', '-no-reboot'];
    const c = chardevQemu([file, ...common(), '--monitor', 'serial1', ...qemuArgs]);
    try {
      await c.until(() => /qemu: every device connected/.test(c.stdout()), 'QEMU to connect', 20000);
      const pid = Number(/started \(pid (\d+)\)/.exec(c.stdout())?.[1]);
      assert.ok(alive(pid));
      const t0 = Date.now();
      c.child.kill('SIGTERM');
      assert.equal(await c.exited, 0, c.stderr());
      assert.ok(Date.now() - t0 < 8000, 'quick');
      assert.equal(alive(pid), false, 'QEMU is gone');
      assert.match(fs.readFileSync(path.join(dir, 'logs', 'idle.log'), 'utf8'), /qemu exited \(status 0\), as chardev asked\n$/);
    } finally {
      await c.stop();
    }

    const again = chardevQemu([file, ...common(), '--monitor', 'serial1', ...qemuArgs]);
    let monitor: Proc | undefined;
    try {
      await again.until(() => /qemu: every device connected/.test(again.stdout()), 'QEMU to connect', 20000);
      monitor = new Proc('socat monitor', 'socat', ['-', `UNIX-CONNECT:${monitorSock}`]);
      monitor.child.stdin.write('quit\n');
      assert.equal(await again.exited, 0, again.stderr());
      assert.equal(again.stderr(), '');
    } finally {
      await again.stop();
      await monitor?.kill();
    }

    // chardev killed outright: QEMU must not run on with nobody serving its devices.
    const killed = chardevQemu([file, ...common(), '--monitor', 'serial1', ...qemuArgs]);
    let pid = 0;
    try {
      await killed.until(() => /qemu: every device connected/.test(killed.stdout()), 'QEMU to connect', 20000);
      pid = Number(/started \(pid (\d+)\)/.exec(killed.stdout())?.[1]);
      killed.child.kill('SIGKILL');
      await killed.exited;
      await waitFor(() => !alive(pid), 'QEMU to end after chardev was killed', 10000);
    } finally {
      await killed.stop();
      if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });
});
