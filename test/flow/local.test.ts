/**
 * QEMU's flow control end to end over the local transports and the consoles:
 * `chardev run FILE -- GUEST` with a guest that writes as fast as it can and
 * records its own progress and sha256, read by real clients — Python holding a pty slave,
 * reading a FIFO, on the far end of a host tty, running `chardev console` on a pty of its
 * own, and Chromium for the browser console. A client that reads slower than the guest
 * writes gets every byte; one that stops holds the guest (its progress, read from the
 * guest's side, stands still) and then gets everything. The other way, input the guest does
 * not read yet waits in the client (it is held back) and arrives whole.
 *
 * Slow parts: each test streams 4–16 MiB through a paced reader (2 MB/s) or waits out a
 * stall of 4 s, 2–8 s each; the whole file takes about 50 s on 2 cores.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { PyPeer } from '../backends/python-peer.ts';
import { ChardevProcess, PYTHON, tmp } from '../reliability/helpers.ts';
import { domainXml, q, waitFor } from '../core/helpers.ts';
import { eventually } from '../platform/helpers.ts';
import { launchChromium } from '../helpers/chromium.ts';
import { ROOT } from '../helpers/paths.ts';
import { linuxPlatform } from '../../src/platform/index.ts';
import { GUEST_PIPE_BYTES } from '../../src/core/guest-output.ts';

const MiB = 1024 * 1024;
/** A slow reader: well below what the guest writes (hundreds of MB/s), well above a crawl. */
const RATE = 2_000_000;
/** How long a stalled reader stops. */
const STALL_S = 4;
const T = { timeout: 40_000 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The guest: N deterministic pseudo-random bytes (seeded; `text`: hex lines, for a
 * terminal), written to stdout as fast as the pipe takes them once GO exists; after every
 * write its running total goes into PROGRESS (12 digits at offset 0), and at the end
 * `COUNT SHA256 SECONDS` (seconds from GO to the last write) into RESULT.
 */
const GUEST = String.raw`
import hashlib, os, random, sys, time
n, seed, go, progress, result, form = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
rnd = random.Random(seed)
if form == 'text':
    lines = (rnd.randbytes(39).hex().encode() + b'\r\n' for _ in range(n // 80 + 1))
    data = b''.join(lines)[:n]
else:
    data = rnd.randbytes(n)
pf = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.pwrite(pf, b'%012d' % 0, 0)
parent = os.getppid()
while not os.path.exists(go):
    if os.getppid() != parent:
        sys.exit(1)  # chardev is gone (a failed test): nobody will say go
    time.sleep(0.02)
t0 = time.monotonic()
view, done = memoryview(data), 0
while done < n:
    done += os.write(1, view[done:done + 65536])
    os.pwrite(pf, b'%012d' % done, 0)
took = time.monotonic() - t0
with open(result + '.tmp', 'w') as f:
    f.write('%d %s %.3f' % (done, hashlib.sha256(data).hexdigest(), took))
os.rename(result + '.tmp', result)
`;

/**
 * A reader. argv: KIND TARGET N RATE STALL_AT STALL_S [-- COMMAND…]
 *  tty PATH      open a pty slave (as a terminal program would), raw;
 *  fifo PATH     open a FIFO for reading;
 *  master -      make a pty, answer `slave PATH`, read its master (the slave is the host device);
 *  console -     run COMMAND (chardev console) on a pty of our own, read its master as a
 *                terminal would; after the banner, wait until the console made the terminal
 *                raw and clear OPOST too, so the guest's bytes pass unchanged (a terminal's
 *                output processing turns \n into \r\n, which is the tty's doing, not chardev's).
 * Answers `ready`, then reads N bytes at RATE bytes/s (0: as fast as it can); after
 * STALL_AT bytes (-1: never) it answers `stalled GOT`, reads nothing for STALL_S seconds,
 * answers `resumed` and reads on unpaced. Ends with `done GOT SHA256` (GOT < N if the stream
 * went silent for 20 s); a console is then left with ^] (`exit STATUS`).
 */
const READER = String.raw`
import hashlib, os, select, subprocess, sys, termios, time, tty
kind, target, n, rate, stall_at, stall_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
command = sys.argv[8:] if len(sys.argv) > 7 and sys.argv[7] == '--' else []
def out(*a):
    print(*a, flush=True)
h, got, pre = hashlib.sha256(), 0, b''
child = None
if kind == 'tty':
    fd = os.open(target, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
elif kind == 'fifo':
    fd = os.open(target, os.O_RDONLY)
elif kind == 'master':
    fd, slave = os.openpty()
    tty.setraw(slave)
    out('slave', os.ttyname(slave))
elif kind == 'console':
    fd, slave = os.openpty()
    child = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    # The banner line, as the cooked terminal shows it (\n became \r\n: Escape … ^]\r\r\n).
    banner = b'Escape character is ^]'
    buf = b''
    while banner not in buf or b'\n' not in buf[buf.index(banner):]:
        r, _, _ = select.select([fd], [], [], 20)
        if not r:
            out('no-banner', buf.hex())
            sys.exit(1)
        buf += os.read(fd, 65536)
    rest = buf[buf.index(banner):]
    pre = rest[rest.index(b'\n') + 1:]
    while termios.tcgetattr(slave)[3] & termios.ICANON:
        time.sleep(0.01)
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
h.update(pre)
got = len(pre)
out('ready')
# The pace is kept from the first byte on: waiting for the guest to start earns no credit.
t0, base, paced = None, got, rate > 0
while got < n:
    if stall_at >= 0 and got >= stall_at:
        out('stalled', got)
        time.sleep(stall_s)
        out('resumed')
        stall_at, paced = -1, False
    r, _, _ = select.select([fd], [], [], 20)
    if not r:
        break
    want = n - got if stall_at < 0 else min(n, stall_at) - got
    try:
        c = os.read(fd, min(16384, max(1, want)))
    except OSError:
        break
    if not c:
        break
    h.update(c)
    got += len(c)
    if t0 is None:
        t0, base = time.monotonic(), got
    if paced:
        ahead = (got - base) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
out('done', got, h.hexdigest())
if child is not None:
    os.write(fd, b'\x1d')
    try:
        out('exit', child.wait(15))
    except subprocess.TimeoutExpired:
        child.kill()
        out('exit', 'timeout')
`;

/**
 * A writer of input. argv: KIND TARGET N SEED — `unix PATH` connects to a UNIX socket,
 * `tty PATH` opens a pty slave raw. Answers `connected`, sends N seeded pseudo-random bytes
 * as fast as they are taken, answers `sent N SHA256`, and keeps the connection open until
 * its stdin closes.
 */
const SENDER = String.raw`
import hashlib, os, random, socket, sys, tty
kind, target, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def out(*a):
    print(*a, flush=True)
data = random.Random(seed).randbytes(n)
if kind == 'unix':
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(target)
    send = s.send
else:
    fd = os.open(target, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    send = lambda b: os.write(fd, b)
out('connected')
view, done = memoryview(data), 0
while done < n:
    done += send(view[done:done + 65536])
out('sent', done, hashlib.sha256(data).hexdigest())
sys.stdin.read()
`;

interface GuestResult {
  readonly count: number;
  readonly sha: string;
  /** Seconds from GO to its last write. */
  readonly seconds: number;
}

/** The files a guest of one test uses, and what it says through them. */
class GuestFiles {
  readonly go: string;
  readonly progressFile: string;
  readonly resultFile: string;
  constructor(
    dir: string,
    readonly name: string,
    readonly bytes: number,
    readonly form: 'bin' | 'text' = 'bin',
  ) {
    this.go = path.join(dir, `${name}.go`);
    this.progressFile = path.join(dir, `${name}.progress`);
    this.resultFile = path.join(dir, `${name}.result`);
  }
  /** The guest command for `chardev run … --`. */
  get command(): string[] {
    return [PYTHON, '-S', '-c', GUEST, String(this.bytes), String(this.bytes % 9973), this.go, this.progressFile, this.resultFile, this.form];
  }
  start(): void {
    fs.writeFileSync(this.go, '');
  }
  /** Bytes the guest's write() calls have taken so far. */
  progress(): number {
    try {
      return Number(fs.readFileSync(this.progressFile, 'latin1').slice(0, 12));
    } catch {
      return 0;
    }
  }
  result(): GuestResult | undefined {
    if (!fs.existsSync(this.resultFile)) return undefined;
    const [count, sha, seconds] = fs.readFileSync(this.resultFile, 'latin1').split(' ');
    return { count: Number(count), sha: sha ?? '', seconds: Number(seconds) };
  }
  async finished(timeoutMs: number): Promise<GuestResult> {
    await waitFor(() => this.result() !== undefined, `guest ${this.name} to finish (progress ${this.progress()} of ${this.bytes})`, timeoutMs);
    return this.result() as GuestResult;
  }
}

/** A reader's `done GOT SHA` line. */
async function done(reader: PyPeer, timeoutMs: number): Promise<{ got: number; sha: string }> {
  const line = await reader.line(timeoutMs);
  const m = /^done (\d+) ([0-9a-f]{64})$/.exec(line);
  assert.ok(m !== null, `reader: expected 'done GOT SHA', got ${JSON.stringify(line)}`);
  return { got: Number(m[1]), sha: m[2] as string };
}

async function expectLine(peer: PyPeer, re: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
  const line = await peer.line(timeoutMs);
  const m = re.exec(line);
  assert.ok(m !== null, `expected ${re}, got ${JSON.stringify(line)}`);
  return m;
}

/**
 * The reader's stall, seen from the guest: once the in-flight room is used up its
 * progress stands still for seconds while it has not finished, and what it wrote beyond
 * what the reader took is small and bounded (nothing piles up in chardev).
 */
async function guestHeldDuringStall(guest: GuestFiles, reader: PyPeer, bound: number): Promise<string> {
  const at = Number((await expectLine(reader, /^stalled (\d+)$/, 20_000))[1]);
  await sleep(1500);
  const p1 = guest.progress();
  await sleep(2000);
  const p2 = guest.progress();
  assert.equal(p2, p1, `the guest's progress stands still while the reader stops (${p1} → ${p2})`);
  assert.equal(guest.result(), undefined, 'the guest has not finished');
  assert.ok(p1 < guest.bytes, `the guest is held before the end (${p1} of ${guest.bytes})`);
  assert.ok(p1 - at <= bound, `in flight while the reader stops: ${p1 - at} bytes (bound ${bound})`);
  await expectLine(reader, /^resumed$/, 5000);
  return `the guest stood at ${p1} bytes, ${p1 - at} beyond what the reader had taken`;
}

/** A slow reader took so long that the guest cannot have run free: it waited on the reader. */
function guestWaited(result: GuestResult, bytes: number, inFlight: number): string {
  const least = (0.6 * (bytes - inFlight)) / RATE;
  assert.ok(
    result.seconds >= least,
    `the guest took ${result.seconds} s to write ${bytes} bytes to a ${RATE / 1e6} MB/s reader (at least ${least.toFixed(2)} s if it waited)`,
  );
  return `the guest took ${result.seconds} s to write ${bytes} bytes`;
}

describe('flow control end to end: local transports and consoles (chardev run, real clients, sha256)', () => {
  let dir = '';
  let runDir = '';
  let logDir = '';
  /** What each test started: stopped after it, passed or not. */
  const living: Array<() => Promise<void>> = [];
  before(() => {
    dir = tmp('flow-local');
    runDir = path.join(dir, 'run');
    logDir = path.join(dir, 'logs');
    fs.mkdirSync(runDir, { mode: 0o700 });
  });
  afterEach(async () => {
    for (const stop of living.splice(0).reverse()) await stop();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** `chardev run` of a domain with these devices, the guest attached to the first. */
  /** A vc device's page with its token: printed only on a terminal, so taken from the status file. */
  function consoleUrl(name: string, alias = 'serial0'): string {
    const { webUrl } = JSON.parse(fs.readFileSync(path.join(runDir, `${name}.json`), 'utf8')) as { webUrl: string };
    const u = new URL(webUrl);
    return `${u.origin}/console/${alias}${u.search}`;
  }
  async function chardevRun(name: string, devices: string, guest: readonly string[], flags: readonly string[] = []): Promise<ChardevProcess> {
    const xmlFile = path.join(dir, `${name}.xml`);
    fs.writeFileSync(xmlFile, domainXml(devices, name));
    const p = new ChardevProcess({ xmlFile, logDir, runDir, guest, flags });
    // SIGTERM first: chardev then stops its guest too; SIGKILL if that takes too long.
    living.push(async () => {
      if (!p.alive) return;
      p.child.kill('SIGTERM');
      const timer = setTimeout(() => p.child.kill('SIGKILL'), 5000);
      await p.exited;
      clearTimeout(timer);
    });
    await p.ready();
    return p;
  }
  function python(script: string, args: readonly string[]): PyPeer {
    const p = new PyPeer(script, args);
    living.push(() => p.kill());
    return p;
  }
  /** The guest's output reached the reader whole and in order, and the run ended well. */
  async function sameStream(guest: GuestFiles, reader: PyPeer, run: ChardevProcess, timeoutMs: number): Promise<GuestResult> {
    const got = await done(reader, timeoutMs);
    const result = await guest.finished(5000);
    assert.equal(result.count, guest.bytes);
    assert.equal(got.got, guest.bytes, `the reader got ${got.got} of ${guest.bytes} bytes`);
    assert.equal(got.sha, result.sha, 'sha256 at the reader equals the guest’s');
    const { code } = await run.exited;
    assert.equal(code, 0, run.stderr);
    assert.equal(run.stderr, '');
    return result;
  }

  describe('guest → client', () => {
    it('pty with a reader holding the slave (Python, raw, 2 MB/s): every byte of 8 MiB, the guest waits on it', T, async (t) => {
      const guest = new GuestFiles(dir, 'pty-slow', 8 * MiB);
      const run = await chardevRun('ptyslow', `<serial type='pty'/>`, guest.command);
      const pts = (await run.out(/redirected to (\/dev\/pts\/\d+) \(label charserial0\)/))[1] as string;
      const reader = python(READER, ['tty', pts, String(guest.bytes), String(RATE), '-1', '0']);
      await expectLine(reader, /^ready$/);
      guest.start();
      const result = await sameStream(guest, reader, run, 30_000);
      t.diagnostic(guestWaited(result, guest.bytes, MiB));
    });

    it('pty: a reader that stops for 4 s holds the guest (its progress stands still), then gets everything', T, async (t) => {
      const guest = new GuestFiles(dir, 'pty-stall', 4 * MiB);
      const run = await chardevRun('ptystall', `<serial type='pty'/>`, guest.command);
      const pts = (await run.out(/redirected to (\/dev\/pts\/\d+) \(label charserial0\)/))[1] as string;
      const reader = python(READER, ['tty', pts, String(guest.bytes), '0', String(MiB / 2), String(STALL_S)]);
      await expectLine(reader, /^ready$/);
      guest.start();
      t.diagnostic(await guestHeldDuringStall(guest, reader, 2 * MiB));
      await sameStream(guest, reader, run, 20_000);
    });

    // libuv ends a pty master's stream at POLLHUP after a short read, with KiBs the child wrote
    // before exiting still in the kernel: this case lost them (a few KiB, one run in four).
    it('--tty (the guest on its own pty, stty raw): a 2 MB/s pty reader gets every byte of 4 MiB', T, async (t) => {
      const guest = new GuestFiles(dir, 'tty-slow', 4 * MiB);
      // Raw, so the guest's terminal passes its bytes unchanged (cooked, \n would become \r\n).
      const run = await chardevRun('ttyslow', `<serial type='pty'/>`, ['sh', '-c', 'stty raw -echo && exec "$@"', 'sh', ...guest.command], ['--tty']);
      const pts = (await run.out(/redirected to (\/dev\/pts\/\d+) \(label charserial0\)/))[1] as string;
      const reader = python(READER, ['tty', pts, String(guest.bytes), String(RATE), '-1', '0']);
      await expectLine(reader, /^ready$/);
      guest.start();
      const result = await sameStream(guest, reader, run, 30_000);
      t.diagnostic(guestWaited(result, guest.bytes, MiB));
    });

    it('pipe (P.in/P.out FIFOs): a 2 MB/s reader of P.out gets every byte of 4 MiB, the guest waits on it', T, async (t) => {
      const base = path.join(dir, 'pipe-slow');
      fs.mkdirSync(base);
      const p = path.join(base, 'p');
      for (const f of [`${p}.in`, `${p}.out`]) linuxPlatform.mkfifo(f, 0o600);
      const guest = new GuestFiles(dir, 'pipe-slow', 4 * MiB);
      const run = await chardevRun('pipeslow', `<serial type='pipe'><source path='${q(p)}'/></serial>`, guest.command);
      const reader = python(READER, ['fifo', `${p}.out`, String(guest.bytes), String(RATE), '-1', '0']);
      await expectLine(reader, /^ready$/);
      guest.start();
      const result = await sameStream(guest, reader, run, 30_000);
      t.diagnostic(guestWaited(result, guest.bytes, 2 * MiB));
    });

    it('pipe: a reader of P.out that stops for 4 s holds the guest, then gets everything', T, async (t) => {
      const base = path.join(dir, 'pipe-stall');
      fs.mkdirSync(base);
      const p = path.join(base, 'p');
      for (const f of [`${p}.in`, `${p}.out`]) linuxPlatform.mkfifo(f, 0o600);
      const guest = new GuestFiles(dir, 'pipe-stall', 4 * MiB);
      const run = await chardevRun('pipestall', `<serial type='pipe'><source path='${q(p)}'/></serial>`, guest.command);
      const reader = python(READER, ['fifo', `${p}.out`, String(guest.bytes), '0', String(MiB / 2), String(STALL_S)]);
      await expectLine(reader, /^ready$/);
      guest.start();
      // The FIFO (64 KiB), the pipe backend's own bounded queue (1 MiB) and the guest's
      // stdout (a pipe of GUEST_PIPE_BYTES that chardev run made) are in flight.
      t.diagnostic(await guestHeldDuringStall(guest, reader, 2 * MiB + GUEST_PIPE_BYTES));
      await sameStream(guest, reader, run, 20_000);
    });

    it('dev on a host tty (a pty slave; Python reads the master at 2 MB/s): every byte of 4 MiB', T, async (t) => {
      const reader = python(READER, ['master', '-', String(4 * MiB), String(RATE), '-1', '0']);
      const slave = (await expectLine(reader, /^slave (\/dev\/pts\/\d+)$/))[1] as string;
      const guest = new GuestFiles(dir, 'dev-slow', 4 * MiB);
      const run = await chardevRun('devslow', `<serial type='dev'><source path='${q(slave)}'/></serial>`, guest.command);
      await expectLine(reader, /^ready$/);
      guest.start();
      const result = await sameStream(guest, reader, run, 30_000);
      t.diagnostic(guestWaited(result, guest.bytes, 2 * MiB));
    });

    it("chardev console's writer on a terminal read at 2 MB/s (Python pty): every byte of 4 MiB", T, async (t) => {
      const guest = new GuestFiles(dir, 'console-slow', 4 * MiB);
      // Nothing else attached: the console is the only client, so the writer.
      const run = await chardevRun('conslow', `<serial type='null'/>`, guest.command);
      const reader = python(READER, [
        'console',
        '-',
        String(guest.bytes),
        String(RATE),
        '-1',
        '0',
        '--',
        process.execPath,
        path.join(ROOT, 'bin', 'chardev.js'),
        'console',
        '--run-dir',
        runDir,
        'conslow',
        'serial0',
      ]);
      await expectLine(reader, /^ready$/, 20_000);
      guest.start();
      const result = await sameStream(guest, reader, run, 30_000);
      t.diagnostic(guestWaited(result, guest.bytes, 2 * MiB));
      // The console ends with the domain (or ^]): either way, cleanly.
      assert.match(await reader.line(20_000), /^exit 0$/);
    });
  });

  describe('the browser console (Chromium)', () => {
    let browser: Browser | undefined;
    before(async () => {
      browser = await launchChromium();
    });
    after(async () => {
      await browser?.close();
    });

    /**
     * Open the device's page, wait until it is the writer, then hook xterm.js's write (the
     * page's own test handle, window.chardevTerm): every byte the page hands the terminal is
     * kept, and counted again once the terminal has parsed it.
     */
    async function openTab(url: string): Promise<Page> {
      assert.ok(browser !== undefined);
      const page = await browser.newPage();
      await page.goto(url);
      // Polled with evaluate: the page's CSP forbids the eval that waitForFunction would use.
      await eventually(async () => await page.evaluate<boolean>('window.chardevConsole?.role === "writer"'), 'the tab to be the writer', 10_000);
      await page.evaluate(`(() => {
        const term = window.chardevTerm;
        const write = term.write.bind(term);
        const tap = { chunks: [], given: 0, parsed: 0 };
        window.flowTap = tap;
        term.write = (data, cb) => {
          const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data.slice();
          tap.chunks.push(bytes);
          tap.given += bytes.length;
          write(data, () => { tap.parsed += bytes.length; cb?.(); });
        };
      })()`);
      return page;
    }
    const tapped = (page: Page): Promise<{ given: number; parsed: number }> =>
      page.evaluate<{ given: number; parsed: number }>('({ given: window.flowTap.given, parsed: window.flowTap.parsed })');
    const tabSha = (page: Page): Promise<string> =>
      page.evaluate<string>(`(async () => {
        const all = new Uint8Array(window.flowTap.given);
        let off = 0;
        for (const c of window.flowTap.chunks) { all.set(c, off); off += c.length; }
        const d = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
        return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
      })()`);

    // Chromium reads faster than this guest writes: no pacing here, the count and hash are the point.
    it("vc device: the tab (the writer) gets every byte of 4 MiB, in xterm.js's write, parsed", T, async () => {
      const guest = new GuestFiles(dir, 'web-fast', 4 * MiB, 'text');
      const run = await chardevRun('webfast', `<serial type='vc'/>`, guest.command);
      await run.out(/^web console: http:\S+\/console\/serial0 /m);
      const url = consoleUrl('webfast');
      const page = await openTab(url);
      try {
        guest.start();
        const result = await guest.finished(30_000);
        assert.equal(result.count, guest.bytes);
        let seen = await tapped(page);
        await eventually(async () => (seen = await tapped(page)).parsed >= guest.bytes, `xterm.js to parse ${guest.bytes} bytes`, 30_000).catch(() => {});
        assert.equal(seen.given, guest.bytes, 'bytes the page handed xterm.js');
        assert.equal(seen.parsed, guest.bytes, 'bytes xterm.js parsed');
        assert.equal(await tabSha(page), result.sha, 'sha256 in the page equals the guest’s');
        const { code } = await run.exited;
        assert.equal(code, 0, run.stderr);
      } finally {
        await page.close();
      }
    });

    it('vc device: a tab paused in the debugger (CDP Debugger.pause) holds the guest; resumed, it gets everything', T, async (t) => {
      assert.ok(browser !== undefined);
      // Between chardev and the paused page the kernel's TCP buffers hold what autotuning gave
      // them (4.6–7.6 MiB were seen here): the guest must write well beyond that to be held.
      const guest = new GuestFiles(dir, 'web-stall', 16 * MiB, 'text');
      const run = await chardevRun('webstall', `<serial type='vc'/>`, guest.command);
      await run.out(/^web console: http:\S+\/console\/serial0 /m);
      const url = consoleUrl('webstall');
      const page = await openTab(url);
      const cdp = await page.context().newCDPSession(page);
      try {
        await cdp.send('Debugger.enable');
        // Takes effect at the next script the page runs: the next WebSocket message.
        await cdp.send('Debugger.pause');
        guest.start();
        await sleep(2000);
        const p1 = guest.progress();
        await sleep(2000);
        const p2 = guest.progress();
        assert.equal(p2, p1, `the guest's progress stands still while the tab is paused (${p1} → ${p2})`);
        assert.ok(p1 < guest.bytes && guest.result() === undefined, `the guest is held (${p1} of ${guest.bytes})`);
        t.diagnostic(`the guest stood at ${p1} bytes while the tab was paused`);
        await cdp.send('Debugger.resume');
        await cdp.send('Debugger.disable');
        const result = await guest.finished(30_000);
        let seen = await tapped(page);
        await eventually(async () => (seen = await tapped(page)).parsed >= guest.bytes, `xterm.js to parse ${guest.bytes} bytes`, 30_000).catch(() => {});
        assert.equal(seen.parsed, guest.bytes, 'bytes xterm.js parsed');
        assert.equal(await tabSha(page), result.sha, 'sha256 in the page equals the guest’s');
        const { code } = await run.exited;
        assert.equal(code, 0, run.stderr);
      } finally {
        await cdp.detach().catch(() => {});
        await page.close();
      }
    });
  });

  describe('client → guest: input waits, never dropped', () => {
    /**
     * The guest reads nothing until GO, then exactly N bytes into sha256sum. Before GO the
     * sender must be held (4 MiB is far more than the kernel's and chardev's buffers); after,
     * the guest's checksum is the sender's.
     */
    async function inputWaits(
      name: string,
      devices: string,
      client: (run: ChardevProcess) => Promise<[string, string]>,
      flags: readonly string[] = [],
    ): Promise<void> {
      const bytes = 4 * MiB;
      const go = path.join(dir, `${name}.go`);
      const ready = path.join(dir, `${name}.ready`);
      const out = path.join(dir, `${name}.sha`);
      // On its own pty (--tty) the guest makes its terminal raw first: every byte passes.
      const raw = flags.includes('--tty') ? 'stty raw -echo; ' : '';
      const script = `${raw}: > '${ready}'; while [ ! -e '${go}' ]; do kill -0 $PPID 2>/dev/null || exit 1; sleep 0.05; done; head -c ${bytes} | sha256sum > '${out}.tmp' && mv '${out}.tmp' '${out}'`;
      const run = await chardevRun(name, devices, ['sh', '-c', script], flags);
      await waitFor(() => fs.existsSync(ready), 'the guest to be ready', 10_000);
      const [kind, target] = await client(run);
      const sender = python(SENDER, [kind, target, String(bytes), '7']);
      await expectLine(sender, /^connected$/);
      const sent = sender.line(30_000);
      const early = await Promise.race([sent, sleep(2500).then(() => undefined)]);
      assert.equal(early, undefined, `the sender is held while the guest does not read (it said ${JSON.stringify(early)})`);
      fs.writeFileSync(go, '');
      const m = /^sent (\d+) ([0-9a-f]{64})$/.exec(await sent);
      assert.ok(m !== null);
      assert.equal(Number(m[1]), bytes);
      await waitFor(() => fs.existsSync(out), `the guest's checksum (${run.stderr})`, 20_000);
      assert.equal(fs.readFileSync(out, 'latin1').split(' ')[0], m[2], 'the guest read exactly what the client sent');
      await sender.kill();
      const { code } = await run.exited;
      assert.equal(code, 0, run.stderr);
    }

    it('through a unix server: 4 MiB sent while the guest does not read arrive whole (sha256)', T, async () => {
      const sock = path.join(dir, 'in-unix.sock');
      await inputWaits('inunix', `<serial type='unix'><source mode='bind' path='${q(sock)}'/></serial>`, async () => ['unix', sock]);
    });

    it('through the pty device (Python writes the slave, raw): 4 MiB arrive whole', T, async () => {
      await inputWaits('inpty', `<serial type='pty'/>`, async (run) => [
        'tty',
        (await run.out(/redirected to (\/dev\/pts\/\d+) \(label charserial0\)/))[1] as string,
      ]);
    });

    it('--tty (the guest on its own pty, stty raw -echo), through a unix server: 4 MiB arrive whole', T, async () => {
      const sock = path.join(dir, 'in-tty.sock');
      await inputWaits('intty', `<serial type='unix'><source mode='bind' path='${q(sock)}'/></serial>`, async () => ['unix', sock], ['--tty']);
    });
  });
});
