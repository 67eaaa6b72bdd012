/**
 * QEMU's flow control end to end over every network transport: `chardev run` with
 * plain libvirt XML and a guest that writes as fast as it can (Python: random bytes, its own
 * sha256, and after every write how far it got), against real clients — Python's socket and
 * ssl modules, inetutils' `telnet` — that read slowly, stall, or hang. The client's count
 * and sha256 must equal the guest's; the guest's progress, read from its own file, shows it
 * waited while the client did not read.
 *
 * Slow: about 45 s in all (90 s of scenarios, three at a time). Each test runs a reader at a
 * fixed rate or waits out a stall of seconds: the scenario is the time it takes (SLOW_RATE,
 * STALL_MS and the sizes below).
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PyPeer, STREAM_PEER } from '../backends/python-peer.ts';
import { domainXml, q, run, waitFor } from '../core/helpers.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { Proc } from '../helpers/proc.ts';
import { NEGOTIATE, pyQmp, type StepResult } from '../helpers/qmp-py.ts';
import { ChardevProcess, PYTHON, sha256, tmp } from '../reliability/helpers.ts';
import { readableBytes } from '../../src/platform/splice.ts';

const MiB = 1024 * 1024;

/** A measured figure, on stderr (TAP shows it as a comment), prefixed for grepping a CI log. */
function report(text: string): void {
  process.stderr.write(`flow: ${text}\n`);
}
/** QEMU's telnet greeting: IAC WILL ECHO, IAC WILL SGA, IAC WILL BINARY, IAC DO BINARY. */
const GREETING_HEX = 'fffb01fffb03fffb00fffd00';

/** A slow reader: "a few MB/s" against a guest that writes hundreds. */
const SLOW_RATE = 4_000_000;
const SLOW_BYTES = 12 * MiB;
/** Several times what the guest takes for SLOW_BYTES when nothing holds it (~0.08 s). */
const UNHELD_S = 0.5;
/** A stalled reader reads nothing this long, then everything. */
const STALL_MS = 4000;
/**
 * Enough that the guest must wait for a client that reads nothing: more than chardev's
 * 256 KiB in flight plus the kernel's socket buffers (loopback TCP grows its send buffer to
 * 4 MiB) plus the guest's stdout.
 */
const STALLED_BYTES = 16 * MiB;
/**
 * While the guest waits, chardev holds its 256 KiB in flight for the writer (the README's
 * bound) and what it read ahead from the guest's stdout — a chunk in the pump and one in the
 * stream's buffer, up to 64 KiB each — and no more however long the stall lasts. 64 KiB
 * slack on top.
 */
const HELD_BY_CHARDEV = (256 + 128 + 64) * 1024;
/** The guest's write size (GUEST below). */
const GUEST_WRITE = 65536;

/**
 * The guest. argv: BYTES PROGRESS RESULT FLAGS. It waits for one byte of input (the client's
 * go: output before a client is connected is discarded, as in QEMU), then writes BYTES as
 * fast as its stdout takes them, 64 KiB a write; after each write PROGRESS holds the bytes
 * written so far (PROGRESS.pid holds its pid from the start). At the end RESULT holds
 * `BYTES SHA256 FF-COUNT SECONDS`. FLAGS (comma separated): `text` base64 lines instead of
 * raw random bytes; `keep` a copy of the stream in RESULT.data; `hold` wait for one more
 * byte of input before exiting.
 */
const GUEST = String.raw`
import base64, hashlib, os, sys, time
total, progress, result, flags = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(',')
with open(progress + '.pid', 'w') as f:
    f.write(str(os.getpid()))
os.read(0, 1)
pf = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
keep = open(result + '.data', 'wb') if 'keep' in flags else None
h, done, ff, t0 = hashlib.sha256(), 0, 0, time.monotonic()
while done < total:
    b = base64.encodebytes(os.urandom(49152)) if 'text' in flags else os.urandom(65536)
    b = b[:total - done]
    h.update(b)
    ff += b.count(255)
    if keep:
        keep.write(b)
    v = memoryview(b)
    while v:
        v = v[os.write(1, v):]
    done += len(b)
    os.pwrite(pf, b'%012d\n' % done, 0)
if keep:
    keep.close()
with open(result + '.tmp', 'w') as f:
    f.write('%d %s %d %.3f' % (done, h.hexdigest(), ff, time.monotonic() - t0))
os.rename(result + '.tmp', result)
if 'hold' in flags:
    os.read(0, 1)
`;

/** Reads its stdin at RATE bytes/s into FILE (the far end of `telnet … |`). */
const PACED_STDIN = String.raw`
import os, sys, time
rate, out = float(sys.argv[1]), open(sys.argv[2], 'wb', buffering=0)
t0, got = time.monotonic(), 0
while True:
    c = os.read(0, 16384)
    if not c:
        break
    out.write(c)
    got += len(c)
    ahead = t0 + got / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
out.close()
`;

interface GuestResult {
  readonly bytes: number;
  readonly sha: string;
  /** 0xFF bytes among them (telnet: passed raw, never doubled). */
  readonly ff: number;
  readonly seconds: number;
}

/** The guest's side: its argv, its progress file and its result. */
class Guest {
  readonly progressFile: string;
  readonly resultFile: string;
  readonly argv: readonly string[];

  constructor(
    dir: string,
    readonly bytes: number,
    flags: readonly ('text' | 'keep' | 'hold')[] = [],
  ) {
    this.progressFile = path.join(dir, 'progress');
    this.resultFile = path.join(dir, 'result');
    this.argv = [PYTHON, '-S', '-c', GUEST, String(bytes), this.progressFile, this.resultFile, flags.join(',') || '-'];
  }

  /** The guest's process id. */
  pid(): number {
    return Number(fs.readFileSync(`${this.progressFile}.pid`, 'latin1'));
  }

  /** Bytes written so far (0 before the first write). */
  progress(): number {
    try {
      return Number(fs.readFileSync(this.progressFile, 'latin1').trim() || '0');
    } catch {
      return 0;
    }
  }

  get finished(): boolean {
    return fs.existsSync(this.resultFile);
  }

  result(): GuestResult {
    const [bytes, sha, ff, seconds] = fs.readFileSync(this.resultFile, 'latin1').split(' ');
    return { bytes: Number(bytes), sha: sha ?? '', ff: Number(ff), seconds: Number(seconds) };
  }

  /** What it wrote (flag `keep`). */
  data(): Buffer {
    return fs.readFileSync(`${this.resultFile}.data`);
  }

  /** Resolves with its progress once that has not moved for `stillMs`: the guest waits in write(). */
  async blocked(stillMs = 1000, timeoutMs = 8000): Promise<number> {
    let last = this.progress();
    let since = Date.now();
    const deadline = since + timeoutMs;
    for (;;) {
      await sleep(50);
      const now = this.progress();
      assert.ok(!this.finished, `the guest wrote all ${this.bytes} bytes without ever waiting (it got to ${now})`);
      if (now !== last) {
        last = now;
        since = Date.now();
      } else if (now > 0 && Date.now() - since >= stillMs) {
        return now;
      }
      assert.ok(Date.now() < deadline, `the guest's progress never stopped (at ${now} of ${this.bytes})`);
    }
  }
}

/** Samples a guest's progress every 50 ms, to see when it stood still and for how long. */
class ProgressWatch {
  readonly samples: Array<{ at: number; bytes: number }> = [];
  readonly #timer: NodeJS.Timeout;
  constructor(guest: Guest) {
    this.#timer = setInterval(() => this.samples.push({ at: Date.now(), bytes: guest.progress() }), 50);
  }
  stop(): void {
    clearInterval(this.#timer);
  }
  /** The longest time the progress stood still after the guest had started writing, in ms. */
  longestStill(): { ms: number; at: number } {
    let best = { ms: 0, at: 0 };
    let start: { at: number; bytes: number } | undefined;
    for (const s of this.samples) {
      if (s.bytes === 0) continue;
      if (start === undefined || s.bytes !== start.bytes) start = s;
      else if (s.at - start.at > best.ms) best = { ms: s.at - start.at, at: start.bytes };
    }
    return best;
  }
}

interface Paced {
  readonly got: number;
  readonly sha: string;
  readonly end: 'done' | 'eof' | 'reset' | 'timeout';
  readonly seconds: number;
}

/** STREAM_PEER's `pace N RATE TIMEOUT [FILE]`. */
async function pace(peer: PyPeer, bytes: number, rate: number, timeoutS: number, file?: string): Promise<Paced> {
  const budget = (rate > 0 ? bytes / rate : 0) * 1000 + timeoutS * 1000 + 20000;
  const line = await peer.cmd(`pace ${bytes} ${rate} ${timeoutS}${file === undefined ? '' : ` ${file}`}`, budget);
  const m = /^paced (\d+) ([0-9a-f]{64}) (done|eof|reset|timeout) ([\d.]+)$/.exec(line);
  assert.ok(m, `pace answered ${line}`);
  return { got: Number(m[1]), sha: m[2] as string, end: m[3] as Paced['end'], seconds: Number(m[4]) };
}

interface Transport {
  readonly name: string;
  readonly kind: 'tcp' | 'unix';
  /** chardev listens (else it connects to the client's server). */
  readonly server: boolean;
  /** The 12-byte greeting comes first. */
  readonly telnet: boolean;
  readonly tls: boolean;
  /** The `<serial>` element; `at` is a socket path (unix) or the peer's port (tcp client). */
  device(at: string, extra: string): string;
}

const bind = (attrs = ''): string => `<source mode='bind' host='127.0.0.1' service='0'${attrs}/>`;
const TRANSPORTS: readonly Transport[] = [
  {
    name: 'tcp raw server',
    kind: 'tcp',
    server: true,
    telnet: false,
    tls: false,
    device: (_, x) => `<serial type='tcp'>${bind()}<protocol type='raw'/>${x}</serial>`,
  },
  {
    name: 'tcp client (python server)',
    kind: 'tcp',
    server: false,
    telnet: false,
    tls: false,
    device: (port, x) => `<serial type='tcp'><source mode='connect' host='127.0.0.1' service='${port}'/><protocol type='raw'/>${x}</serial>`,
  },
  {
    name: 'unix server',
    kind: 'unix',
    server: true,
    telnet: false,
    tls: false,
    device: (p, x) => `<serial type='unix'><source mode='bind' path='${q(p)}'/>${x}</serial>`,
  },
  {
    name: 'unix client (python server)',
    kind: 'unix',
    server: false,
    telnet: false,
    tls: false,
    device: (p, x) => `<serial type='unix'><source mode='connect' path='${q(p)}'/>${x}</serial>`,
  },
  {
    name: 'telnet server',
    kind: 'tcp',
    server: true,
    telnet: true,
    tls: false,
    device: (_, x) => `<serial type='tcp'>${bind()}<protocol type='telnet'/>${x}</serial>`,
  },
  // libvirt's own way to ask for TLS on a tcp chardev.
  {
    name: 'tls server',
    kind: 'tcp',
    server: true,
    telnet: false,
    tls: true,
    device: (_, x) => `<serial type='tcp'>${bind(" tls='yes'")}<protocol type='raw'/>${x}</serial>`,
  },
  {
    name: 'telnets server',
    kind: 'tcp',
    server: true,
    telnet: true,
    tls: true,
    device: (_, x) => `<serial type='tcp'>${bind()}<protocol type='telnets'/>${x}</serial>`,
  },
];

const transport = (name: string): Transport => {
  const t = TRANSPORTS.find((x) => x.name === name);
  assert.ok(t !== undefined, name);
  return t;
};

/** Something a test started: killed (and waited for) when the test ends, whatever happened. */
interface Killable {
  kill(): Promise<void>;
}

/** One test's directory and processes; the tests run side by side, so each cleans up its own. */
class Scope {
  readonly dir: string;
  readonly #live: Killable[] = [];
  constructor(ctx: TestContext, root: string) {
    this.dir = fs.mkdtempSync(path.join(root, 'r'));
    ctx.after(() => Promise.all(this.#live.map((p) => p.kill())).then(() => undefined));
  }
  track<P extends Killable>(p: P): P {
    this.#live.push(p);
    return p;
  }
}

/**
 * The tests wait far more than they compute (a reader at a fixed rate, a stall of seconds),
 * so three run at once; each suite below runs its own tests one after the other.
 */
const ONE_AT_A_TIME = { concurrency: 1 } as const;

describe('flow control over the network transports: chardev run, real clients, sha256 (slow: ~45 s)', { concurrency: 3 }, () => {
  let pki: Pki;
  let scratch = '';

  before(() => {
    pki = makePki();
    scratch = tmp('flow-net');
  });
  after(() => {
    fs.rmSync(scratch, { recursive: true, force: true });
    pki.cleanup();
  });

  interface Session {
    readonly cd: ChardevProcess;
    readonly peer: PyPeer;
    readonly guest: Guest;
    /** How chardev names the client in its messages. */
    readonly label: string;
    readonly dir: string;
    /** TCP: the ports of chardev's end and of the client's, to find chardev's socket with `ss`. */
    readonly ports?: { readonly chardev: string; readonly client: string };
  }

  function startChardev(scope: Scope, t: Transport, at: string, extra: string, guest: Guest): ChardevProcess {
    const xmlFile = path.join(scope.dir, 'domain.xml');
    const xml = domainXml(t.device(at, extra), path.basename(scope.dir));
    fs.writeFileSync(xmlFile, xml);
    return scope.track(
      new ChardevProcess({
        xmlFile,
        logDir: path.join(scope.dir, 'logs'),
        runDir: path.join(scope.dir, 'run'),
        flags: t.tls ? ['--tls-dir', pki.dir] : [],
        guest: guest.argv,
      }),
    );
  }

  /**
   * `chardev run` with the transport's device and `guest`, a Python client connected (or
   * accepted, for client modes), the telnet greeting read, and the guest told to go.
   * `beforeGo` runs once everything is up, just before the go.
   */
  async function connect(scope: Scope, t: Transport, guest: Guest, extra = '', beforeGo?: (cd: ChardevProcess) => void): Promise<Session> {
    const sock = path.join(scope.dir, 's.sock');
    let cd: ChardevProcess;
    let peer: PyPeer;
    let label: string;
    let ports: Session['ports'];
    if (t.server) {
      cd = startChardev(scope, t, sock, extra, guest);
      await cd.ready();
      const where = (await cd.out(/^charserial0: listening on (\w+):(.*)$/m))[2] ?? '';
      const addr = t.kind === 'unix' ? where : (/:(\d+)$/.exec(where)?.[1] ?? '');
      const tlsArgs = t.tls ? ['ca-cert.pem', 'client-cert.pem', 'client-key.pem'].map((f) => path.join(pki.dir, f)) : [];
      peer = scope.track(new PyPeer(STREAM_PEER, [t.kind, 'connect', addr, ...tlsArgs]));
      const hello = await peer.line(10000);
      const m = /^connected (\d+|-)$/.exec(hello);
      assert.ok(m, hello);
      label = t.kind === 'unix' ? 'a unix client' : `127.0.0.1:${m[1] ?? ''}`;
      if (t.kind === 'tcp') ports = { chardev: addr, client: m[1] ?? '' };
    } else {
      peer = scope.track(new PyPeer(STREAM_PEER, [t.kind, 'listen', t.kind === 'unix' ? sock : '0']));
      const port = /^listening (\d+|-)$/.exec(await peer.line())?.[1];
      assert.ok(port !== undefined);
      cd = startChardev(scope, t, t.kind === 'unix' ? sock : port, extra, guest);
      const accepted = /^accepted (\d+|-)$/.exec(await peer.cmd('accept 15', 20000));
      assert.ok(accepted, 'chardev connected');
      await cd.ready();
      label = t.kind === 'unix' ? 'a unix client' : `127.0.0.1:${port}`;
      if (t.kind === 'tcp') ports = { chardev: accepted[1] ?? '', client: port };
    }
    if (t.telnet) assert.equal(await peer.cmd('recv 12 5'), `got ${GREETING_HEX}`, 'the telnet greeting comes first');
    beforeGo?.(cd);
    assert.equal(await peer.cmd('send 67'), 'sent');
    return { cd, peer, guest, label, dir: scope.dir, ...(ports === undefined ? {} : { ports }) };
  }

  /**
   * While the guest waits: how far it is ahead of the client, how much of that the kernel
   * holds — in the guest's stdout (`chardev run` gives it a pipe: FIONREAD on a reader of
   * our own, opened through /proc; without koffi a libuv socketpair: chardev's end's receive
   * queue, from `ss -x`), in the client's receive queue (FIONREAD) and, over TCP, in
   * chardev's send queue (`ss -t`) — and so what chardev itself holds.
   */
  async function whereHeld(s: Session, ahead: number): Promise<{ kernel: number; chardev: number }> {
    const ss = async (args: string[]): Promise<string[][]> =>
      (await run('ss', ['-H', ...args])).stdout
        .toString()
        .trim()
        .split('\n')
        .map((l) => l.trim().split(/\s+/));
    const stdoutPath = `/proc/${s.guest.pid()}/fd/1`;
    const link = fs.readlinkSync(stdoutPath);
    let kernel: number;
    if (link.startsWith('pipe:')) {
      // Opening the pipe through /proc makes one more reader of it, which reads nothing.
      const fd = fs.openSync(stdoutPath, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        kernel = readableBytes(fd);
      } finally {
        fs.closeSync(fd);
      }
    } else {
      const stdout = /^socket:\[(\d+)\]$/.exec(link)?.[1];
      assert.ok(stdout !== undefined, `the guest's stdout is a pipe or a socket, not ${link}`);
      const chardevEnd = (await ss(['-x'])).filter((f) => f[7] === stdout);
      assert.equal(chardevEnd.length, 1, "chardev's end of the guest's stdout in ss -x");
      kernel = Number(chardevEnd[0]?.[2]);
    }
    const q = /^queued (\d+)$/.exec(await s.peer.cmd('queued'));
    assert.ok(q, 'FIONREAD');
    kernel += Number(q[1]);
    if (s.ports !== undefined) {
      const sock = await ss(['-tn', `( sport = :${s.ports.chardev} and dport = :${s.ports.client} )`]);
      assert.equal(sock.length, 1, "chardev's tcp socket in ss -t");
      kernel += Number(sock[0]?.[2]);
    }
    return { kernel, chardev: ahead - kernel };
  }

  /** The client got exactly what the guest wrote; chardev run exits with the guest's status. */
  async function assertWhole(s: Session, r: Paced): Promise<GuestResult> {
    await waitFor(() => s.guest.finished, 'the guest to finish', 20000);
    const g = s.guest.result();
    const exit = await s.cd.exited;
    assert.equal(r.end, 'done', `the client read ${r.got} of ${g.bytes} bytes, then ${r.end}; chardev's stderr: ${s.cd.stderr}`);
    assert.equal(r.got, g.bytes, 'the client got as many bytes as the guest wrote');
    assert.equal(r.sha, g.sha, 'sha256: the client got every byte, in order');
    assert.deepEqual(exit, { code: 0, signal: null }, `chardev run exits with the guest; stderr: ${s.cd.stderr}`);
    assert.equal(s.cd.stderr, '', 'nothing to report');
    return g;
  }

  for (const t of TRANSPORTS) {
    describe(t.name, ONE_AT_A_TIME, () => {
      it(`slow reader (${SLOW_RATE / 1e6} MB/s, ${SLOW_BYTES / MiB} MiB): every byte, in order; the guest waits for it`, { timeout: 60000 }, async (ctx) => {
        const scope = new Scope(ctx, scratch);
        const s = await connect(scope, t, new Guest(scope.dir, SLOW_BYTES));
        const r = await pace(s.peer, SLOW_BYTES, SLOW_RATE, 20);
        const g = await assertWhole(s, r);
        // QEMU's telnet server does not escape output (reference/qemu-chardev.md §3.2: "Output is
        // not escaped"): the guest's 0xFF bytes arrive raw, so the counts above are equal.
        if (t.telnet) assert.ok(g.ff > 0, `the stream had ${g.ff} 0xFF bytes, none doubled`);
        // Unheld, the guest writes this in well under 0.1 s; held, it finishes only once the
        // reader is within the buffers (chardev's, the kernel's: 4.5 to 6 MB over TCP) of the end.
        assert.ok(g.seconds > UNHELD_S, `the guest took ${g.seconds} s, the reader ${r.seconds} s: the guest was held`);
        report(`${t.name}: slow reader ${r.got} B at ${(r.got / r.seconds / 1e6).toFixed(2)} MB/s in ${r.seconds} s; guest done after ${g.seconds} s`);
      });

      it(`stalled reader (nothing for ${STALL_MS / 1000} s, then everything): the guest's progress stops, then every byte`, { timeout: 60000 }, async (ctx) => {
        const scope = new Scope(ctx, scratch);
        const s = await connect(scope, t, new Guest(scope.dir, STALLED_BYTES));
        const t0 = Date.now();
        const held = await s.guest.blocked();
        const where = await whereHeld(s, held);
        // The guest counts a write once it returns: the one it is blocked in may already be
        // partly in its stdout, so the kernel can hold up to one write more than it counted.
        assert.ok(
          where.chardev >= -GUEST_WRITE && where.chardev <= HELD_BY_CHARDEV,
          `the guest is ${held} bytes ahead, ${where.kernel} of them in the kernel's buffers: chardev holds ${where.chardev} (at most ${HELD_BY_CHARDEV})`,
        );
        await sleep(t0 + STALL_MS - Date.now());
        assert.equal(s.guest.progress(), held, `the guest wrote nothing more while the client read nothing (${held} bytes written)`);
        assert.ok(!s.guest.finished);
        const r = await pace(s.peer, STALLED_BYTES, 0, 20);
        await assertWhole(s, r);
        report(
          `${t.name}: stalled reader held the guest at ${held} of ${STALLED_BYTES} B (${Math.max(0, where.chardev)} B in chardev, the rest in the kernel's buffers) for ${((Date.now() - t0) / 1000).toFixed(1)} s`,
        );
      });
    });
  }

  it("telnet server with inetutils' telnet: a slow pipe behind telnet holds the guest; every byte of text arrives", { timeout: 60000 }, async (ctx) => {
    const t = transport('telnet server');
    const scope = new Scope(ctx, scratch);
    const dir = scope.dir;
    // Text: telnet would take the guest's raw 0xFF bytes as commands (QEMU does not escape them).
    // `hold`: the guest exits only once the test has seen everything, because inetutils'
    // telnet throws away what it has not yet written to its stdout when the server closes
    // (seen against a plain Python server too).
    const guest = new Guest(dir, SLOW_BYTES, ['text', 'keep', 'hold']);
    const cd = startChardev(scope, t, '', '', guest);
    await cd.ready();
    const port = (await cd.out(/^charserial0: listening on telnet:127\.0\.0\.1:(\d+)$/m))[1] ?? '';
    const outFile = path.join(dir, 'telnet.out');
    const banner = "Trying 127.0.0.1...\nConnected to 127.0.0.1.\nEscape character is '^]'.\n";
    const size = (): number => (fs.existsSync(outFile) ? fs.statSync(outFile).size : 0);
    // telnet's stdin is this Proc's (kept open), its stdout a pipe read at SLOW_RATE.
    const tel = scope.track(
      new Proc('telnet', 'sh', ['-c', 'telnet 127.0.0.1 "$1" | "$2" -S -c "$3" "$4" "$5"', 'sh', port, PYTHON, PACED_STDIN, String(SLOW_RATE), outFile]),
    );
    await tel.until(() => size() >= banner.length, 'telnet to connect', 10000);
    tel.child.stdin.write('g');
    const t0 = Date.now();
    await tel.until(() => size() >= banner.length + SLOW_BYTES, 'every byte at the reader behind telnet', 30000);
    const seconds = (Date.now() - t0) / 1000;
    assert.ok(guest.finished);
    const g = guest.result();
    assert.ok(g.seconds > UNHELD_S, `the guest took ${g.seconds} s, the reader ${seconds} s: the guest was held`);
    const out = fs.readFileSync(outFile);
    assert.equal(out.subarray(0, banner.length).toString('latin1'), banner);
    const seen = out.subarray(banner.length);
    assert.equal(seen.length, g.bytes, 'nothing more than the guest wrote');
    assert.equal(sha256(seen), g.sha, 'every byte of the guest stream, in order, through telnet');
    tel.child.stdin.write('g');
    assert.deepEqual(await cd.exited, { code: 0, signal: null }, cd.stderr);
    await tel.until(() => tel.exited, 'telnet to exit once chardev closed the connection', 15000);
    assert.match(tel.stderr, /Connection closed by foreign host\./);
  });

  it("tcp raw server: a reader that stops for 4 s, then reads at 20 MB/s, gets all 48 MiB (the issue's row)", { timeout: 60000 }, async (ctx) => {
    const bytes = 48 * MiB;
    const scope = new Scope(ctx, scratch);
    const s = await connect(scope, transport('tcp raw server'), new Guest(scope.dir, bytes));
    const t0 = Date.now();
    const held = await s.guest.blocked();
    await sleep(t0 + 4000 - Date.now());
    assert.equal(s.guest.progress(), held, 'the guest waited while the reader stopped');
    const r = await pace(s.peer, bytes, 20_000_000, 20);
    const g = await assertWhole(s, r);
    report(`tcp raw: stopped 4 s at ${held} B, then ${r.got} B at ${(r.got / r.seconds / 1e6).toFixed(1)} MB/s; guest done after ${g.seconds} s`);
  });

  for (const name of ['tcp raw server', 'unix server']) {
    const t = transport(name);
    describe(`${name} with <cd:stall timeout='2'>`, ONE_AT_A_TIME, () => {
      /** A QMP session (Python) waiting for CHARDEV_CLIENT_STALLED; started before the hung client's go. */
      function watchStalled(cd: ChardevProcess): Promise<StepResult[]> {
        return pyQmp(cd.qmpPath, [...NEGOTIATE, { conn: 'a', untilEvent: 'CHARDEV_CLIENT_STALLED' }], 20000);
      }
      function stalledEvent(res: StepResult[]): { id: string; client: { label: string; released: boolean; role: string } } {
        const line = res[2]?.lines[0];
        assert.ok(line !== undefined, `no CHARDEV_CLIENT_STALLED: ${JSON.stringify(res)}`);
        const msg = JSON.parse(line) as { event: string; data: { id: string; client: { label: string; released: boolean; role: string } } };
        assert.equal(msg.event, 'CHARDEV_CLIENT_STALLED');
        return msg.data;
      }

      it("action='drop': a hung client is released after ~2 s, the guest goes on, one line on stderr, a QMP event; the client is told and misses output", {
        timeout: 60000,
      }, async (ctx) => {
        const bytes = 8 * MiB;
        const scope = new Scope(ctx, scratch);
        const guest = new Guest(scope.dir, bytes, ['keep', 'hold']);
        let qmp: Promise<StepResult[]> | undefined;
        const s = await connect(scope, t, guest, "<cd:stall timeout='2' action='drop'/>", (cd) => (qmp = watchStalled(cd)));
        const watch = new ProgressWatch(guest);
        try {
          await waitFor(() => guest.finished, 'the guest to go on and finish after the release', 15000);
        } finally {
          watch.stop();
        }
        const still = watch.longestStill();
        assert.ok(still.ms >= 1500 && still.ms <= 4500, `the guest stood still for ${still.ms} ms at ${still.at} bytes: released after the 2 s limit`);
        const stalled = s.cd.errors(/took no output/);
        assert.deepEqual(
          stalled,
          [`charserial0: client ${s.label} took no output for 2 s; it now misses output until it catches up and the guest goes on`],
          s.cd.stderr,
        );
        const ev = stalledEvent(await (qmp as Promise<StepResult[]>));
        assert.deepEqual([ev.id, ev.client.label, ev.client.role, ev.client.released], ['charserial0', s.label, 'writer', true]);

        // The client reads now: what it was holding, the notice, what still fit its queue, and
        // once it has caught up how much it missed. It never got the whole stream.
        const keep = path.join(s.dir, 'client.data');
        const r = await pace(s.peer, bytes, 0, 1.5, keep);
        assert.equal(r.end, 'timeout');
        const got = fs.readFileSync(keep);
        const text = got.toString('latin1');
        const released = '\r\n[chardev: took no output for 2 s: output no longer waits for this client; it misses what does not fit until it catches up]\r\n';
        const at = text.indexOf(released);
        assert.ok(at > 0, 'the client is told it was released');
        assert.ok(guest.data().subarray(0, at).equals(got.subarray(0, at)), 'before the notice: the start of the guest stream, whole');
        assert.match(
          text.slice(at + released.length),
          /\r\n\[chardev: \d+ bytes of output were dropped while this client was not reading\]\r\n\r\n\[chardev: caught up: output waits for this client again\]\r\n$/,
        );
        assert.ok(r.got < bytes, `the released client got ${r.got} of ${bytes} bytes`);
        assert.deepEqual(s.cd.errors(/took no output/), stalled, 'reported once');
        // The guest exits when told; chardev run with it.
        assert.equal(await s.peer.cmd('send 67'), 'sent');
        assert.deepEqual(await s.cd.exited, { code: 0, signal: null }, s.cd.stderr);
      });

      it("action='disconnect': a hung client is disconnected after ~2 s, the guest goes on, one line on stderr, a QMP event", {
        timeout: 60000,
      }, async (ctx) => {
        const bytes = 8 * MiB;
        const scope = new Scope(ctx, scratch);
        const guest = new Guest(scope.dir, bytes, ['keep']);
        let qmp: Promise<StepResult[]> | undefined;
        const s = await connect(scope, t, guest, "<cd:stall timeout='2' action='disconnect'/>", (cd) => (qmp = watchStalled(cd)));
        const watch = new ProgressWatch(guest);
        const keep = path.join(s.dir, 'client.data');
        let reading: Promise<Paced> | undefined;
        try {
          // The client reads from the moment it is let go: chardev gives a peer that does not
          // read 1 s to take the goodbye.
          await waitFor(() => s.cd.errors(/took no output/).length > 0, 'the stall to be reported', 15000);
          reading = pace(s.peer, bytes, 0, 10, keep);
          await waitFor(() => guest.finished, 'the guest to go on and finish after the disconnect', 15000);
        } finally {
          watch.stop();
        }
        const still = watch.longestStill();
        assert.ok(still.ms >= 1500 && still.ms <= 4500, `the guest stood still for ${still.ms} ms at ${still.at} bytes: released after the 2 s limit`);
        assert.deepEqual(
          s.cd.errors(/took no output/),
          [`charserial0: client ${s.label} took no output for 2 s; it disconnected and the guest goes on`],
          s.cd.stderr,
        );
        const ev = stalledEvent(await (qmp as Promise<StepResult[]>));
        assert.deepEqual([ev.id, ev.client.label, ev.client.released], ['charserial0', s.label, true]);
        // What was already on its way reaches the client, then why, then the end.
        const r = await (reading as Promise<Paced>);
        assert.ok(r.end === 'eof' || r.end === 'reset', `the client was disconnected (read ${r.got} bytes, then ${r.end})`);
        assert.ok(r.got > 0 && r.got < bytes, `the client got ${r.got} of ${bytes} bytes`);
        const got = fs.readFileSync(keep);
        const goodbye = "\r\n[chardev: took no output for 2 s: disconnected, as this device's stall limit says]\r\n";
        const at = got.length - goodbye.length;
        assert.equal(got.subarray(at).toString('latin1'), goodbye, 'the last thing the client gets says why');
        assert.ok(guest.data().subarray(0, at).equals(got.subarray(0, at)), 'before it: the start of the guest stream, whole');
        assert.deepEqual(await s.cd.exited, { code: 0, signal: null }, s.cd.stderr);
      });

      it('a healthy slow reader (1 MB/s) is held for longer than the limit but never released: every byte', { timeout: 60000 }, async (ctx) => {
        // The guest is held once the kernel's buffers are full too: about 4.4 MB on loopback
        // TCP, 0.8 MB on a unix socket (see the stalled readers above).
        const bytes = t.kind === 'tcp' ? 8 * MiB : 4 * MiB;
        const scope = new Scope(ctx, scratch);
        const s = await connect(scope, t, new Guest(scope.dir, bytes), "<cd:stall timeout='2' action='drop'/>");
        const r = await pace(s.peer, bytes, 1_000_000, 20);
        const g = await assertWhole(s, r);
        assert.ok(g.seconds > 2, `the guest was held for ${g.seconds} s in all, past the 2 s limit`);
        report(`${name} with a 2 s stall limit: a 1 MB/s reader held the guest for ${g.seconds} s and got all ${r.got} B`);
      });
    });
  }
});
