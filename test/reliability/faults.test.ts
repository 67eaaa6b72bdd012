/**
 * Faults, each against `chardev run` as a real process with a real guest
 * process writing a checksummed stream, and real peers (socat, Python):
 *
 * - a client SIGKILLed mid-stream: the next client is served, the guest keeps running, the
 *   log holds every byte;
 * - the server of a reconnecting client device restarted 20 times: every restart reconnects
 *   and carries data both ways; a failure is reported once per streak;
 * - a full disk under `file`, `<log>` and the domain log (RLIMIT_FSIZE → EFBIG, /dev/full →
 *   ENOSPC): each device says so once, the guest and the other devices carry on;
 * - running out of file descriptors while clients connect: the process survives, the clients
 *   it has no fd for are closed, a log rotation that cannot open its file says so once and
 *   loses nothing, and everything works again once clients leave.
 *
 * The reader stalled for 30 s is in test/backends/multi-client.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as net from 'node:net';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { domainXml, q, waitFor } from '../core/helpers.ts';
import { PyPeer, STREAM_PEER, hex } from '../backends/python-peer.ts';
import { ChardevProcess, PYTHON, RECORD, checkRecords, fdCount, figure, readRotated, records, recordGuest, sha256, tmp } from './helpers.ts';

let dir = '';
let runDir = '';
let logDir = '';
before(() => {
  dir = tmp('faults');
  runDir = path.join(dir, 'run');
  logDir = path.join(dir, 'logs');
  fs.mkdirSync(runDir, { mode: 0o700 });
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function writeDomain(name: string, devices: string): string {
  const file = path.join(dir, `${name}.xml`);
  fs.writeFileSync(file, domainXml(devices, name));
  return file;
}

/** A process reading a stream to EOF; its bytes collected. */
class Reader {
  readonly chunks: Buffer[] = [];
  received = 0;
  readonly child;
  readonly done: Promise<void>;
  constructor(cmd: string, args: readonly string[]) {
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.received += b.length;
    });
    this.child.stderr.resume();
    this.done = new Promise((resolve) => this.child.once('close', () => resolve()));
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** Skip to the first whole record in a client's bytes (it joined mid-stream). */
function fromFirstRecord(bytes: Buffer): Buffer {
  for (let k = 0; k < Math.min(RECORD, bytes.length); k++) {
    if (!/^\d{10} $/.test(bytes.subarray(k, k + 11).toString('latin1'))) continue;
    const n = Number(bytes.subarray(k, k + 10).toString('latin1'));
    if (records(n, 1).equals(bytes.subarray(k, k + RECORD))) return bytes.subarray(k);
  }
  throw new Error(`no whole record in ${bytes.length} bytes`);
}

const SLOW = { timeout: 120_000 };

describe('faults', () => {
  it(
    'a client SIGKILLed mid-stream (socat over tcp, Python over unix): the next client is served, the guest runs on, the log holds every byte',
    SLOW,
    async () => {
      const COUNT = 6000; // 1.5 MiB, over about 4 s
      const sock = path.join(dir, 'kill.sock');
      const log0 = path.join(dir, 'kill-tcp.log');
      const log1 = path.join(dir, 'kill-unix.log');
      const xml = writeDomain(
        'kill',
        `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><log file='${q(log0)}'/></serial>` +
          `<serial type='unix'><source mode='bind' path='${q(sock)}'/><log file='${q(log1)}'/></serial>`,
      );
      const cd = new ChardevProcess({ xmlFile: xml, logDir, runDir, attach: ['serial0', 'serial1'], guest: [PYTHON, '-c', recordGuest(COUNT, 8, 5)] });
      try {
        const port = (await cd.out(/^charserial0: listening on tcp:127\.0\.0\.1:(\d+)$/m))[1] ?? '';
        await cd.ready();
        // A reads; B connects too and waits its turn (a server serves one client at a time, as QEMU's).
        const aTcp = new Reader('socat', ['-u', `TCP:127.0.0.1:${port}`, 'STDOUT']);
        const aUnix = new Reader(PYTHON, [
          '-c',
          `import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nwhile True:\n    b=s.recv(65536)\n    if not b: break\n    sys.stdout.buffer.write(b); sys.stdout.flush()`,
          sock,
        ]);
        await waitFor(() => aTcp.received > 64 * 1024 && aUnix.received > 64 * 1024, 'both first clients to be mid-stream', 15000);
        const bTcp = new Reader('socat', ['-u', `TCP:127.0.0.1:${port}`, 'STDOUT']);
        const bUnix = new Reader('socat', ['-u', `UNIX-CONNECT:${sock}`, 'STDOUT']);
        await sleep(200);
        assert.equal(bTcp.received + bUnix.received, 0, 'the second clients wait while the first are served');
        aTcp.child.kill('SIGKILL');
        aUnix.child.kill('SIGKILL');
        await Promise.all([aTcp.done, aUnix.done]);
        const killedAt = Math.min(aTcp.received, aUnix.received);
        await waitFor(() => bTcp.received > 0 && bUnix.received > 0, 'the next clients to be served', 10000);
        const exit = await cd.exited;
        assert.deepEqual(exit, { code: 0, signal: null }, `the guest ran to its end; stderr: ${cd.stderr}`);
        await Promise.all([bTcp.done, bUnix.done]);
        const expected = records(0, COUNT);
        for (const log of [log0, log1]) assert.equal(sha256(fs.readFileSync(log)), sha256(expected), `${log}: every guest byte once, in order`);
        for (const [name, b] of [
          ['tcp', bTcp],
          ['unix', bUnix],
        ] as const) {
          const got = checkRecords(fromFirstRecord(b.bytes()), `next ${name} client`);
          assert.equal(got.first + got.count, COUNT, `the next ${name} client got everything from its start to the guest's last byte`);
        }
        assert.equal(cd.errors(/^char/).length, 0, `a client going away is not a device error: ${cd.stderr}`);
        figure(`fault: 2 clients SIGKILLed mid-stream (after ${killedAt}+ bytes); next clients served; logs ${2 * expected.length} bytes checked (sha256)`);
      } finally {
        await cd.kill();
      }
    },
  );

  it(
    'a full disk under file, <log> and the domain log (RLIMIT_FSIZE: EFBIG; /dev/full: ENOSPC): reported once per device, the guest and other devices carry on',
    SLOW,
    async () => {
      const LIMIT = 256 * 1024;
      const COUNT = 4096; // 1 MiB
      const out = path.join(dir, 'full-file.out');
      const log1 = path.join(dir, 'full-serial1.log');
      const fullLogDir = path.join(dir, 'full-logs');
      const xml = writeDomain(
        'fulldisk',
        `<serial type='file'><source path='${q(out)}'/></serial>` +
          `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><log file='${q(log1)}'/><cd:history size='2097152'/></serial>` +
          `<serial type='stdio'/>` +
          `<serial type='null'><log file='/dev/full'/></serial>`,
      );
      const cd = new ChardevProcess({
        xmlFile: xml,
        logDir: fullLogDir,
        runDir,
        prlimit: [`--fsize=${LIMIT}`],
        attach: ['serial0', 'serial1', 'serial2', 'serial3'],
        guest: [PYTHON, '-c', recordGuest(COUNT, 16, 2)],
      });
      try {
        const port = (await cd.out(/^charserial1: listening on tcp:127\.0\.0\.1:(\d+)$/m))[1] ?? '';
        const reader = new Reader('socat', ['-u', `TCP:127.0.0.1:${port}`, 'STDOUT']);
        const exit = await cd.exited;
        assert.deepEqual(exit, { code: 0, signal: null }, `the guest ran to its end; stderr: ${cd.stderr}`);
        await reader.done;
        const expected = records(0, COUNT);
        assert.equal(sha256(reader.bytes()), sha256(expected), 'the tcp client (another device) got every byte');
        const errors = cd.errors(/^char/);
        assert.deepEqual(
          errors.map((l) => l.replace(dir, 'DIR')).sort(),
          [
            'charserial0: file DIR/full-file.out: File too large; further output discarded',
            'charserial1: log DIR/full-serial1.log: File too large; logging stopped',
            'charserial2: domain log DIR/full-logs/fulldisk.log: File too large; further output discarded',
            'charserial3: log /dev/full: No space left on device; logging stopped',
          ].sort(),
          cd.stderr,
        );
        assert.equal(cd.stderr.split('\n').filter((l) => l !== '').length, 4, `nothing else on stderr: ${cd.stderr}`);
        for (const f of [out, log1, path.join(fullLogDir, 'fulldisk.log')]) {
          assert.ok(fs.readFileSync(f).equals(expected.subarray(0, LIMIT)), `${f} holds the stream up to the limit`);
        }
        figure(
          `fault: full disk (EFBIG at ${LIMIT} bytes under file, <log>, domain log; ENOSPC on /dev/full): 4 reports, one per device; guest exit 0; other device got ${expected.length} bytes (sha256)`,
        );
      } finally {
        await cd.kill();
      }
    },
  );

  it('the server of a reconnecting client device restarted 20 times: every restart reconnects, data flows both ways, a failure is reported once per streak', {
    timeout: 180_000,
  }, async () => {
    const RESTARTS = 20;
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    // The guest echoes every line it reads, until `quit`.
    const echo =
      'import sys\nwhile True:\n    l = sys.stdin.buffer.readline()\n    if not l or l.startswith(b"quit"): break\n    sys.stdout.buffer.write(b"echo " + l); sys.stdout.flush()';
    const xml = writeDomain(
      'restarts',
      `<serial type='tcp'><source mode='connect' host='127.0.0.1' service='${port}'><reconnect enabled='yes' timeout='1'/></source></serial>`,
    );
    /** Restarts after which the server stays down 2.5 s: two or three failed tries, one report. */
    const gaps = new Set([2, 7, 12, 17]);
    let server = new PyPeer(STREAM_PEER, ['tcp', 'listen', String(port)]);
    assert.match(await server.line(), /^listening /);
    const cd = new ChardevProcess({ xmlFile: xml, logDir, runDir, guest: [PYTHON, '-c', echo] });
    let reconnects = 0;
    try {
      await cd.ready();
      for (let i = 0; ; i++) {
        assert.match(await server.cmd('accept 15', 20000), /^accepted /, `connection ${i}`);
        if (i > 0) reconnects++;
        const ping = `ping ${i}\n`;
        assert.equal(await server.cmd(`send ${hex(ping)}`), 'sent');
        assert.equal(
          await server.cmd(`recv ${ping.length + 5} 10`),
          `got ${hex(`echo ${ping}`)}`,
          `restart ${i}: input reached the guest and its answer came back`,
        );
        if (i === RESTARTS) break;
        await server.kill('SIGKILL');
        if (gaps.has(i)) await sleep(2500);
        server = new PyPeer(STREAM_PEER, ['tcp', 'listen', String(port)]);
        assert.match(await server.line(), /^listening /);
      }
      assert.equal(await server.cmd(`send ${hex('quit\n')}`), 'sent');
      const exit = await cd.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, cd.stderr);
      const reports = cd.errors(/Unable to connect character device charserial0: Failed to connect to '127\.0\.0\.1:\d+': Connection refused/);
      assert.equal(reports.length, gaps.size, `one report per streak of failures: ${cd.stderr}`);
      assert.equal(cd.stderr.split('\n').filter((l) => l !== '').length, gaps.size, `nothing else on stderr: ${cd.stderr}`);
      figure(
        `fault: server killed and restarted ${RESTARTS} times under a reconnecting client: ${reconnects} reconnects, data both ways each time; ${gaps.size} streaks of refused connects, ${reports.length} reports`,
      );
    } finally {
      await server.kill();
      await cd.kill();
    }
  });

  it('running out of file descriptors while clients connect: the process survives, a rotation that cannot open its file loses nothing, service resumes when clients leave', {
    timeout: 120_000,
  }, async () => {
    const log = path.join(dir, 'emfile.log');
    const countFile = path.join(dir, 'emfile.count');
    const xml = writeDomain(
      'emfile',
      `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><log file='${q(log)}'/><cd:rotate size='65536' backups='1000'/><cd:clients max='64'/></serial>`,
    );
    const cd = new ChardevProcess({ xmlFile: xml, logDir, runDir, guest: [PYTHON, '-c', recordGuest(0, 4, 2, countFile)] });
    const holder = String.raw`
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ss = [socket.create_connection(('127.0.0.1', port)) for _ in range(n)]
time.sleep(1.5)
served = closed = 0
for s in ss:
    s.settimeout(0.2)
    try:
        b = s.recv(65536)
        if b: served += 1
        else: closed += 1
    except socket.timeout:
        pass
    except OSError:
        closed += 1
print('served', served, 'closed', closed, flush=True)
sys.stdin.readline()
`;
    let peer: PyPeer | undefined;
    let hold: PyPeer | undefined;
    try {
      const port = (await cd.out(/^charserial0: listening on tcp:127\.0\.0\.1:(\d+)$/m))[1] ?? '';
      await cd.ready();
      await sleep(300);
      const fds0 = fdCount(cd.pid);
      // RLIMIT_NOFILE bounds fd numbers: the limit where exactly 6 numbers below it are free.
      const open = new Set(fs.readdirSync(`/proc/${cd.pid}/fd`).map(Number));
      let limit = 0;
      for (let free = 0; free < 6; limit++) if (!open.has(limit)) free++;
      // Soft limit only, on the running process; the clients get their own (higher) one.
      execFileSync('prlimit', ['--pid', String(cd.pid), `--nofile=${limit}:`]);
      const CLIENTS = 40;
      hold = new PyPeer(holder, [port, String(CLIENTS)]);
      // The PyPeer runs under our limits, not chardev's.
      const m = /^served (\d+) closed (\d+)$/.exec(await hold.line(15000));
      assert.ok(m, 'the holder reports');
      const served = Number(m[1]);
      const closed = Number(m[2]);
      assert.ok(cd.alive, `chardev survived; stderr: ${cd.stderr}`);
      assert.ok(served >= 1 && served <= 6, `a few clients were served (${served})`);
      assert.ok(closed >= CLIENTS - 6, `the clients beyond the limit were closed (${closed})`);
      // Meanwhile the log could not rotate: said once, writing on.
      await waitFor(() => cd.errors(/cannot start a new file/).length > 0, 'the rotation failure to be reported', 10000);
      await hold.kill();
      hold = undefined;
      await waitFor(() => fdCount(cd.pid) <= fds0 + 1, `fds back to ${fds0} (now ${fdCount(cd.pid)})`, 10000);
      // Service resumes under the same limit.
      peer = new PyPeer(STREAM_PEER, ['tcp', 'connect', port]);
      assert.match(await peer.line(), /^connected /);
      assert.match(await peer.cmd('recv 4096 5'), /^got [0-9a-f]{8192}$/, 'a new client is served');
      assert.equal(await peer.cmd(`send ${hex('quit\n')}`), 'sent');
      const exit = await cd.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, cd.stderr);
      const reports = cd.errors(/./);
      assert.deepEqual(
        reports.map((l) => l.replace(dir, 'DIR')),
        ['charserial0: log DIR/emfile.log: cannot start a new file: Too many open files; writing on past the limit'],
        'one report, for the rotation; nothing else on stderr',
      );
      const written = Number(fs.readFileSync(countFile, 'utf8'));
      const { files, bytes } = readRotated(log);
      const got = checkRecords(bytes, 'the rotated log');
      assert.deepEqual(got, { first: 0, count: written }, 'every guest byte once, in order, across the rotations');
      assert.ok(files.length >= 3, `rotation went on after the fds came back (${files.length} files)`);
      figure(
        `fault: fd exhaustion (RLIMIT_NOFILE ${limit}, ${CLIENTS} clients at once): ${served} served, ${closed} closed, process survived, 1 report; log ${bytes.length} bytes in ${files.length} files checked`,
      );
    } finally {
      await hold?.kill();
      await peer?.kill();
      await cd.kill();
    }
  });
});
