/**
 * Real QEMU guests under one `chardev daemon`: two Linux guests (the guest kit, booted under
 * TCG) handed over with `chardev qemu --daemon`, their consoles through `chardev console`,
 * a daemon restart while they run, `chardev stop`, a guest powering off. One boot of each
 * guest for every scenario, so the file stays short.
 *
 * In CI (CI set) a missing kit is a failure; elsewhere these tests skip and say why.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Daemon } from '../cli/daemon.ts';
import { q, waitFor } from '../core/helpers.ts';
import { Proc } from '../helpers/proc.ts';
import { BIN, QEMU, alive, buildInitramfs, findKit, needs, requireKit, type Kit, guestQemuArgv } from './guest-kit.ts';

const kit = findKit();
const missing = typeof kit === 'string' ? kit : undefined;

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo chardev-guest-ready
exec setsid cttyhack sh
`;

/** The parent pid of `pid` (/proc/PID/stat's 4th field). */
function parentOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

describe('chardev daemon with real QEMU guests', { skip: needs(missing).skip ?? false }, () => {
  let dir = '';
  let daemon: Daemon | undefined;
  const qemuPids: number[] = [];
  const runDir = (): string => path.join(dir, 'run');
  const startDaemon = (): Daemon => new Daemon(['daemon', '--run-dir', runDir(), '--log-dir', path.join(dir, 'logs')]);
  const cli = (args: readonly string[]): Proc =>
    new Proc(`chardev ${args[0] ?? ''}`, process.execPath, [BIN, args[0] ?? '', '--run-dir', runDir(), ...args.slice(1)]);
  const done = async (p: Proc, timeoutMs = 30000): Promise<string> => {
    assert.equal(await p.waitExit(timeoutMs), true, `${p.label} exits`);
    assert.equal(p.exitCode, 0, `${p.label}: ${p.stderr}`);
    return p.text;
  };
  /** `chardev console NAME`, a command typed, its answer awaited. */
  const ask = async (name: string, command: string, answer: RegExp): Promise<void> => {
    const c = cli(['console', name]);
    try {
      await c.until(() => c.text.includes(`Connected to domain '${name}'`), `the console of ${name}`, 10000);
      c.child.stdin.write(`${command}\n`);
      await c.until(() => answer.test(c.text), `${name} to answer ${command}`, 30000);
    } finally {
      await c.kill();
    }
  };
  const domainFile = (name: string): string => {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(
      file,
      `<domain type='kvm' xmlns:cd='urn:chardev:1'><name>${name}</name><devices>
        <serial type='unix'><source mode='bind' path='${q(path.join(dir, `${name}.sock`))}'/><log file='${q(path.join(dir, `${name}.console.log`))}'/><cd:history size='1048576'/></serial>
        <serial type='pty'/>
      </devices></domain>`,
    );
    return file;
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-daemon-qemu-'));
  });
  after(async () => {
    if (daemon !== undefined && daemon.exitCode === undefined) {
      daemon.child.kill('SIGTERM');
      if ((await daemon.exitWithin(15000)) === 'running') await daemon.kill();
    }
    for (const pid of qemuPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('two guests boot under the daemon, their consoles answer through a restart of the daemon; chardev stop and a poweroff end them', {
    timeout: 240000,
  }, async (t) => {
    requireKit(missing);
    const { kernel, busybox } = kit as Kit;
    const initrd = buildInitramfs(dir, busybox, INIT);
    const noDaemon = cli(['qemu', '--daemon', domainFile('early'), '--', QEMU]);
    assert.equal(await noDaemon.waitExit(30000), true);
    assert.equal(noDaemon.exitCode, 125);
    assert.equal(noDaemon.stderr, `qemu: --daemon: no chardev daemon is running for ${runDir()} (start one: chardev daemon --run-dir ${runDir()})\n`);
    daemon = startDaemon();
    await daemon.match(/daemon: control socket/, 'the daemon to listen');

    // QEMU's own refusal comes back to the caller, and nothing stays behind.
    const bad = cli(['qemu', '--daemon', domainFile('bad'), '--', QEMU, '-display', 'none', '-no-such-option']);
    assert.equal(await bad.waitExit(30000), true);
    assert.equal(bad.exitCode, 125);
    assert.equal(bad.stderr, 'qemu: qemu-system-x86_64 exited with status 1: qemu-system-x86_64: -no-such-option: invalid option\n');
    const none = cli(['qemu', '--daemon', domainFile('bad'), '--', 'qemu-system-none-such']);
    assert.equal(await none.waitExit(30000), true);
    assert.equal(none.exitCode, 127);
    assert.equal(none.stderr, 'qemu: cannot start qemu-system-none-such: No such file or directory (is QEMU installed?)\n');
    assert.deepEqual(
      fs.readdirSync(runDir()).filter((f) => f.startsWith('bad')),
      [],
    );

    // Handed over: `chardev qemu --daemon` returns once QEMU connected, and no chardev process stays per VM.
    const names = ['alpha', 'beta'];
    for (const name of names) {
      const started = cli(['qemu', '--daemon', domainFile(name), '--', ...guestQemuArgv(kernel, initrd, { memMb: 128 })]);
      const out = await done(started, 60000);
      assert.match(out, /^qemu: every device connected \(2 ports and the control socket\)$/m);
      assert.match(out, new RegExp(`^qemu: domain ${name} runs in the chardev daemon \\(pid ${daemon.pid}\\); chardev stop ${name} stops it$`, 'm'));
      const pid = Number(/started \(pid (\d+)\)/.exec(out)?.[1]);
      qemuPids.push(pid);
      assert.equal(parentOf(pid), daemon.pid, "QEMU is the daemon's child");
    }
    const list = await done(cli(['list']));
    for (const name of names) assert.match(list, new RegExp(`^${daemon.pid}\\s+${name}\\s+running`, 'm'));

    // Both boot to a shell; the console of each answers.
    for (const name of names) {
      await waitFor(
        () => /chardev-guest-ready[\s\S]*# /.test(fs.readFileSync(path.join(dir, `${name}.console.log`), 'latin1')),
        `${name} to boot to its shell`,
        150000,
      );
    }
    await ask('alpha', 'echo chardev-$((6*7))', /^chardev-42\r?$/m);
    await ask('beta', 'echo chardev-$((6*8))', /^chardev-48\r?$/m);
    assert.match(await done(cli(['dumpxml', '--live', 'beta'])), /<source path='\/dev\/pts\/\d+'\/>/);

    // The daemon restarts: the guests run on; the next daemon takes them back and their consoles answer again.
    const first = daemon;
    first.child.kill('SIGTERM');
    assert.equal(await first.exitWithin(20000), 0, first.stderr);
    assert.ok(qemuPids.every(alive), 'both QEMUs run on without the daemon');
    const logBefore = fs.readFileSync(path.join(dir, 'beta.console.log'), 'latin1');
    daemon = startDaemon();
    await daemon.match(/daemon: took back 2 domains: alpha, beta/, 'both domains taken back', 30000);
    await ask('beta', 'echo chardev-$((7*8))', /^chardev-56\r?$/m);
    await ask('alpha', 'echo chardev-$((7*9))', /^chardev-63\r?$/m);
    const logAfter = fs.readFileSync(path.join(dir, 'beta.console.log'), 'latin1');
    assert.ok(logAfter.startsWith(logBefore), 'the <log> continues in the same file');
    assert.match(logAfter.slice(logBefore.length), /^chardev-56\r?$/m);
    assert.match(logBefore, /Linux version \d+\.\d+/);

    // chardev stop: QEMU quits (QMP), the domain goes.
    assert.equal(await done(cli(['stop', 'alpha'])), "Domain 'alpha' stopped\n");
    await waitFor(() => !alive(qemuPids[0] as number), "alpha's QEMU to end", 15000);
    assert.doesNotMatch(await done(cli(['list'])), /alpha/);

    // The guest powers off by itself: the daemon stops its domain.
    const c = cli(['console', 'beta']);
    try {
      await c.until(() => c.text.includes("Connected to domain 'beta'"), 'the console of beta', 10000);
      c.child.stdin.write('poweroff -f\n');
      await waitFor(() => !alive(qemuPids[1] as number), "beta's QEMU to end", 30000);
      await waitFor(() => !fs.existsSync(path.join(runDir(), 'beta.json')), 'the domain to stop', 15000);
      assert.equal(await c.waitExit(10000), true, 'the console is told the domain stopped');
    } finally {
      await c.kill();
    }
    assert.match(fs.readFileSync(path.join(dir, 'logs', 'beta.log'), 'utf8'), /qemu exited \(status unknown: started by an earlier chardev\)\n$/);
    const state = JSON.parse(fs.readFileSync(path.join(runDir(), 'daemon', 'state.json'), 'utf8')) as { domains: unknown[] };
    assert.deepEqual(state.domains, []);
    t.diagnostic('both guests booted, restarted under a new daemon and ended');
  });
});
