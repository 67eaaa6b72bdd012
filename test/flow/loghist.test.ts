/**
 * The kernel path with a `<log>` beside the client, and `<cd:history>`: a tcp or unix server
 * device whose only client is the writer tees every byte to its log on the data-plane thread
 * (tee(2) into a scratch pipe spliced to the file, then the guest's pipe spliced to the
 * socket), and the history is brought up to date from the log whenever a run ends — the hub
 * ends it before any client comes.
 *
 * Real processes: a Python guest writing a random stream to a `guestPipe` (64 KiB a write,
 * pausing now and then so the pipe goes back and forth between libuv and the thread), Python
 * clients that read at a pace, stall, keep what they read. Every check is count + sha256 of
 * what the client got and of what the log holds.
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PyPeer } from '../backends/python-peer.ts';
import { domainXml, waitFor } from '../core/helpers.ts';
import { PYTHON, readRotated, sha256, tmp } from '../reliability/helpers.ts';
import { open } from '../../src/index.ts';
import type { Chardev, Domain } from '../../src/index.ts';
import { type GuestOutput, guestPipe, startDataPlane } from '../../src/core/guest-output.ts';

const MiB = 1024 * 1024;
const HISTORY_BYTES = MiB;

function report(text: string): void {
  process.stderr.write(`loghist: ${text}\n`);
}

/**
 * A client. argv: KIND (tcp|unix) ADDRESS. Answers `connected`, then per command:
 *  read N RATE STALL_S FILE   nothing for STALL_S s, then N bytes (RATE bytes/s, 0 unpaced),
 *                             kept in FILE → `read GOT SHA END` (END done, eof, timeout)
 *  close                      → `closed`
 */
const CLIENT = String.raw`
import hashlib, socket, sys, time
kind, addr = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET if kind == 'tcp' else socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(('127.0.0.1', int(addr)) if kind == 'tcp' else addr)
print('connected', flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, *a = line.split()
    if cmd == 'read':
        n, rate, stall, keep = int(a[0]), float(a[1]), float(a[2]), open(a[3], 'wb')
        time.sleep(stall)
        got, h, end, t0 = 0, hashlib.sha256(), 'done', time.monotonic()
        s.settimeout(30)
        try:
            while got < n:
                c = s.recv(min(262144, n - got))
                if not c:
                    end = 'eof'
                    break
                got += len(c)
                h.update(c)
                keep.write(c)
                if rate > 0:
                    ahead = t0 + got / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except socket.timeout:
            end = 'timeout'
        keep.close()
        print('read', got, h.hexdigest(), end, flush=True)
    elif cmd == 'close':
        s.close()
        print('closed', flush=True)
`;

/** Reads N bytes from a pty slave (argv: PATH N), says `open` first, then `COUNT SHA256`. */
const PTY_READER = `
import hashlib, os, sys
fd, n = os.open(sys.argv[1], os.O_RDONLY | os.O_NOCTTY), int(sys.argv[2])
print('open', flush=True)
got, h = 0, hashlib.sha256()
while got < n:
    b = os.read(fd, min(65536, n - got))
    if not b:
        break
    got += len(b)
    h.update(b)
print(got, h.hexdigest(), flush=True)
`;
import { FILE_GUEST_PY } from '../helpers/file-guest-py.ts';
import { fileSizeLimit } from '../helpers/fsize-limit.ts';

interface Read {
  readonly got: number;
  readonly sha: string;
  readonly end: string;
  readonly data: Buffer;
}

type Kind = 'tcp' | 'unix';

class Rig {
  readonly dir: string;
  readonly kind: Kind;
  readonly data: Buffer;
  readonly domain: Domain;
  readonly device: Chardev;
  readonly log: string;
  readonly #address: string;
  readonly #dataFile: string;
  readonly #pause: { everyBytes: number; ms: number };
  readonly #peers: PyPeer[] = [];
  #child: ChildProcess | undefined;
  #output: GuestOutput | undefined;

  private constructor(dir: string, kind: Kind, data: Buffer, domain: Domain, log: string, address: string, pause: { everyBytes: number; ms: number }) {
    this.dir = dir;
    this.kind = kind;
    this.data = data;
    this.domain = domain;
    this.device = domain.device('serial0');
    this.log = log;
    this.#address = address;
    this.#dataFile = path.join(dir, 'data');
    this.#pause = pause;
  }

  /**
   * A `kind` server device with `<log file>` and a 1 MiB `<cd:history>` (`extra` inside
   * <serial>), fed by a guest writing `bytes` random bytes once `start()` is called.
   */
  static async make(
    ctx: TestContext,
    root: string,
    kind: Kind,
    bytes: number,
    options: {
      extra?: string;
      logAttrs?: string;
      logHead?: Buffer;
      logFile?: string;
      pause?: { everyBytes: number; ms: number };
      /** No `<log>`: the history alone beside the client (a ring in memory on the kernel path). */
      noLog?: boolean;
      historyBytes?: number;
    } = {},
  ): Promise<Rig> {
    const dir = fs.mkdtempSync(path.join(root, kind));
    const data = randomBytes(bytes);
    fs.writeFileSync(path.join(dir, 'data'), data);
    const log = options.logFile ?? path.join(dir, 'device.log');
    if (options.logHead !== undefined) fs.writeFileSync(log, options.logHead);
    const sock = path.join(dir, 'device.sock');
    const source = kind === 'tcp' ? `<source mode='bind' host='127.0.0.1' service='0'/>` : `<source mode='bind' path='${sock}'/>`;
    const xml = domainXml(
      `<serial type='${kind}'>${source}<protocol type='raw'/>${options.noLog === true ? '' : `<log file='${log}'${options.logAttrs ?? ''}/>`}<target port='0'/><cd:history size='${options.historyBytes ?? HISTORY_BYTES}'/>${options.extra ?? ''}</serial>`,
    );
    const domain = await open(xml, { logDir: dir });
    const address = kind === 'tcp' ? String(domain.device('serial0').boundService) : sock;
    const made = new Rig(dir, kind, data, domain, log, address, options.pause ?? { everyBytes: 0, ms: 0 });
    made.device.on('error', () => {});
    ctx.after(() => made.stop());
    return made;
  }

  get output(): GuestOutput {
    if (this.#output === undefined) throw new Error('not started');
    return this.#output;
  }

  start(): void {
    const pipe = guestPipe();
    try {
      this.#child = spawn(
        PYTHON,
        ['-S', '-c', FILE_GUEST_PY, this.#dataFile, path.join(this.dir, 'progress'), String(this.#pause.everyBytes), String(this.#pause.ms)],
        {
          stdio: ['ignore', pipe.writeFd, 'inherit'],
        },
      );
    } finally {
      fs.closeSync(pipe.writeFd);
    }
    this.#output = this.device.pipeFrom(pipe.readFd);
  }

  progress(): number {
    try {
      return Number(fs.readFileSync(path.join(this.dir, 'progress'), 'latin1') || '0');
    } catch {
      return 0;
    }
  }

  async client(): Promise<PyPeer> {
    const peer = new PyPeer(CLIENT, [this.kind, this.#address]);
    this.#peers.push(peer);
    assert.equal(await peer.line(10000), 'connected');
    return peer;
  }

  async read(peer: PyPeer, n: number, rate = 0, stallS = 0): Promise<Read> {
    const file = path.join(this.dir, `read-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    const budget = 40000 + (rate > 0 ? (n / rate) * 1000 : 0) + stallS * 1000;
    const line = await peer.cmd(`read ${n} ${rate} ${stallS} ${file}`, budget);
    const m = /^read (\d+) ([0-9a-f]{64}) (\w+)$/.exec(line);
    assert.ok(m, line);
    return { got: Number(m[1]), sha: m[2] as string, end: m[3] as string, data: fs.readFileSync(file) };
  }

  /** The log holds `head` and then the guest's whole stream, byte for byte. */
  assertLogWhole(head: Buffer = Buffer.alloc(0)): void {
    const log = fs.readFileSync(this.log);
    assert.equal(log.length, head.length + this.data.length, 'the log holds every byte');
    assert.equal(sha256(log), sha256(Buffer.concat([head, this.data])), 'sha256 of the log');
  }

  async stop(): Promise<void> {
    await Promise.all(this.#peers.map((p) => p.kill()));
    if (this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL');
    await this.domain.stop();
  }
}

function assertSpliced(output: GuestOutput, bytes: number, atLeast: number): void {
  const share = output.stats.spliced / bytes;
  assert.ok(share >= atLeast, `${(share * 100).toFixed(1)} % of the stream went by splice, not at least ${atLeast * 100} %`);
}

/**
 * Ends the kernel path's run as a reader of the history that attaches nobody (QMP's
 * ringbuf-read) does: the history is then exactly the last MiB the device took. Then waits
 * for the kernel path to go on.
 */
async function settleAndCheckHistory(rig: Rig): Promise<void> {
  rig.device.settleOutput();
  const taken = rig.device.counters.bytesFromGuest;
  assert.ok(
    rig.device.history?.snapshot().equals(rig.data.subarray(taken - HISTORY_BYTES, taken)),
    `settled at byte ${taken}: the history is the last MiB before it`,
  );
  assert.equal(rig.device.history?.totalBytes, taken);
  await waitFor(() => rig.output.path === 'kernel' && rig.output.stats.spliced > taken + MiB, 'the kernel path to go on after the settle', 10000);
}

/** A client attaching now, read for a MiB of history and 2 MiB after it; `atAttach`: the bytes the device had taken when it came. */
async function lateViewer(rig: Rig): Promise<{ seen: Read; atAttach: number }> {
  let atAttach = -1;
  const onClient = (change: string): void => {
    if (change === 'attached' && atAttach < 0) atAttach = rig.device.counters.bytesFromGuest;
  };
  rig.device.on('client', onClient);
  const viewer = await rig.client();
  const seen = await rig.read(viewer, HISTORY_BYTES + 2 * MiB);
  rig.device.off('client', onClient);
  assert.equal(seen.end, 'done');
  return { seen, atAttach };
}

/**
 * What a late viewer got: the history (the stream's last MiB before it came), the read-only
 * notice (inline: a raw socket), then live output from the very next byte.
 */
function assertHistoryThenLive(rig: Rig, seen: Read, atAttach: number, who: string): void {
  const notice = /\r\n\[chardev: read-only: [^\]]*\]\r\n/.exec(seen.data.toString('latin1'));
  assert.ok(notice, `${who} was told it is read-only`);
  const history = seen.data.subarray(0, notice.index);
  const live = seen.data.subarray(notice.index + notice[0].length);
  assert.ok(atAttach >= HISTORY_BYTES, `the guest had written ${atAttach} B when ${who} came`);
  assert.equal(history.length, HISTORY_BYTES, 'the history is full');
  assert.ok(history.equals(rig.data.subarray(atAttach - HISTORY_BYTES, atAttach)), `the history is exactly the last MiB the device took before ${who} came`);
  assert.ok(live.equals(rig.data.subarray(atAttach, atAttach + live.length)), 'the live stream follows the history with no byte lost or repeated');
}

const pct = (part: number, whole: number): string => `${((part / whole) * 100).toFixed(1)} %`;

describe('the kernel path with <log> beside the client and <cd:history> (real processes, sha256)', { concurrency: 1, timeout: 240000 }, () => {
  let root = '';
  before(async () => {
    root = tmp('loghist');
    await startDataPlane();
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  for (const [kind, withLog] of [
    ['tcp', true],
    ['unix', true],
    ['tcp', false],
    ['unix', false],
  ] as const) {
    // Without a <log>, the same runs keep the history in a ring in memory beside the client.
    const name = withLog ? kind : `${kind}, <cd:history> without <log>`;
    it(`${name}: 32 MiB to a client reading as fast as it can: the client${withLog ? ' and the log each get' : ' gets'} every byte, ≥ 90 % of it teed and spliced`, {
      timeout: 60000,
    }, async (ctx) => {
      const bytes = 32 * MiB;
      const rig = await Rig.make(ctx, root, kind, bytes, { logAttrs: " append='off'", noLog: !withLog });
      const peer = await rig.client();
      await waitFor(() => rig.device.hub.size === 1, 'the client to be seen', 5000);
      rig.start();
      const r = await rig.read(peer, bytes);
      assert.equal(r.end, 'done');
      assert.equal(r.got, bytes);
      assert.equal(r.sha, sha256(rig.data), 'sha256 of what the client got');
      await rig.output.ended;
      if (withLog) rig.assertLogWhole();
      assertSpliced(rig.output, bytes, 0.9);
      assert.deepEqual(rig.device.counters, { bytesFromGuest: bytes, bytesToGuest: 0, dropped: 0 });
      assert.equal(rig.device.hub.clients()[0]?.bytesSent, bytes, "the client's bytes-sent");
      // The history is the stream's last MiB, brought up to date from the log (or the ring).
      assert.equal(sha256(rig.device.history?.snapshot() ?? Buffer.alloc(0)), sha256(rig.data.subarray(bytes - HISTORY_BYTES)), 'the history is the last MiB');
      assert.equal(rig.device.history?.totalBytes, bytes);
      report(`${name} fast: ${pct(rig.output.stats.spliced, bytes)} spliced, ${rig.output.stats.switches} path changes`);
    });

    it(`${name}: a slow reader (4 MB/s), then a stalled one that resumes, hold the guest; client${withLog ? ' and log get' : ' gets'} every byte, the history is the last MiB`, {
      timeout: 90000,
    }, async (ctx) => {
      for (const how of ['slow', 'stalled'] as const) {
        const bytes = 16 * MiB;
        const rig = await Rig.make(ctx, root, kind, bytes, { noLog: !withLog });
        const peer = await rig.client();
        await waitFor(() => rig.device.hub.size === 1, 'the client to be seen', 5000);
        rig.start();
        const reading = how === 'slow' ? rig.read(peer, bytes, 4_000_000) : rig.read(peer, bytes, 0, 3);
        await sleep(1500);
        // Unheld the guest writes all of it within a few ms; held it is only its pipe, the
        // socket's buffers (several MiB on loopback TCP) and one tee ahead of the reader.
        const held = rig.progress();
        assert.ok(held > 0 && held < bytes, `${how}: the guest is held: it wrote ${held} of ${bytes} B in 1.5 s`);
        if (how === 'stalled') {
          await sleep(1000);
          assert.equal(rig.progress(), held, 'the guest stood still while the client read nothing');
          if (withLog) {
            const logged = fs.statSync(rig.log).size;
            assert.ok(logged <= held, `the log (${logged} B) holds no more than the guest wrote (${held} B)`);
          }
        }
        const r = await reading;
        assert.equal(r.got, bytes);
        assert.equal(r.sha, sha256(rig.data), `${how}: sha256 of what the client got`);
        await rig.output.ended;
        if (withLog) rig.assertLogWhole();
        assert.equal(rig.device.counters.dropped, 0);
        assert.equal(
          sha256(rig.device.history?.snapshot() ?? Buffer.alloc(0)),
          sha256(rig.data.subarray(bytes - HISTORY_BYTES)),
          'the history is the last MiB',
        );
        assertSpliced(rig.output, bytes, 0.8);
        assert.ok(rig.output.stats.waits > 0, 'the guest waited for the client');
        report(`${name} ${how}: held at ${held} B after 1.5 s; ${rig.output.stats.waits} waits, ${pct(rig.output.stats.spliced, bytes)} spliced`);
      }
    });

    it(`${name}: a second client attaching mid-stream gets the history — the last MiB the guest wrote — then the live stream from the very next byte; the writer${withLog ? ' and the log get' : ' gets'} every byte`, {
      timeout: 60000,
    }, async (ctx) => {
      const bytes = 32 * MiB;
      // The viewer's queue has room for the 1 MiB history and the live stream after it: with
      // the default 1 MiB the replay alone fills it, and whether it then misses live output
      // depends on how soon it reads (it did, 3 times of 3, when held bytes came sooner).
      const rig = await Rig.make(ctx, root, kind, bytes, { extra: "<cd:clients max='2' queue='4194304'/>", noLog: !withLog });
      const writer = await rig.client();
      await waitFor(() => rig.device.hub.size === 1, 'the writer to be seen', 5000);
      rig.start();
      // Paced, so the stream lasts while the second client comes (~4 s).
      const writing = rig.read(writer, bytes, 8_000_000);
      await waitFor(() => rig.output.stats.spliced > 6 * MiB, 'the kernel path to move 6 MiB', 10000);
      assert.equal(rig.output.path, 'kernel');
      await settleAndCheckHistory(rig);
      const { seen, atAttach } = await lateViewer(rig);
      const w = await writing;
      assert.equal(w.got, bytes);
      assert.equal(w.sha, sha256(rig.data), "sha256: the writer got every byte, across the viewer's arrival");
      await rig.output.ended;
      if (withLog) rig.assertLogWhole();
      assertHistoryThenLive(rig, seen, atAttach, 'the viewer');
      if (withLog) assert.ok(rig.output.stats.spliced < bytes, 'the viewer moved the stream to the JavaScript path for a while');
      // Without a <log>, writer and viewer go on together in a fan-out run that keeps the history.
      else
        assert.ok(
          rig.output.stats.spliced > bytes / 2,
          `the fan-out carried the stream after the viewer came (${pct(rig.output.stats.spliced, bytes)} spliced)`,
        );
      report(`${name} history: viewer came at byte ${atAttach}; ${pct(rig.output.stats.spliced, bytes)} spliced, ${rig.output.stats.switches} path changes`);
    });
  }

  for (const kind of ['tcp', 'unix'] as const) {
    it(`${kind}, <cd:history> without <log>: a writer and a viewer in a fan-out run keep the history; a second viewer gets the last MiB before it came, then the live stream from the very next byte`, {
      timeout: 60000,
    }, async (ctx) => {
      const bytes = 32 * MiB;
      const rig = await Rig.make(ctx, root, kind, bytes, { extra: "<cd:clients max='3' queue='4194304'/>", noLog: true });
      const writer = await rig.client();
      await waitFor(() => rig.device.hub.size === 1, 'the writer to be seen', 5000);
      const first = await rig.client();
      await waitFor(() => rig.device.hub.size === 2, 'the first viewer to be seen', 5000);
      rig.start();
      const writing = rig.read(writer, bytes, 8_000_000);
      const watching = rig.read(first, bytes + 4096);
      await waitFor(() => rig.output.stats.spliced > 6 * MiB, 'the fan-out to move 6 MiB', 10000);
      assert.equal(rig.output.path, 'kernel');
      await settleAndCheckHistory(rig);
      const { seen, atAttach } = await lateViewer(rig);
      const w = await writing;
      assert.equal(w.got, bytes);
      assert.equal(w.sha, sha256(rig.data), "sha256: the writer got every byte, across the viewers' arrival");
      await rig.output.ended;
      assertHistoryThenLive(rig, seen, atAttach, 'the second viewer');
      assert.equal(
        sha256(rig.device.history?.snapshot() ?? Buffer.alloc(0)),
        sha256(rig.data.subarray(bytes - HISTORY_BYTES)),
        'at the end the history is the last MiB',
      );
      assert.equal(rig.device.history?.totalBytes, bytes);
      assertSpliced(rig.output, bytes, 0.5);
      await first.cmd('close').catch(() => '');
      void watching.catch(() => undefined);
      report(
        `${kind} fan-out history: second viewer came at byte ${atAttach}; ${pct(rig.output.stats.spliced, bytes)} spliced, ${rig.output.stats.switches} path changes`,
      );
    });
  }

  it('tcp, <cd:history> without <log>, smaller than one tee (100003 B): the ring wraps within a transfer; settled mid-stream and at the end, the history is exactly the last 100003 bytes', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 16 * MiB;
    const size = 100003;
    const rig = await Rig.make(ctx, root, 'tcp', bytes, { noLog: true, historyBytes: size });
    const peer = await rig.client();
    await waitFor(() => rig.device.hub.size === 1, 'the client to be seen', 5000);
    rig.start();
    const reading = rig.read(peer, bytes, 8_000_000);
    await waitFor(() => rig.output.stats.spliced > 4 * MiB, 'the kernel path to move 4 MiB', 10000);
    // Ends the run: the next one writes its ring from offset 0 again.
    rig.device.settleOutput();
    const taken = rig.device.counters.bytesFromGuest;
    assert.ok(
      rig.device.history?.snapshot().equals(rig.data.subarray(taken - size, taken)),
      `settled at byte ${taken}: the history is the last ${size} B before it`,
    );
    assert.equal(rig.device.history?.totalBytes, taken);
    const r = await reading;
    assert.equal(r.got, bytes);
    assert.equal(r.sha, sha256(rig.data), 'sha256 of what the client got');
    await rig.output.ended;
    assert.ok(rig.device.history?.snapshot().equals(rig.data.subarray(bytes - size)), `the history is the last ${size} B`);
    assert.equal(rig.device.history?.totalBytes, bytes);
    assert.equal(rig.device.counters.bytesFromGuest, bytes);
    assertSpliced(rig.output, bytes, 0.8);
    report(`tcp small history ring: ${pct(rig.output.stats.spliced, bytes)} spliced, ${rig.output.stats.switches} path changes`);
  });

  it('tcp: a <log> that stops taking bytes mid-stream (RLIMIT_FSIZE) holds the stream up to the limit; the client still gets every byte, in order', {
    timeout: 60000,
  }, async (ctx) => {
    // The thread's splice into the log then fails as on a full disk, after a partial write.
    // What the run logged and had not sent, and what it had not logged, must still reach the
    // client (and the history) in order, by the JavaScript path, which reports the log's error.
    const limiter = fileSizeLimit();
    if (typeof limiter === 'string') {
      ctx.skip(limiter);
      return;
    }
    const bytes = 16 * MiB;
    // Odd, so the limit falls inside a chunk.
    const limit = 5 * MiB + 12345;
    const rig = await Rig.make(ctx, root, 'tcp', bytes, { logAttrs: " append='off'" });
    const errors: string[] = [];
    rig.device.on('error', (e: Error & { code?: string }) => errors.push(`${e.code ?? ''}: ${e.message}`));
    const peer = await rig.client();
    await waitFor(() => rig.device.hub.size === 1, 'the client to be seen', 5000);
    const r = await limiter.within(limit, async () => {
      rig.start();
      const got = await rig.read(peer, bytes);
      await rig.output.ended;
      return got;
    });
    assert.equal(r.got, bytes);
    assert.equal(r.sha, sha256(rig.data), 'sha256 of what the client got: every byte, in order, across the log failing');
    const log = fs.readFileSync(rig.log);
    assert.equal(log.length, limit, 'the log grew to the limit');
    assert.equal(sha256(log), sha256(rig.data.subarray(0, limit)), 'sha256 of the log: the stream up to the limit');
    assert.ok(rig.output.stats.spliced > 0, 'the data-plane thread moved bytes before the log failed');
    assert.deepEqual(rig.device.counters, { bytesFromGuest: bytes, bytesToGuest: 0, dropped: 0 });
    assert.equal(rig.device.hub.clients()[0]?.bytesSent, bytes, "the client's bytes-sent");
    assert.equal(sha256(rig.device.history?.snapshot() ?? Buffer.alloc(0)), sha256(rig.data.subarray(bytes - HISTORY_BYTES)), 'the history is the last MiB');
    assert.ok(errors.length >= 1, 'the log error was reported');
    assert.match(errors[0] ?? '', /File too large|EFBIG/);
    report(`tcp <log> at RLIMIT_FSIZE: ${pct(rig.output.stats.spliced, bytes)} by the thread; ${errors.join('; ')}`);
  });

  it("tcp: <log file='/dev/null'> keeps the history on the JavaScript path (it cannot be read back from the log), and exact", {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 8 * MiB;
    const rig = await Rig.make(ctx, root, 'tcp', bytes, { logFile: '/dev/null' });
    const peer = await rig.client();
    await waitFor(() => rig.device.hub.size === 1, 'the client to be seen', 5000);
    rig.start();
    const r = await rig.read(peer, bytes);
    assert.equal(r.got, bytes);
    assert.equal(r.sha, sha256(rig.data), 'sha256 of what the client got');
    await rig.output.ended;
    assert.equal(sha256(rig.device.history?.snapshot() ?? Buffer.alloc(0)), sha256(rig.data.subarray(bytes - HISTORY_BYTES)), 'the history is the last MiB');
    assert.equal(rig.output.stats.spliced, 0, 'nothing went by the kernel path');
  });

  it('tcp: the log rotated mid-stream (odd size, 100 backups): the files joined are the stream, each full one exactly the rotation size; the client gets every byte', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 20 * MiB;
    const size = 1_000_003;
    const rig = await Rig.make(ctx, root, 'tcp', bytes, { extra: `<cd:rotate size='${size}' backups='100'/>`, pause: { everyBytes: 5 * MiB, ms: 60 } });
    const peer = await rig.client();
    await waitFor(() => rig.device.hub.size === 1, 'the client to be seen', 5000);
    rig.start();
    const r = await rig.read(peer, bytes);
    assert.equal(r.got, bytes);
    assert.equal(r.sha, sha256(rig.data), 'sha256 of what the client got');
    await rig.output.ended;
    const { files, bytes: joined } = readRotated(rig.log);
    assert.equal(joined.length, bytes, 'the files hold every byte');
    assert.equal(sha256(joined), sha256(rig.data), 'sha256 of the files joined oldest first');
    assert.equal(files.length, Math.ceil(bytes / size));
    for (const f of files.slice(0, -1)) assert.equal(fs.statSync(f).size, size, `${path.basename(f)} is exactly the rotation size`);
    assertSpliced(rig.output, bytes, 0.5);
    assert.equal(sha256(rig.device.history?.snapshot() ?? Buffer.alloc(0)), sha256(rig.data.subarray(bytes - HISTORY_BYTES)), 'the history is the last MiB');
    report(`rotated log: ${files.length} files, ${pct(rig.output.stats.spliced, bytes)} spliced, ${rig.output.stats.switches} path changes`);
  });

  it('pty: the reader and the log each get every byte, most of it teed and spliced to the master', { timeout: 60000 }, async (ctx) => {
    const bytes = 8 * MiB;
    const dir = fs.mkdtempSync(path.join(root, 'pty'));
    const data = randomBytes(bytes);
    fs.writeFileSync(path.join(dir, 'data'), data);
    const log = path.join(dir, 'device.log');
    const domain = await open(domainXml(`<serial type='pty'><log file='${log}'/><target port='0'/><cd:history size='${HISTORY_BYTES}'/></serial>`), {
      logDir: dir,
      ptyPollMs: 10,
    });
    const device = domain.device('serial0');
    device.on('error', () => {});
    let guest: ChildProcess | undefined;
    const reader = spawn(PYTHON, ['-S', '-c', PTY_READER, device.ptyPath ?? '', String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
    ctx.after(async () => {
      reader.kill();
      guest?.kill('SIGKILL');
      await domain.stop();
    });
    let text = '';
    reader.stdout.on('data', (b: Buffer) => {
      text += b.toString();
    });
    await waitFor(() => text.startsWith('open\n') && device.hub.size === 1, 'the pty reader to be seen', 5000);
    const pipe = guestPipe();
    try {
      guest = spawn(PYTHON, ['-S', '-c', FILE_GUEST_PY, path.join(dir, 'data'), path.join(dir, 'progress'), '0', '0'], {
        stdio: ['ignore', pipe.writeFd, 'inherit'],
      });
    } finally {
      fs.closeSync(pipe.writeFd);
    }
    const output = device.pipeFrom(pipe.readFd);
    await new Promise((resolve) => reader.on('close', resolve));
    assert.equal(text, `open\n${bytes} ${sha256(data)}\n`, 'the pty reader got every byte, in order');
    await output.ended;
    const logged = fs.readFileSync(log);
    assert.equal(logged.length, bytes);
    assert.equal(sha256(logged), sha256(data), 'sha256 of the log');
    assert.equal(device.counters.dropped, 0);
    assertSpliced(output, bytes, 0.8);
    report(`pty: ${pct(output.stats.spliced, bytes)} spliced, ${output.stats.waits} waits for the reader`);
  });

  it("unix: <log append='on'> keeps what the file held and appends the stream after it", { timeout: 60000 }, async (ctx) => {
    const bytes = 8 * MiB;
    const head = Buffer.from('what the log held before\n');
    const rig = await Rig.make(ctx, root, 'unix', bytes, { logAttrs: " append='on'", logHead: head, pause: { everyBytes: 2 * MiB, ms: 60 } });
    const peer = await rig.client();
    await waitFor(() => rig.device.hub.size === 1, 'the client to be seen', 5000);
    rig.start();
    const r = await rig.read(peer, bytes);
    assert.equal(r.sha, sha256(rig.data));
    await rig.output.ended;
    rig.assertLogWhole(head);
    assertSpliced(rig.output, bytes, 0.5);
  });
});
