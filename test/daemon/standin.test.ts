/**
 * `chardev daemon` with many domains, each guest a stand-in for QEMU (test/helpers/
 * standin-qemu.ts: the daemon starts it as its "QEMU binary", and it connects to the
 * daemon's sockets as QEMU 7.2 does, reconnect=1 included). What a user sees: the CLI
 * (list, status, console, dumpxml, stop), the devices' clients (socat, telnet), the log
 * files, the processes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient } from '../../src/control/qmp-client.ts';
import { Daemon, BIN, alive } from '../cli/daemon.ts';
import { payload, q, waitFor } from '../core/helpers.ts';
import { Proc } from '../helpers/proc.ts';
import { STANDIN_QEMU, StandinHub, type StandinGuest } from '../helpers/standin-qemu.ts';

const DOMAINS = 12;

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe('chardev daemon: many domains, stand-in guests', () => {
  let dir = '';
  let hub: StandinHub;
  let daemon: Daemon | undefined;
  const runDir = (): string => path.join(dir, 'run');
  const logDir = (): string => path.join(dir, 'logs');
  const startDaemon = (): Daemon => new Daemon(['daemon', '--run-dir', runDir(), '--log-dir', logDir()], { ...process.env, ...hub.env });
  const cli = (args: readonly string[], input?: string): Proc => {
    const p = new Proc(`chardev ${args[0] ?? ''}`, process.execPath, [BIN, ...args, '--run-dir', runDir()]);
    if (input !== undefined) p.child.stdin.write(input);
    return p;
  };
  const cliOut = async (args: readonly string[]): Promise<string> => {
    const p = cli(args);
    assert.equal(await p.waitExit(30000), true, `${args.join(' ')} exits`);
    assert.equal(p.exitCode, 0, `${args.join(' ')}: ${p.stderr}`);
    return p.text;
  };

  /** vmN: a pty, a UNIX server with history and a <log>, a telnet server on a free port, a file. */
  function domainXml(n: number): string {
    return `<domain type='kvm' xmlns:cd='urn:chardev:1'><name>vm${n}</name><devices>
      <serial type='pty'/>
      <serial type='unix'><source mode='bind' path='${q(path.join(dir, `vm${n}.sock`))}'/><log file='${q(path.join(dir, `vm${n}.console.log`))}'/><cd:history size='65536'/></serial>
      <serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='telnet'/></serial>
      <serial type='file'><source path='${q(path.join(dir, `vm${n}.file.log`))}'/></serial>
    </devices></domain>`;
  }

  const guestOf = (n: number): StandinGuest => {
    const status = JSON.parse(fs.readFileSync(path.join(runDir(), `vm${n}.json`), 'utf8')) as { qemuPid: number };
    const g = hub.guests.find((x) => x.pid === status.qemuPid);
    assert.ok(g !== undefined, `the stand-in of vm${n} (pid ${status.qemuPid})`);
    return g;
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-daemon-'));
    hub = await StandinHub.start(dir);
  });
  after(async () => {
    await daemon?.kill();
    hub.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('hosts the domains the control socket starts; list, status, console and dumpxml see them; owner-only directories and sockets', {
    timeout: 60000,
  }, async () => {
    daemon = startDaemon();
    await daemon.match(/daemon: control socket (\S+)/, 'the control socket');
    const control = path.join(runDir(), 'daemon', 'control.qmp');
    assert.equal(fs.statSync(control).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.join(runDir(), 'daemon')).mode & 0o777, 0o700);
    const second = startDaemon();
    assert.equal(await second.exitWithin(30000), 125, 'one daemon per run directory');
    assert.equal(second.stderr, `daemon: a chardev daemon already runs for ${runDir()} (${control} answers)\n`);

    const qmp = await QmpClient.connect(control);
    try {
      for (let n = 0; n < DOMAINS; n++) {
        const r = (await qmp.execute('x-domain-start', { xml: domainXml(n), qemu: { argv: [STANDIN_QEMU, '-m', '64'] } }, 30000)) as {
          name: string;
          lines: string[];
          'qemu-pid': number;
        };
        assert.equal(r.name, `vm${n}`);
        assert.ok(
          r.lines.some((l) => /^qemu: every device connected \(4 ports and the control socket\)$/.test(l)),
          r.lines.join('\n'),
        );
      }
      const listed = (await qmp.execute('x-domain-list')) as Array<{ name: string; devices: number; 'qemu-pid': number }>;
      assert.deepEqual(listed.map((d) => d.name).sort(), Array.from({ length: DOMAINS }, (_, n) => `vm${n}`).sort());
      assert.ok(listed.every((d) => d.devices === 4 && alive(d['qemu-pid'])));
      // A device command by domain, answered by that domain.
      const chardevs = (await qmp.execute('query-chardev', { domain: 'vm3' })) as Array<{ label: string; filename: string }>;
      assert.deepEqual(
        chardevs.map((c) => c.label),
        ['charserial0', 'charserial1', 'charserial2', 'charserial3'],
      );
      await assert.rejects(qmp.execute('query-chardev', { domain: 'nosuch' }), /failed to get domain 'nosuch'/);
      // Every command a domain's own socket answers, the control socket answers too (by domain).
      const names = (r: unknown): string[] => (r as Array<{ name: string }>).map((x) => x.name);
      const own = await QmpClient.connect(path.join(runDir(), 'vm3.qmp'));
      let domainCommands: string[];
      try {
        domainCommands = names(await own.execute('query-commands'));
      } finally {
        await own.close();
      }
      const controlCommands = names(await qmp.execute('query-commands'));
      assert.deepEqual(
        domainCommands.filter((n) => !controlCommands.includes(n)),
        [],
      );
      for (const n of ['x-domain-start', 'x-domain-stop', 'x-domain-list']) assert.ok(controlCommands.includes(n), n);
      await assert.rejects(qmp.execute('x-domain-start', { xml: domainXml(3) }), /domain 'vm3' is already running/);
    } finally {
      await qmp.close();
    }
    for (let n = 0; n < DOMAINS; n++) assert.equal(guestOf(n).allConnected, true, `vm${n}'s stand-in is connected`);

    const list = await cliOut(['list']);
    for (let n = 0; n < DOMAINS; n++) assert.match(list, new RegExp(`^${daemon.pid}\\s+vm${n}\\s+running`, 'm'));
    const status = await cliOut(['status', 'vm1']);
    assert.match(status, /^serial2\s+tcp\s.*telnet:127\.0\.0\.1:\d+/m);
    assert.match(status, new RegExp(`^hosted by the chardev daemon \\(control socket ${control.replace(/[.]/g, '\\.')}\\), QEMU pid ${guestOf(1).pid}$`, 'm'));
    assert.match(await cliOut(['dumpxml', '--live', 'vm1']), /<source mode='bind' host='127\.0\.0\.1' service='\d+'\/>/);

    // The guest's output reaches the UNIX socket's client, the <log>, the file; input from
    // `chardev console` reaches the guest.
    const g = guestOf(1);
    await g.port('charserial1').write('hello from vm1\r\n');
    await g.port('charserial3').write('to the file\n');
    const reader = new Proc('socat', 'socat', ['-u', `UNIX-CONNECT:${path.join(dir, 'vm1.sock')}`, '-']);
    try {
      await reader.until(() => reader.text.includes('hello from vm1'), 'history at a UNIX client');
    } finally {
      await reader.kill();
    }
    await waitFor(() => fs.readFileSync(path.join(dir, 'vm1.console.log'), 'latin1').includes('hello from vm1'), 'the <log>');
    await waitFor(() => fs.readFileSync(path.join(dir, 'vm1.file.log'), 'latin1') === 'to the file\n', 'the file device');
    const consoleProc = cli(['console', 'vm1', 'serial1'], 'typed at the console\n');
    try {
      await consoleProc.until(
        () => consoleProc.text.includes("Connected to domain 'vm1'") && consoleProc.text.includes('hello from vm1'),
        'the console attached, with history',
      );
      await waitFor(() => g.port('charserial1').receivedText().includes('typed at the console\n'), 'console input at the guest');
    } finally {
      await consoleProc.kill();
    }
  });

  it('no byte is lost through the daemon: a guest writing as fast as it can to a slow UNIX client (count and sha256)', { timeout: 60000 }, async () => {
    const g = guestOf(2);
    const data = payload(4 << 20);
    const out = path.join(dir, 'vm2.read');
    // A reader that takes its time: 16 KiB at a time with pauses (python3's socket, not ours).
    const reader = new Proc('python3 reader', 'python3', [
      '-c',
      `
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); want = int(sys.argv[2]); got = 0
print('connected', flush=True)
with open(sys.argv[3], 'wb') as f:
    while got < want:
        b = s.recv(16384)
        if not b: break
        f.write(b); got += len(b)
        if got % (1 << 20) < 16384: time.sleep(0.05)
`,
      path.join(dir, 'vm2.sock'),
      String(data.length + 0),
      out,
    ]);
    try {
      // The reader is a client of the device before the guest writes (a UNIX server without one drops output).
      await reader.until(() => reader.text.includes('connected'), 'the reader to connect', 15000);
      const qmp = await QmpClient.connect(path.join(runDir(), 'daemon', 'control.qmp'));
      try {
        let clients: unknown[] = [];
        for (let i = 0; i < 100 && clients.length === 0; i++) {
          clients = (await qmp.execute('x-chardev-clients', { domain: 'vm2', id: 'charserial1' })) as unknown[];
          if (clients.length === 0) await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal(clients.length, 1, "the reader is the device's client (through the control socket, by domain)");
      } finally {
        await qmp.close();
      }
      const port = g.port('charserial1');
      for (let off = 0; off < data.length; off += 65536) assert.equal(await port.write(data.subarray(off, off + 65536)), true);
      assert.equal(await reader.waitExit(45000), true, 'the reader got everything');
      const got = fs.readFileSync(out);
      assert.equal(got.length, data.length);
      assert.equal(sha(got), sha(data));
      // And the <log> has every byte too.
      await waitFor(() => fs.statSync(path.join(dir, 'vm2.console.log')).size === data.length, 'the <log> complete', 15000);
      assert.equal(sha(fs.readFileSync(path.join(dir, 'vm2.console.log'))), sha(data));
    } finally {
      await reader.kill();
    }
  });

  it('a daemon restart with the guests writing: every guest runs on, every console comes back on the same ports, every <log> continues in its file', {
    timeout: 60000,
  }, async () => {
    const d = daemon as Daemon;
    const telnetPort = (n: number): string => {
      const live = (JSON.parse(fs.readFileSync(path.join(runDir(), `vm${n}.json`), 'utf8')) as { liveXml: string }).liveXml;
      return /<source mode='bind' host='127\.0\.0\.1' service='(\d+)'\/>/.exec(live)?.[1] ?? '';
    };
    const ports = Array.from({ length: DOMAINS }, (_, n) => telnetPort(n));
    assert.ok(
      ports.every((p) => /^\d+$/.test(p)),
      ports.join(','),
    );
    const guests = Array.from({ length: DOMAINS }, (_, n) => guestOf(n));
    // Every guest writes a numbered line every 50 ms, whether anyone is connected or not.
    let line = 0;
    const writer = setInterval(() => {
      line++;
      for (const [n, g] of guests.entries()) {
        void g.port('charserial1').write(`vm${n} line ${line}\n`);
        void g.port('charserial2').write(`vm${n} line ${line}\r\n`);
      }
    }, 50);
    try {
      await new Promise((r) => setTimeout(r, 300));
      d.child.kill('SIGTERM');
      assert.equal(await d.exitWithin(20000), 0, d.stderr);
      assert.ok(
        guests.every((g) => alive(g.pid)),
        'every guest runs on without the daemon',
      );
      assert.ok(!fs.readdirSync(runDir()).some((f) => f.endsWith('.json')), 'no status file while no daemon runs');
      const before = fs.readFileSync(path.join(dir, 'vm5.console.log'), 'latin1');

      daemon = startDaemon();
      await daemon.match(/daemon: took back (\d+) domains/, 'the domains taken back', 30000);
      assert.match(daemon.stdout, new RegExp(`took back ${DOMAINS} domains`));
      await waitFor(() => guests.every((g) => g.allConnected), 'every stand-in connected again', 15000);
      assert.ok(guests.every((g) => g.port('charserial1').connects === 2));
      assert.deepEqual(
        Array.from({ length: DOMAINS }, (_, n) => telnetPort(n)),
        ports,
        'the telnet servers are on their ports again',
      );

      // The <log> continues: what was there is still its beginning, new lines follow.
      const mark = line;
      await waitFor(() => fs.readFileSync(path.join(dir, 'vm5.console.log'), 'latin1').includes(`vm5 line ${mark + 2}\n`), 'new lines in the <log>');
      const afterText = fs.readFileSync(path.join(dir, 'vm5.console.log'), 'latin1');
      assert.ok(afterText.startsWith(before), 'the <log> was appended to, not replaced');
      assert.match(afterText, /^vm5 line 1\n/);

      // Every console answers: a telnet client on each domain's port gets the guest's lines.
      const telnets = ports.map((p, n) => new Proc(`telnet vm${n}`, 'telnet', ['127.0.0.1', p]));
      try {
        for (const [n, t] of telnets.entries()) await t.until(() => new RegExp(`vm${n} line \\d+\\r?\\n`).test(t.text), `vm${n}'s console`, 10000);
      } finally {
        await Promise.all(telnets.map((t) => t.kill()));
      }
      const list = await cliOut(['list']);
      assert.equal(list.trim().split('\n').length - 2, DOMAINS);
    } finally {
      clearInterval(writer);
    }
  });

  it('the daemon killed outright (a crash, then systemd Restart=): the next daemon takes the guests back; one whose guest ended meanwhile is dropped', {
    timeout: 60000,
  }, async () => {
    const d = daemon as Daemon;
    const last = DOMAINS - 1;
    const guests = Array.from({ length: DOMAINS }, (_, n) => guestOf(n));
    d.child.kill('SIGKILL');
    await d.exited;
    // Its status files and sockets are left behind, stale; one guest ends while no daemon runs.
    assert.ok(fs.existsSync(path.join(runDir(), 'vm3.json')));
    process.kill((guests[last] as StandinGuest).pid, 'SIGKILL');
    await waitFor(() => !alive((guests[last] as StandinGuest).pid), 'the guest to end');
    assert.equal((await cliOut(['list'])).trim().split('\n').length, 2, 'a stale status is no running domain: a header, no rows');

    daemon = startDaemon();
    await daemon.match(/daemon: took back (\d+) domains/, 'the domains taken back', 30000);
    assert.match(daemon.stdout, new RegExp(`took back ${DOMAINS - 1} domains`));
    assert.match(daemon.stderr, new RegExp(`^vm${last}: not taken back: qemu \\(pid \\d+\\) of domain vm${last} is no longer running$`, 'm'));
    await waitFor(() => guests.slice(0, last).every((g) => g.allConnected), 'the other guests connected again', 15000);
    const list = await cliOut(['list']);
    assert.equal(list.trim().split('\n').length - 2, DOMAINS - 1);
    assert.doesNotMatch(list, new RegExp(`\\bvm${last}\\b`));
    // A console of a domain taken back answers: the UNIX socket's history is new, the guest's next line arrives.
    const g = guests[4] as StandinGuest;
    const reader = new Proc('socat', 'socat', ['-u', `UNIX-CONNECT:${path.join(dir, 'vm4.sock')}`, '-']);
    try {
      await new Promise((r) => setTimeout(r, 200));
      await g.port('charserial1').write('after the crash\n');
      await reader.until(() => reader.text.includes('after the crash\n'), 'the line at a UNIX client');
    } finally {
      await reader.kill();
    }
  });

  it('chardev stop ends a domain and its guest; a guest that ends by itself ends its domain', { timeout: 60000 }, async () => {
    const g0 = guestOf(0);
    const out = await cliOut(['stop', 'vm0']);
    assert.equal(out, "Domain 'vm0' stopped\n");
    await waitFor(() => !alive(g0.pid), 'the stand-in of vm0 to end (QMP quit)');
    assert.equal(fs.existsSync(path.join(runDir(), 'vm0.json')), false);
    assert.equal(fs.existsSync(path.join(dir, 'vm0.sock')), false, 'its UNIX server is gone');

    const g1 = guestOf(1);
    process.kill(g1.pid, 'SIGKILL');
    await waitFor(() => !fs.existsSync(path.join(runDir(), 'vm1.json')), 'the daemon to stop vm1 after its guest died', 15000);
    const list = await cliOut(['list']);
    assert.doesNotMatch(list, /\bvm[01]\b/);
    const state = JSON.parse(fs.readFileSync(path.join(runDir(), 'daemon', 'state.json'), 'utf8')) as { domains: Array<{ name: string }> };
    assert.deepEqual(state.domains.map((x) => x.name).sort(), Array.from({ length: DOMAINS - 3 }, (_, n) => `vm${n + 2}`).sort());
    const p = cli(['stop', 'vm0']);
    await p.waitExit(20000);
    assert.equal(p.exitCode, 1);
    assert.match(p.stderr, /failed to get domain 'vm0'/);
  });
});
