/**
 * The kernel path: a device reading its guest's output from a pipe
 * (`Chardev.pipeFrom`), whose only client is the writer on a plain socket, moves the bytes
 * by splice(2) — under the same flow control as the JavaScript path, and
 * switching to and from that path without a lost, repeated or reordered byte.
 *
 * Real processes on both ends: the guest is Python writing a file of random bytes the test
 * made (so every byte's place in the stream is known) to a `guestPipe`, 64 KiB a write,
 * recording its progress after each; the clients are Python sockets that read at a set
 * pace, stall, keep what they read, send input. The device runs in this process, so the
 * test can see which path moved the bytes (`GuestOutput.stats`).
 *
 * About 25 s in all: the slow and stalled readers take the time their scenario says.
 * The churn test reuses test/reliability/churner.ts (clients reading a little, nothing, or
 * resetting) against the kernel path, and checks that the counters add up.
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
import { PYTHON, sha256, tmp } from '../reliability/helpers.ts';
import { open } from '../../src/index.ts';
import type { Chardev, Domain } from '../../src/index.ts';
import { type GuestOutput, guestPipe } from '../../src/core/guest-output.ts';
import type { ClientInfo } from '../../src/core/hub.ts';
import { dataPlane } from '../../src/platform/data-plane.ts';
import { Churner, type ChurnTotals } from '../reliability/churner.ts';

const MiB = 1024 * 1024;

/** A measured figure, on stderr (TAP shows it as a comment). */
function report(text: string): void {
  process.stderr.write(`splice: ${text}\n`);
}

/**
 * The guest. argv: DATA PROGRESS INPUT GO STOPS. Writes DATA to stdout, 64 KiB a write, as
 * fast as the pipe takes it; after each write PROGRESS holds the bytes written (12 digits).
 * Before the first byte it waits for the file GO.0 to exist, and at each offset in STOPS
 * (comma separated, `-` for none; the length of DATA for a stop before exiting) for GO.1,
 * GO.2, …. A thread reads stdin the whole time and keeps `COUNT SHA256` of what it got in
 * INPUT. Exits once DATA is written (and its last stop passed).
 */
const GUEST = String.raw`
import hashlib, os, sys, threading, time
data, progress, inp, go = open(sys.argv[1], 'rb').read(), sys.argv[2], sys.argv[3], sys.argv[4]
stops = [int(x) for x in sys.argv[5].split(',')] if sys.argv[5] != '-' else []
def reader():
    h, n = hashlib.sha256(), 0
    while True:
        c = os.read(0, 65536)
        if not c:
            return
        h.update(c)
        n += len(c)
        with open(inp + '.tmp', 'w') as f:
            f.write('%d %s' % (n, h.hexdigest()))
        os.rename(inp + '.tmp', inp)
threading.Thread(target=reader, daemon=True).start()
pf = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.pwrite(pf, b'%012d' % 0, 0)
def wait_go(k):
    while not os.path.exists('%s.%d' % (go, k)):
        time.sleep(0.01)
wait_go(0)
view, done, k = memoryview(data), 0, 0
for end in sorted(set(stops + [len(data)])):
    while done < end:
        w = os.write(1, view[done:min(end, done + 65536)])
        done += w
        os.pwrite(pf, b'%012d' % done, 0)
    if end in stops:
        k += 1
        wait_go(k)
`;

/**
 * A client. argv: PORT. Answers `connected`, then one line per command:
 *  read N RATE STALL_AT STALL_S FILE [QUIET_S]
 *                                     read N bytes (RATE bytes/s, 0 unpaced; after STALL_AT
 *                                     bytes, -1 never, nothing for STALL_S s), keep them in
 *                                     FILE → `read GOT SHA END` (END done, eof, timeout: nothing
 *                                     came for QUIET_S s, default 20)
 *  send FILE                          send FILE's bytes from a thread (while reading) → `sending`
 *  sent                               wait for that thread → `sent N`
 *  close                              → `closed`
 */
const CLIENT = String.raw`
import hashlib, socket, sys, threading, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
def out(*a):
    print(*a, flush=True)
out('connected')
sender, sent = None, [0]
def send_file(name):
    data = open(name, 'rb').read()
    s.sendall(data)
    sent[0] = len(data)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, *a = line.split()
    if cmd == 'read':
        n, rate, stall_at, stall_s, keep = int(a[0]), float(a[1]), int(a[2]), float(a[3]), open(a[4], 'wb')
        got, h, end, t0 = 0, hashlib.sha256(), 'done', None
        s.settimeout(float(a[5]) if len(a) > 5 else 20)
        try:
            while got < n:
                if stall_at >= 0 and got >= stall_at:
                    time.sleep(stall_s)
                    stall_at = -1
                c = s.recv(min(65536, n - got))
                if not c:
                    end = 'eof'
                    break
                if t0 is None:
                    t0 = time.monotonic()
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
        out('read', got, h.hexdigest(), end)
    elif cmd == 'send':
        sender = threading.Thread(target=send_file, args=(a[0],))
        sender.start()
        out('sending')
    elif cmd == 'sent':
        sender.join()
        out('sent', sent[0])
    elif cmd == 'close':
        s.close()
        out('closed')
`;

interface Read {
  readonly got: number;
  readonly sha: string;
  readonly end: string;
  readonly data: Buffer;
}

/** One test's guest, device and clients; everything is stopped when the test ends. */
class Rig {
  readonly dir: string;
  readonly data: Buffer;
  readonly domain: Domain;
  readonly device: Chardev;
  readonly output: GuestOutput;
  readonly child: ChildProcess;
  readonly port: number;
  readonly #go: string;
  #goes = 0;
  readonly #peers: PyPeer[] = [];
  /** Final figures of every client that left. */
  readonly left: ClientInfo[] = [];

  private constructor(dir: string, data: Buffer, domain: Domain, child: ChildProcess, output: GuestOutput, go: string) {
    this.dir = dir;
    this.data = data;
    this.domain = domain;
    this.device = domain.device('serial0');
    this.child = child;
    this.output = output;
    this.port = Number(this.device.boundService);
    this.#go = go;
    this.device.on('client', (change, info) => {
      if (change === 'detached') this.left.push(info);
    });
  }

  /** A tcp raw server device (`extra` inside <serial>) fed by a guest writing `bytes` random bytes, pausing at `stops`. */
  static async start(ctx: TestContext, root: string, bytes: number, options: { extra?: string; stops?: readonly number[] } = {}): Promise<Rig> {
    const dir = fs.mkdtempSync(path.join(root, 'r'));
    const data = randomBytes(bytes);
    const dataFile = path.join(dir, 'data');
    fs.writeFileSync(dataFile, data);
    const extra = options.extra ?? '';
    const xml = domainXml(`<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/><target port='0'/>${extra}</serial>`);
    const domain = await open(xml, { logDir: dir });
    const go = path.join(dir, 'go');
    const pipe = guestPipe();
    let child: ChildProcess;
    try {
      child = spawn(PYTHON, ['-S', '-c', GUEST, dataFile, path.join(dir, 'progress'), path.join(dir, 'input'), go, options.stops?.join(',') ?? '-'], {
        stdio: ['pipe', pipe.writeFd, 'inherit'],
      });
    } finally {
      fs.closeSync(pipe.writeFd);
    }
    child.stdin?.on('error', () => {});
    const device = domain.device('serial0');
    // Input as `chardev run` wires it (without its backpressure: the test sends a few MiB).
    device.on('data', (b) => void child.stdin?.write(b));
    const rig = new Rig(dir, data, domain, child, device.pipeFrom(pipe.readFd), go);
    ctx.after(() => rig.stop());
    // The thread loads in a moment (longer under tsx); the tests time their clients from the guest's start.
    await dataPlane().ready;
    return rig;
  }

  async client(): Promise<PyPeer> {
    const peer = new PyPeer(CLIENT, [String(this.port)]);
    this.#peers.push(peer);
    assert.equal(await peer.line(10000), 'connected');
    return peer;
  }

  /** Let the guest go on (its first byte, then past each stop). */
  go(): void {
    fs.writeFileSync(`${this.#go}.${this.#goes++}`, '');
  }

  progress(): number {
    try {
      return Number(fs.readFileSync(path.join(this.dir, 'progress'), 'latin1') || '0');
    } catch {
      return 0;
    }
  }

  /** The guest's input as it counted it: `[count, sha256]`. */
  input(): [number, string] {
    try {
      const [n, sha] = fs.readFileSync(path.join(this.dir, 'input'), 'latin1').split(' ');
      return [Number(n), sha ?? ''];
    } catch {
      return [0, ''];
    }
  }

  /** Resolves with the progress once it has not moved for `stillMs`: the guest waits in write(). */
  async blocked(stillMs = 1000, timeoutMs = 8000): Promise<number> {
    let last = this.progress();
    let since = Date.now();
    const deadline = since + timeoutMs;
    for (;;) {
      await sleep(50);
      const now = this.progress();
      if (now !== last) {
        last = now;
        since = Date.now();
      } else if (now > 0 && Date.now() - since >= stillMs) {
        return now;
      }
      assert.ok(Date.now() < deadline, `the guest's progress never stopped (at ${now} of ${this.data.length})`);
    }
  }

  /** `read …` on `peer`, with what it read. */
  async read(peer: PyPeer, n: number, rate = 0, stall?: { at: number; seconds: number }, quietS = 20): Promise<Read> {
    const file = path.join(this.dir, `read-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    const budget = 30000 + (rate > 0 ? (n / rate) * 1000 : 0) + (stall?.seconds ?? 0) * 1000;
    const line = await peer.cmd(`read ${n} ${rate} ${stall?.at ?? -1} ${stall?.seconds ?? 0} ${file} ${quietS}`, budget);
    const m = /^read (\d+) ([0-9a-f]{64}) (\w+)$/.exec(line);
    assert.ok(m, line);
    return { got: Number(m[1]), sha: m[2] as string, end: m[3] as string, data: fs.readFileSync(file) };
  }

  /** The device's figures for its current (or last) client. */
  async stop(): Promise<void> {
    await Promise.all(this.#peers.map((p) => p.kill()));
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.domain.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A viewer's stream: the read-only notice, then parts of the guest's stream, each after a
 * notice of how much it missed, which must be exactly the gap before it.
 */
function viewerParts(rig: Rig, data: Buffer, what: string): { from: number; guestBytes: number; notices: number; toldMissed: number } {
  const text = data.toString('latin1');
  const head = /^\r\n\[chardev: read-only: [^\]]*\]\r\n/.exec(text);
  let at = head === null ? 0 : head[0].length;
  const missed = /\r\n\[chardev: (\d+) bytes of output were dropped while this client was not reading\]\r\n/g;
  let from = -1;
  let next = -1;
  let guestBytes = 0;
  let notices = 0;
  let toldMissed = 0;
  for (;;) {
    missed.lastIndex = at;
    const m = missed.exec(text);
    const end = m === null ? data.length : m.index;
    const part = data.subarray(at, end);
    if (part.length > 0) {
      if (from < 0) {
        next = rig.data.indexOf(part.subarray(0, 64));
        assert.ok(next >= 0, `${what}: its first part is in the guest's stream`);
        // Output it missed before its first part counts from where it joined.
        from = next - toldMissed;
      }
      assertSlice(rig, part, next, `${what}, part ${notices + 1}`);
      next += part.length;
      guestBytes += part.length;
    }
    if (m === null) break;
    const n = Number(m[1]);
    notices++;
    toldMissed += n;
    if (from >= 0) next += n;
    at = m.index + m[0].length;
  }
  return { from: Math.max(from, 0), guestBytes, notices, toldMissed };
}

const share = (part: number, whole: number): string => `${((part / whole) * 100).toFixed(1)} %`;

/**
 * A stream went by the kernel path but for the reads that found the guest streaming (one
 * per time the pipe ran empty: then libuv reads, and a full read hands back to splice).
 */
function assertMostlySpliced(spliced: number, bytes: number): void {
  assert.ok(spliced >= 0.9 * bytes, `${spliced} of ${bytes} bytes (${share(spliced, bytes)}) went by splice, not at least 90 %`);
}

/** `got` is exactly the guest's stream from `from` on (its first `got.length` bytes). */
function assertSlice(rig: Rig, got: Buffer, from: number, what: string): void {
  const want = rig.data.subarray(from, from + got.length);
  assert.equal(got.length, want.length, `${what}: ${got.length} bytes, but the stream has only ${want.length} from ${from}`);
  if (got.equals(want)) return;
  let i = 0;
  while (i < got.length && got[i] === want[i]) i++;
  assert.fail(`${what}: differs from the guest's stream at byte ${i} of ${got.length} (stream offset ${from + i})`);
}

describe('the kernel path: splice from the guest pipe to a plain socket client (real processes, sha256)', { concurrency: 1 }, () => {
  let root = '';
  before(() => {
    root = tmp('splice');
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('64 MiB to one client reading as fast as it can: every byte, in order, ≥ 90 % of it spliced; the device counts it', { timeout: 60000 }, async (ctx) => {
    const bytes = 64 * MiB;
    const rig = await Rig.start(ctx, root, bytes);
    const peer = await rig.client();
    rig.go();
    const t0 = Date.now();
    const r = await rig.read(peer, bytes);
    const seconds = (Date.now() - t0) / 1000;
    assert.equal(r.end, 'done');
    assert.equal(r.got, bytes);
    assert.equal(r.sha, sha256(rig.data), 'sha256: every byte, in order');
    // The guest exits after its last write: end of file, and the output is done.
    await rig.output.ended;
    assertMostlySpliced(rig.output.stats.spliced, bytes);
    assert.deepEqual(rig.device.counters, { bytesFromGuest: bytes, bytesToGuest: 0, dropped: 0 });
    assert.equal(rig.device.hub.clients()[0]?.bytesSent, bytes, "the client's bytes-sent");
    report(
      `64 MiB in ${seconds.toFixed(2)} s (${(bytes / seconds / 1e6).toFixed(0)} MB/s, hashing included); ${share(rig.output.stats.spliced, bytes)} spliced, ${rig.output.stats.switches} path changes`,
    );
  });

  it('a slow reader (4 MB/s) holds the guest and gets every byte; the kernel path stays on', { timeout: 60000 }, async (ctx) => {
    const bytes = 12 * MiB;
    const rate = 4_000_000;
    const rig = await Rig.start(ctx, root, bytes);
    const peer = await rig.client();
    rig.go();
    const reading = rig.read(peer, bytes, rate);
    // Unheld, the guest writes 12 MiB into the pipe in a few ms; held, it is still writing
    // seconds later, a few MB (the pipe, the socket's buffers) ahead of the reader.
    await sleep(1500);
    const at = rig.progress();
    assert.ok(at > 0 && at < bytes, `the guest is held: it wrote ${at} of ${bytes} bytes in 1.5 s`);
    const r = await reading;
    assert.equal(r.got, bytes);
    assert.equal(r.sha, sha256(rig.data));
    await rig.output.ended;
    assertMostlySpliced(rig.output.stats.spliced, bytes);
    assert.ok(rig.output.stats.waits > 0, 'the guest waited for the client (a full socket)');
    report(`slow reader: held at ${at} B after 1.5 s; ${rig.output.stats.waits} waits for the socket`);
  });

  it('a stalled reader holds the guest (its progress stops for 4 s), then gets every byte', { timeout: 60000 }, async (ctx) => {
    const bytes = 16 * MiB;
    const rig = await Rig.start(ctx, root, bytes);
    const peer = await rig.client();
    rig.go();
    const t0 = Date.now();
    // The client reads nothing for 4 s, then everything.
    const reading = rig.read(peer, bytes, 0, { at: 0, seconds: 4 });
    const held = await rig.blocked(1000);
    // While it waits nothing spins: the data-plane thread waits in one poll for the socket's room.
    const polls0 = dataPlane().wakeups;
    const cpu0 = process.cpuUsage();
    await sleep(t0 + 3500 - Date.now());
    assert.equal(rig.progress(), held, `the guest wrote nothing more while the client read nothing (${held} bytes written)`);
    const polls = dataPlane().wakeups - polls0;
    const cpu = process.cpuUsage(cpu0);
    assert.ok(polls <= 2, `the data-plane thread woke ${polls} times while the client read nothing`);
    assert.ok(cpu.user + cpu.system < 200_000, `${(cpu.user + cpu.system) / 1000} ms of CPU while the client read nothing`);
    assert.ok(held < bytes);
    const r = await reading;
    assert.equal(r.got, bytes);
    assert.equal(r.sha, sha256(rig.data));
    await rig.output.ended;
    assertMostlySpliced(rig.output.stats.spliced, bytes);
    assert.equal(rig.device.counters.dropped, 0);
    report(`stalled reader: the guest stood at ${held} of ${bytes} B (in its pipe and the socket's buffers; chardev holds none)`);
  });

  it("a viewer attaching mid-stream (<cd:clients max='2'/>) joins the kernel path (a fan-out run) and leaving keeps it: the writer gets every byte, the viewer a contiguous part", {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 32 * MiB;
    const rig = await Rig.start(ctx, root, bytes, { extra: "<cd:clients max='2'/>" });
    const writer = await rig.client();
    rig.go();
    // Paced, so the stream lasts while the viewer comes and goes (~4 s).
    const writing = rig.read(writer, bytes, 8_000_000);
    await waitFor(() => rig.output.stats.spliced > 4 * MiB, 'the kernel path to move 4 MiB', 10000);
    assert.equal(rig.output.path, 'kernel');
    const viewer = await rig.client();
    await waitFor(() => rig.device.hub.size === 2, 'the viewer attached', 5000);
    const splicedBefore = rig.output.stats.spliced;
    const seen = await rig.read(viewer, 4 * MiB);
    assert.equal(seen.end, 'done');
    assert.ok(
      rig.output.stats.spliced >= splicedBefore + 3 * MiB,
      `the viewer's share went by the kernel path too (${rig.output.stats.spliced - splicedBefore} bytes spliced meanwhile)`,
    );
    assert.equal(await viewer.cmd('close'), 'closed');
    await waitFor(() => rig.device.hub.size === 1, 'the viewer left', 5000);
    const w = await writing;
    assert.equal(w.got, bytes);
    if (w.sha !== sha256(rig.data)) assertSlice(rig, w.data, 0, 'the writer');
    assert.equal(w.sha, sha256(rig.data), 'sha256: the writer got every byte, in order, across the changes');
    await rig.output.ended;
    assertMostlySpliced(rig.output.stats.spliced, bytes);
    // The viewer is told who the writer is first (inline, a raw socket), then gets the live
    // stream from wherever it was when it came: a contiguous part of the guest's stream.
    const text = seen.data.toString('latin1');
    const notice = /^\r\n\[chardev: read-only: [^\]]*\]\r\n/.exec(text);
    assert.ok(notice, `the viewer's first bytes are the read-only notice: ${JSON.stringify(text.slice(0, 80))}`);
    const live = seen.data.subarray(notice[0].length);
    const from = rig.data.indexOf(live.subarray(0, 64));
    assert.ok(from >= 0, "the viewer's stream is part of the guest's");
    assertSlice(rig, live, from, 'the viewer');
    const info = rig.left.find((c) => c.role === 'viewer');
    assert.ok(info !== undefined, 'the viewer left');
    assert.ok(info.bytesSent >= live.length, `the hub counted what the kernel path sent the viewer (${info.bytesSent} ≥ ${live.length})`);
    report(
      `viewer: joined at byte ${from}, read ${live.length} B; ${rig.output.stats.spliced} of ${bytes} B spliced, ${rig.output.stats.switches} path changes`,
    );
  });

  it("fan-out on the kernel path (<cd:clients max='8'/>): a writer and six viewers — three fast, one stalled, one slow, one leaving and one arriving mid-stream", {
    timeout: 120000,
  }, async (ctx) => {
    const bytes = 32 * MiB;
    const rig = await Rig.start(ctx, root, bytes, { extra: "<cd:clients max='8'/>" });
    const writer = await rig.client();
    const fast = [await rig.client(), await rig.client(), await rig.client()];
    const stalled = await rig.client();
    const slow = await rig.client();
    const leaving = await rig.client();
    await waitFor(() => rig.device.hub.size === 7, 'seven clients attached', 5000);
    const ids = rig.device.hub.clients().map((c) => c.id);
    rig.go();
    // The writer paced (~4 s), so the others come and go while the stream lasts.
    const writing = rig.read(writer, bytes, 8_000_000);
    // Notices come on top of the guest's bytes: each viewer reads until nothing came for 3 s.
    const more = bytes + MiB;
    const fastReads = fast.map((f) => rig.read(f, more, 0, undefined, 3));
    const stalledRead = rig.read(stalled, more, 0, { at: 0, seconds: 6 }, 3);
    const slowRead = rig.read(slow, more, 1_000_000, undefined, 3);
    const leftRead = await rig.read(leaving, 2 * MiB);
    assert.equal(await leaving.cmd('close'), 'closed');
    await waitFor(() => rig.output.stats.spliced > 12 * MiB, '12 MiB through the kernel path', 20000);
    const arriving = await rig.client();
    const arrivingRead = rig.read(arriving, more, 0, undefined, 3);
    const w = await writing;
    assert.equal(w.got, bytes);
    assert.equal(w.sha, sha256(rig.data), 'sha256: the writer got every byte, in order');
    await rig.output.ended;
    const reads = await Promise.all([...fastReads, stalledRead, slowRead, arrivingRead]);
    const stats = rig.output.stats;
    assertMostlySpliced(stats.spliced, bytes);
    const infos = new Map(rig.device.hub.clients().map((c) => [c.id, c]));
    const viewerInfo = (i: number): ClientInfo => infos.get(ids[i] as number) as ClientInfo;
    const names = ['fast 1', 'fast 2', 'fast 3', 'stalled', 'slow'];
    for (let i = 0; i < reads.length; i++) {
      const name = names[i] ?? 'arriving';
      const info = i < names.length ? viewerInfo(i + 1) : [...infos.values()].find((c) => !ids.includes(c.id));
      assert.ok(info !== undefined, `${name}: still attached`);
      const got = viewerParts(rig, (reads[i] as Read).data, name);
      // What the hub counted for it is what it got and what it missed: nothing else.
      assert.equal(got.guestBytes, info.bytesSent, `${name}: the bytes it received are the bytes counted sent to it`);
      assert.equal(got.toldMissed <= info.bytesMissed, true, `${name}: told of ${got.toldMissed} missed bytes, counted ${info.bytesMissed}`);
      assert.equal(got.from + got.guestBytes + info.bytesMissed, bytes, `${name}: from byte ${got.from}, received + missed = the rest of the stream`);
      if (info.bytesMissed === 0) assert.equal(got.notices, 0, `${name}: missed nothing, told nothing`);
      report(`fan-out ${name}: from ${got.from}, ${got.guestBytes} B in ${got.notices + 1} part(s), missed ${info.bytesMissed} B (told ${got.toldMissed})`);
    }
    // The stalled one took nothing for 6 s: it missed output, and got a prefix first.
    assert.ok(viewerInfo(4).bytesMissed > 0, 'the stalled viewer missed output');
    const leftText = leftRead.data.toString('latin1');
    const leftNotice = /^\r\n\[chardev: read-only: [^\]]*\]\r\n/.exec(leftText);
    assert.ok(leftNotice);
    assertSlice(rig, leftRead.data.subarray(leftNotice[0].length), 0, 'the viewer that left');
    assert.equal(rig.device.counters.dropped, rig.device.hub.missedBytes, "the device's dropped count is the viewers' missed bytes: nothing else was lost");
    report(`fan-out: ${stats.spliced} of ${bytes} B spliced, ${stats.switches} path changes, ${rig.device.hub.missedBytes} B missed by viewers`);
  });

  it('the client leaving mid-stream and another coming: output while nobody is there is dropped and counted, the next client gets the stream from then on, spliced; input reaches the guest whole meanwhile', {
    timeout: 60000,
  }, async (ctx) => {
    const phase = 16 * MiB;
    // The guest stops after phase one, and again at the end (so it is still there to read its input).
    const rig = await Rig.start(ctx, root, 2 * phase, { stops: [phase, 2 * phase] });
    const first = await rig.client();
    rig.go();
    // The first client reads 4 MiB and leaves while the guest is held on it.
    const a = await rig.read(first, 4 * MiB);
    assertSlice(rig, a.data, 0, 'the first client');
    await rig.blocked(300);
    assert.equal(await first.cmd('close'), 'closed');
    // Nobody there: the guest goes on to its stop, its output dropped (QEMU does the same).
    await waitFor(() => rig.progress() === phase, 'the guest to write the rest of phase one to nobody', 10000);
    await waitFor(() => rig.left.length === 1, 'the first client to be gone', 5000);
    await waitFor(() => rig.device.counters.bytesFromGuest === phase, 'the device to take all of phase one', 5000);
    const sentFirst = rig.left[0]?.bytesSent ?? -1;
    assert.ok(sentFirst >= a.got, `bytes-sent ${sentFirst} covers what the first client read (${a.got})`);
    assert.equal(rig.device.counters.dropped, phase - sentFirst, 'what nobody got is counted as dropped');

    const second = await rig.client();
    const splicedBefore = rig.output.stats.spliced;
    // Input the other way while the output streams: 8 MiB from the client to the guest.
    const input = randomBytes(8 * MiB);
    const inputFile = path.join(rig.dir, 'to-guest');
    fs.writeFileSync(inputFile, input);
    assert.equal(await second.cmd(`send ${inputFile}`), 'sending');
    rig.go();
    const b = await rig.read(second, phase);
    assert.equal(b.end, 'done');
    assertSlice(rig, b.data, phase, 'the second client');
    assert.equal(await second.cmd('sent', 20000), `sent ${input.length}`);
    await waitFor(
      () => rig.input()[0] === input.length,
      `the guest to read all its input (it has ${rig.input()[0]} of ${input.length}; the device passed on ${rig.device.counters.bytesToGuest})`,
      10000,
    );
    assert.equal(rig.input()[1], sha256(input), "sha256 of the guest's input");
    rig.go();
    await rig.output.ended;
    assertMostlySpliced(rig.output.stats.spliced - splicedBefore, phase);
    const c = rig.device.counters;
    assert.equal(c.bytesFromGuest, 2 * phase);
    assert.equal(c.bytesToGuest, input.length);
    assert.equal(c.dropped, phase - sentFirst);
    report(`leave and return: the first client read ${a.got} B (sent ${sentFirst}), ${c.dropped} B dropped while nobody was there; 8 MiB of input meanwhile`);
  });

  it('clients connecting and leaving many times a second (reading a little, nothing, resetting): every byte the guest wrote is sent to exactly one client or counted dropped, and the guest runs to its end', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 64 * MiB;
    // The guest stops every 4 MiB until let go: unheld, it would write its 64 MiB within a
    // second, and whether some of it met a client on the kernel path would be luck.
    const stops = Array.from({ length: 15 }, (_, i) => (i + 1) * 4 * MiB);
    const rig = await Rig.start(ctx, root, bytes, { stops });
    const churners = [new Churner(rig.port, 1), new Churner(rig.port, 2)];
    let totals: ChurnTotals[] = [];
    let released = 0;
    const release = (): void => {
      if (released > stops.length) return;
      rig.go();
      released++;
    };
    try {
      release();
      const pacer = setInterval(release, 150);
      try {
        await waitFor(() => rig.left.length >= 200 && rig.output.stats.spliced > 0, 'some hundred clients, some of the output spliced', 20000);
      } finally {
        clearInterval(pacer);
      }
    } finally {
      totals = await Promise.all(churners.map((c) => c.stop()));
      while (released <= stops.length) release();
    }
    // Nobody is left to hold the guest: the rest is dropped, and the output ends with the guest.
    await rig.output.ended;
    const c = rig.device.counters;
    assert.equal(c.bytesFromGuest, bytes, 'the device took every byte the guest wrote');
    const sent = rig.left.reduce((n, info) => n + info.bytesSent, 0) + rig.device.hub.clients().reduce((n, info) => n + info.bytesSent, 0);
    assert.equal(sent + c.dropped, bytes, `sent to clients (${sent}) and dropped (${c.dropped}) add up to what the guest wrote`);
    const received = totals.reduce((n, t) => n + t.received, 0);
    assert.ok(received <= sent, `the clients received ${received} of the ${sent} bytes sent to them (the rest went down with their connections)`);
    report(
      `churn: ${rig.left.length} clients, ${share(rig.output.stats.spliced, bytes)} of the stream spliced, ${sent} B sent, ${c.dropped} B dropped, ${rig.output.stats.switches} path changes`,
    );
  });
});
