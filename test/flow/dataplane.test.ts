/**
 * The data-plane thread's destinations besides sockets (splice.test.ts has those): a pty's
 * master, a `file` device's file and a `null` device's `<log>`, rotated or not. Real
 * processes: a Python guest writing a random stream into the device's pipe (pausing now and
 * then, so the output goes back and forth between the data-plane thread and libuv), a
 * Python reader on the pty's slave. Every check is count + sha256 of what arrived.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { domainXml, waitFor } from '../core/helpers.ts';
import { PYTHON, readRotated, sha256, tmp } from '../reliability/helpers.ts';
import { open } from '../../src/index.ts';
import type { Chardev, Domain } from '../../src/index.ts';
import { GUEST_PIPE_BYTES, type GuestOutput, guestPipe, startDataPlane } from '../../src/core/guest-output.ts';
import { pipeSize } from '../../src/platform/splice.ts';
import type { ClientSink } from '../../src/core/hub.ts';
import { dataPlane } from '../../src/platform/data-plane.ts';

const MiB = 1024 * 1024;

function report(text: string): void {
  process.stderr.write(`dataplane: ${text}\n`);
}

/**
 * Reads N bytes from a pty slave (RATE bytes/s, 0 unpaced; nothing for STALL_S s first, or
 * once it has STALL_AT bytes; or, with QUIET_S > 0, until nothing came for that long), keeps
 * them in FILE, then prints `COUNT SHA256` and closes the slave.
 */
const PTY_READER = `
import hashlib, os, select, sys, time
path, n, rate, stall, quiet, keep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), open(sys.argv[6], 'wb')
stall_at = int(sys.argv[7]) if len(sys.argv) > 7 else 0
fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
print('open', flush=True)
if not stall_at:
    time.sleep(stall)
got, h, t0 = 0, hashlib.sha256(), time.monotonic()
while got < n:
    if stall_at and got >= stall_at:
        stall_at = 0
        time.sleep(stall)
    if quiet > 0 and not select.select([fd], [], [], quiet)[0]:
        break
    b = os.read(fd, min(65536, n - got))
    if not b:
        break
    got += len(b)
    h.update(b)
    keep.write(b)
    if rate > 0:
        ahead = t0 + got / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
keep.close()
print(got, h.hexdigest(), flush=True)
`;
import { FILE_GUEST_PY } from '../helpers/file-guest-py.ts';
import { fileSizeLimit } from '../helpers/fsize-limit.ts';

interface Rig {
  readonly dir: string;
  readonly data: Buffer;
  readonly domain: Domain;
  readonly device: Chardev;
  readonly child: ChildProcess;
  readonly output: GuestOutput;
  progress(): number;
}

let root: string;
before(async () => {
  root = tmp('dataplane');
  await startDataPlane();
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A domain with `device` (serial0), and a guest writing `bytes` random bytes to it once `start()` is called. */
async function rig(
  ctx: TestContext,
  device: (dir: string) => string,
  bytes: number,
  pause: { everyBytes: number; ms: number } = { everyBytes: 0, ms: 0 },
): Promise<Rig & { start(): void }> {
  const dir = fs.mkdtempSync(path.join(root, 'r'));
  const data = randomBytes(bytes);
  const dataFile = path.join(dir, 'data');
  fs.writeFileSync(dataFile, data);
  let xml = domainXml(device(dir));
  xml = xml.replace("<domain type='kvm'>", "<domain type='kvm' xmlns:cd='urn:chardev:1'>");
  const domain = await open(xml, { logDir: dir, ptyPollMs: 10 });
  const dev = domain.device('serial0');
  dev.on('error', () => {});
  const progressFile = path.join(dir, 'progress');
  let child: ChildProcess | undefined;
  let output: GuestOutput | undefined;
  const r = {
    dir,
    data,
    domain,
    device: dev,
    get child(): ChildProcess {
      if (child === undefined) throw new Error('not started');
      return child;
    },
    get output(): GuestOutput {
      if (output === undefined) throw new Error('not started');
      return output;
    },
    progress(): number {
      try {
        return Number(fs.readFileSync(progressFile, 'latin1') || '0');
      } catch {
        return 0;
      }
    },
    start(): void {
      const pipe = guestPipe();
      try {
        child = spawn(PYTHON, ['-S', '-c', FILE_GUEST_PY, dataFile, progressFile, String(pause.everyBytes), String(pause.ms)], {
          stdio: ['ignore', pipe.writeFd, 'inherit'],
        });
      } finally {
        fs.closeSync(pipe.writeFd);
      }
      output = dev.pipeFrom(pipe.readFd);
    },
  };
  ctx.after(async () => {
    child?.kill('SIGKILL');
    await domain.stop();
  });
  return r;
}

function assertSpliced(output: GuestOutput, bytes: number, atLeast: number): void {
  const share = output.stats.spliced / bytes;
  assert.ok(share >= atLeast, `${(share * 100).toFixed(1)} % of the stream went by splice, not at least ${atLeast * 100} %`);
}

/** Runs PTY_READER on the device's slave; resolves with `[count, sha256]` once it has read `n` bytes. */
function ptyReader(
  device: Chardev,
  n: number,
  rateBytesPerS = 0,
  stallS = 0,
  quietS = 0,
  keep = '/dev/null',
  stallAtBytes = 0,
): { opened: Promise<void>; done: Promise<[number, string]>; proc: ChildProcess } {
  const ptyPath = device.ptyPath;
  if (ptyPath === undefined) throw new Error('no pty');
  const proc = spawn(PYTHON, ['-S', '-c', PTY_READER, ptyPath, String(n), String(rateBytesPerS), String(stallS), String(quietS), keep, String(stallAtBytes)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  let openedResolve: () => void = () => {};
  const opened = new Promise<void>((resolve) => (openedResolve = resolve));
  const done = new Promise<[number, string]>((resolve, reject) => {
    proc.stdout?.on('data', (b: Buffer) => {
      text += b.toString();
      if (text.startsWith('open\n')) openedResolve();
    });
    proc.on('close', () => {
      const [count, sha] = text
        .replace(/^open\n/, '')
        .trim()
        .split(' ');
      if (count === undefined || sha === undefined) reject(new Error(`pty reader: ${text}`));
      else resolve([Number(count), sha]);
    });
  });
  return { opened, done, proc };
}

describe('the data-plane thread: pty, file and <log> destinations (real processes, sha256)', { timeout: 120000 }, () => {
  it('a pty reader reading as fast as it can gets every byte, in order, almost all of it spliced to the master', { timeout: 60000 }, async (ctx) => {
    const bytes = 16 * MiB;
    const r = await rig(ctx, () => `<serial type='pty'><target port='0'/></serial>`, bytes);
    const reader = ptyReader(r.device, bytes);
    ctx.after(() => reader.proc.kill());
    let sent = -1;
    r.device.on('client', (change, info) => {
      if (change === 'detached') sent = info.bytesSent;
    });
    await reader.opened;
    await waitFor(() => r.device.hub.size === 1, 'the pty reader to be seen', 5000);
    r.start();
    const [got, sha] = await reader.done;
    assert.equal(got, bytes);
    assert.equal(sha, sha256(r.data));
    await r.output.ended;
    assert.equal(r.device.counters.bytesFromGuest, bytes);
    assert.equal(r.device.counters.dropped, 0);
    await waitFor(() => sent >= 0, 'the reader to be seen leaving', 5000);
    assert.equal(sent, bytes, 'the reader is counted every byte');
    assertSpliced(r.output, bytes, 0.9);
    report(`pty: ${bytes} B, ${((r.output.stats.spliced / bytes) * 100).toFixed(1)} % spliced, ${r.output.stats.waits} waits for the reader`);
  });

  it('a slow pty reader (2 MB/s) and a stalled one (nothing for 2 s) hold the guest and get every byte', { timeout: 60000 }, async (ctx) => {
    const bytes = 6 * MiB;
    const r = await rig(ctx, () => `<serial type='pty'><target port='0'/></serial>`, bytes);
    const reader = ptyReader(r.device, bytes, 2_000_000, 2);
    ctx.after(() => reader.proc.kill());
    await reader.opened;
    await waitFor(() => r.device.hub.size === 1, 'the pty reader to be seen', 5000);
    r.start();
    // Stalled: the guest fills its pipe and the pty's buffer, then waits in write(2).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const held = r.progress();
    assert.ok(held > 0 && held < 4 * MiB, `the guest is held while the reader stalls: it wrote ${held} of ${bytes} B`);
    const [got, sha] = await reader.done;
    assert.equal(got, bytes);
    assert.equal(sha, sha256(r.data));
    await r.output.ended;
    assert.equal(r.device.counters.dropped, 0);
    assertSpliced(r.output, bytes, 0.5);
    assert.ok(r.output.stats.waits > 0, 'the guest waited for the reader');
    report(`slow pty: held at ${held} B while stalled; ${r.output.stats.waits} waits, ${r.output.stats.switches} path changes`);
  });

  it('a pty reader stalling mid-stream (after 2 MiB, for 3 s) holds the guest while the thread sleeps, then gets every byte', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 12 * MiB;
    const r = await rig(ctx, () => `<serial type='pty'><target port='0'/></serial>`, bytes);
    const reader = ptyReader(r.device, bytes, 0, 3, 0, '/dev/null', 2 * MiB);
    ctx.after(() => reader.proc.kill());
    await reader.opened;
    await waitFor(() => r.device.hub.size === 1, 'the pty reader to be seen', 5000);
    r.start();
    // (Its first chunks go by libuv, so splicing has moved a little less than 2 MiB when it stalls.)
    await waitFor(() => r.output.stats.spliced >= MiB, 'the stream to be spliced to the master', 20000);
    // The guest fills its pipe and the pty's buffer, then waits in write(2); the run stays
    // on the thread, which waits in one poll for the master's room: it does not spin.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const polls0 = dataPlane().wakeups;
    const held = r.progress();
    await new Promise((resolve) => setTimeout(resolve, 800));
    const polls = dataPlane().wakeups - polls0;
    assert.equal(r.progress(), held, 'the guest wrote nothing more while the reader read nothing');
    assert.ok(held < bytes, `the guest is held: it wrote ${held} of ${bytes} B`);
    assert.ok(polls <= 2, `the data-plane thread woke ${polls} times while the pty reader read nothing`);
    const [got, sha] = await reader.done;
    assert.equal(got, bytes);
    assert.equal(sha, sha256(r.data));
    await r.output.ended;
    assert.equal(r.device.counters.dropped, 0);
    assertSpliced(r.output, bytes, 0.9);
    report(
      `pty stalled mid-stream: held at ${held} B, ${polls} wake-ups while stalled; ${r.output.stats.waits} waits, ${r.output.stats.switches} path changes`,
    );
  });

  it('the pty reader leaving mid-stream and another coming: the first got a prefix, output while nobody was there is dropped and counted, the second gets the rest, each byte once', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 24 * MiB;
    const r = await rig(ctx, () => `<serial type='pty'><target port='0'/></serial>`, bytes, { everyBytes: 4 * MiB, ms: 100 });
    const sent: number[] = [];
    r.device.on('client', (change, info) => {
      if (change === 'detached') sent.push(info.bytesSent);
    });
    const first = ptyReader(r.device, 4 * MiB, 0, 0, 0, path.join(r.dir, 'first'));
    ctx.after(() => first.proc.kill());
    await first.opened;
    await waitFor(() => r.device.hub.size === 1, 'the first reader to be seen', 5000);
    r.start();
    const [gotA, shaA] = await first.done;
    assert.equal(gotA, 4 * MiB);
    assert.equal(shaA, sha256(r.data.subarray(0, gotA)), 'the first reader got the stream from its start');
    await waitFor(() => sent.length === 1, 'the first reader to be seen leaving', 5000);
    const sentA = sent[0] ?? -1;
    assert.ok(sentA >= gotA, `bytes-sent ${sentA} covers what the first reader read (${gotA})`);
    // Nobody there for a while: output is dropped (QEMU's pty does the same).
    await waitFor(() => r.device.counters.dropped > 0, 'output to be dropped while nobody reads', 10000);
    const secondFile = path.join(r.dir, 'second');
    const second = ptyReader(r.device, bytes, 0, 0, 1.5, secondFile);
    ctx.after(() => second.proc.kill());
    const [gotB] = await second.done;
    await r.output.ended;
    assert.ok(gotB > 0, 'the second reader got output');
    const got = fs.readFileSync(secondFile);
    assert.equal(sha256(got), sha256(r.data.subarray(bytes - gotB)), 'the second reader got the end of the stream, contiguous');
    await waitFor(() => sent.length === 2, 'the second reader to be seen leaving', 5000);
    const c = r.device.counters;
    assert.equal(c.bytesFromGuest, bytes);
    assert.equal(sent[1], gotB, 'the second reader is counted what it read');
    assert.equal(sentA + gotB + c.dropped, bytes, `sent (${sentA} + ${gotB}) and dropped (${c.dropped}) add up to what the guest wrote`);
    report(
      `pty leave and return: first read ${gotA} B (sent ${sentA}), ${c.dropped} B dropped, second read ${gotB} B; ${((r.output.stats.spliced / bytes) * 100).toFixed(1)} % spliced, ${r.output.stats.switches} path changes`,
    );
  });

  it("a viewer attaching to a pty device mid-stream (<cd:clients max='2'/>) stops the splicing and leaving restarts it: the pty reader gets every byte, the viewer a contiguous part", {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 24 * MiB;
    const r = await rig(ctx, () => `<serial type='pty'><target port='0'/><cd:clients max='2'/></serial>`, bytes);
    const reader = ptyReader(r.device, bytes);
    ctx.after(() => reader.proc.kill());
    await reader.opened;
    await waitFor(() => r.device.hub.size === 1, 'the pty reader to be seen', 5000);
    r.start();
    await waitFor(() => r.output.stats.spliced >= 2 * MiB, 'the stream to be spliced to the master', 20000);
    const seen: Buffer[] = [];
    let seenBytes = 0;
    const sink: ClientSink = {
      send: (data) => {
        seen.push(Buffer.from(data));
        seenBytes += data.length;
      },
      queuedBytes: 0,
      notice: () => {},
      close: () => {},
      pause: () => {},
      resume: () => {},
    };
    const viewer = r.device.hub.attach(sink, { kind: 'pty', label: 'test viewer', readonly: true });
    await waitFor(() => seenBytes >= MiB, 'the viewer to get output', 20000);
    viewer.detach();
    const splicedAtLeave = r.output.stats.spliced;
    const [got, sha] = await reader.done;
    assert.equal(got, bytes);
    assert.equal(sha, sha256(r.data), 'the pty reader got every byte, in order, once');
    await r.output.ended;
    assert.equal(r.device.counters.dropped, 0);
    const part = Buffer.concat(seen);
    const at = r.data.indexOf(part.subarray(0, 64));
    assert.ok(at >= 0, 'the viewer got a part of the stream');
    assert.equal(sha256(part), sha256(r.data.subarray(at, at + part.length)), 'the viewer got a contiguous part');
    assert.ok(r.output.stats.spliced > splicedAtLeave, 'splicing went on once the viewer left');
    assert.ok(r.output.stats.switches >= 2, `the path changed ${r.output.stats.switches} times`);
    report(
      `pty + viewer: viewer got ${part.length} B from ${at}; ${((r.output.stats.spliced / bytes) * 100).toFixed(1)} % spliced, ${r.output.stats.switches} path changes`,
    );
  });

  it("a viewer attaching while the pty reader stalls (the run's buffer holding bytes it read from the guest): those bytes reach the reader before anything newer, and the viewer gets the stream from the next byte", {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 16 * MiB;
    const r = await rig(ctx, () => `<serial type='pty'><target port='0'/><cd:clients max='2'/></serial>`, bytes);
    const keep = path.join(r.dir, 'reader');
    // Stalls for 3 s after 2 MiB, then reads until nothing came for 2 s (a byte lost would
    // leave it short, not waiting for ever).
    const reader = ptyReader(r.device, bytes, 0, 3, 2, keep, 2 * MiB);
    ctx.after(() => reader.proc.kill());
    const sent: number[] = [];
    r.device.on('client', (change, info) => {
      if (change === 'detached' && info.kind === 'pty' && info.label !== 'test viewer') sent.push(info.bytesSent);
    });
    await reader.opened;
    await waitFor(() => r.device.hub.size === 1, 'the pty reader to be seen', 5000);
    r.start();
    await waitFor(() => r.output.stats.spliced >= MiB, 'the stream to go by the data-plane thread', 20000);
    // Held: the pty is full, the run has read a buffer's worth from the guest's pipe and
    // written only part of it.
    for (let last = -1; ; ) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const now = r.progress();
      if (now === last) break;
      last = now;
    }
    assert.equal(r.output.path, 'kernel', 'the run is on the thread while the reader stalls');
    const seen: Buffer[] = [];
    const sink: ClientSink = {
      send: (data) => void seen.push(Buffer.from(data)),
      queuedBytes: 0,
      notice: () => {},
      close: () => {},
      pause: () => {},
      resume: () => {},
    };
    r.device.hub.attach(sink, { kind: 'pty', label: 'test viewer', readonly: true });
    // Synchronously: the run stopped before the viewer came, and what it held was counted.
    const takenAtAttach = r.device.counters.bytesFromGuest;
    const [got, sha] = await reader.done;
    assert.equal(got, bytes, 'the reader got every byte (none left behind in the run)');
    assert.equal(sha, sha256(r.data), 'the reader got every byte, in order, once');
    await r.output.ended;
    const c = r.device.counters;
    assert.equal(c.bytesFromGuest, bytes);
    assert.equal(c.dropped, 0);
    const part = Buffer.concat(seen);
    assert.equal(part.length, bytes - takenAtAttach, 'the viewer got everything after what the device had taken when it came');
    assert.equal(sha256(part), sha256(r.data.subarray(takenAtAttach)), 'the viewer got the stream from the next byte on, none the reader had before');
    await waitFor(() => sent.length === 1, 'the reader to be seen leaving', 5000);
    assert.equal(sent[0], bytes, 'the reader is counted every byte once');
    report(`pty reader stalled, viewer attached: ${takenAtAttach} B taken at the attach; viewer got ${part.length} B`);
  });

  it('a pty stream while a file device (another guest, pausing) starts and ends runs on the same thread: both get every byte', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 24 * MiB;
    const pty = await rig(ctx, () => `<serial type='pty'><target port='0'/></serial>`, bytes);
    const file = await rig(ctx, (dir) => `<serial type='file'><source path='${path.join(dir, 'out')}'/><target port='0'/></serial>`, 16 * MiB, {
      everyBytes: MiB,
      ms: 60,
    });
    const reader = ptyReader(pty.device, bytes);
    ctx.after(() => reader.proc.kill());
    await reader.opened;
    await waitFor(() => pty.device.hub.size === 1, 'the pty reader to be seen', 5000);
    pty.start();
    file.start();
    const [got, sha] = await reader.done;
    await file.output.ended;
    await pty.output.ended;
    assert.equal(got, bytes);
    assert.equal(sha, sha256(pty.data), 'the pty reader got every byte, in order, once');
    const out = fs.readFileSync(path.join(file.dir, 'out'));
    assert.equal(out.length, 16 * MiB);
    assert.equal(sha256(out), sha256(file.data), 'the file holds every byte, in order, once');
    assert.equal(pty.device.counters.dropped, 0);
    assertSpliced(pty.output, bytes, 0.9);
    assert.ok(file.output.stats.switches >= 4, `the file's path changed ${file.output.stats.switches} times (its guest paused 15 times)`);
    report(
      `pty beside a file: pty ${((pty.output.stats.spliced / bytes) * 100).toFixed(1)} % spliced; file ${((file.output.stats.spliced / (16 * MiB)) * 100).toFixed(1)} % spliced, ${file.output.stats.switches} path changes`,
    );
  });

  it('a file device with a guest that pauses (the pipe goes back and forth between libuv and the thread) holds the stream exactly, truncated or appended to', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 16 * MiB;
    for (const append of [false, true]) {
      const head = append ? Buffer.from('what the file held before\n') : Buffer.alloc(0);
      const r = await rig(
        ctx,
        (dir) => {
          if (append) fs.writeFileSync(path.join(dir, 'out'), head);
          return `<serial type='file'><source path='${path.join(dir, 'out')}'${append ? " append='on'" : ''}/><target port='0'/></serial>`;
        },
        bytes,
        { everyBytes: 2 * MiB, ms: 60 },
      );
      r.start();
      await r.output.ended;
      const file = fs.readFileSync(path.join(r.dir, 'out'));
      assert.equal(file.length, head.length + bytes);
      assert.equal(sha256(file), sha256(Buffer.concat([head, r.data])));
      assert.equal(r.device.counters.bytesFromGuest, bytes);
      assert.ok(r.output.stats.switches >= 4, `the path changed ${r.output.stats.switches} times (the guest paused 7 times)`);
      assertSpliced(r.output, bytes, 0.5);
      report(`file${append ? ' (append)' : ''}: ${((r.output.stats.spliced / bytes) * 100).toFixed(1)} % spliced, ${r.output.stats.switches} path changes`);
    }
  });

  it("a file device's run leaves the guest's pipe its size while it copies (the thread moves its pages into a pipe of its own), across a pause and at the end; every byte in the file", {
    timeout: 60000,
  }, async (ctx) => {
    const half = 32 * MiB;
    const dir = fs.mkdtempSync(path.join(root, 'pipe-size'));
    const data = randomBytes(2 * half);
    const dataFile = path.join(dir, 'data');
    fs.writeFileSync(dataFile, data);
    const out = path.join(dir, 'out');
    const domain = await open(domainXml(`<serial type='file'><source path='${out}'/><target port='0'/></serial>`), { logDir: dir });
    ctx.after(() => domain.stop());
    const dev = domain.device('serial0');
    // Writes the first half, waits for a line on stdin (the run ends after its grace
    // meanwhile), writes the second half and exits.
    const guestPy = `
import os, sys
data = open(sys.argv[1], 'rb').read()
half = len(data) // 2
def put(b):
    mv = memoryview(b)
    for i in range(0, len(mv), 65536):
        os.write(1, mv[i:i + 65536])
put(data[:half])
sys.stdin.readline()
put(data[half:])
`;
    const pipe = guestPipe();
    // A second description of the same pipe, to read its size whatever the device does with its own fd.
    const probe = fs.openSync(`/proc/self/fd/${pipe.readFd}`, 'r');
    ctx.after(() => fs.closeSync(probe));
    const before = pipeSize(probe);
    let child: ChildProcess;
    try {
      child = spawn(PYTHON, ['-S', '-c', guestPy, dataFile], { stdio: ['pipe', pipe.writeFd, 'inherit'] });
    } finally {
      fs.closeSync(pipe.writeFd);
    }
    ctx.after(() => child.kill('SIGKILL'));
    const seen = new Set<number | undefined>();
    const sampler = setInterval(() => seen.add(pipeSize(probe)), 1);
    ctx.after(() => clearInterval(sampler));
    const output = dev.pipeFrom(pipe.readFd);
    await waitFor(() => dev.counters.bytesFromGuest === half, 'the first half in the file', 30000);
    // The guest waits: the run ends after its grace.
    await waitFor(() => dataPlane().size === 0, 'the run to end while the guest waits', 10000);
    child.stdin?.end('go\n');
    await output.ended;
    clearInterval(sampler);
    assert.equal(before, GUEST_PIPE_BYTES);
    assert.deepEqual([...seen], [before], `the pipe was ${[...seen].join(', ')} bytes while the guest streamed`);
    assert.equal(pipeSize(probe), before, 'the pipe has its size after the last run');
    const file = fs.readFileSync(out);
    assert.equal(file.length, data.length);
    assert.equal(sha256(file), sha256(data));
    assert.equal(dev.counters.bytesFromGuest, data.length);
    assertSpliced(output, data.length, 0.5);
  });

  it('a rotated file device and a rotated <log> of a null device: every byte once, in order, each full file exactly the rotation size', {
    timeout: 60000,
  }, async (ctx) => {
    const bytes = 20 * MiB;
    // An odd size, so rotation falls inside splices and inside libuv's chunks.
    const size = 1_000_003;
    for (const kind of ['file', 'log'] as const) {
      const r = await rig(
        ctx,
        (dir) =>
          kind === 'file'
            ? `<serial type='file'><source path='${path.join(dir, 'out')}'/><target port='0'/><cd:rotate size='${size}' backups='100'/></serial>`
            : `<serial type='null'><log file='${path.join(dir, 'out')}'/><target port='0'/><cd:rotate size='${size}' backups='100'/></serial>`,
        bytes,
        { everyBytes: 5 * MiB, ms: 60 },
      );
      r.start();
      await r.output.ended;
      const { files, bytes: joined } = readRotated(path.join(r.dir, 'out'));
      assert.equal(joined.length, bytes, `${kind}: the files hold every byte`);
      assert.equal(sha256(joined), sha256(r.data), `${kind}: sha256 of the files joined oldest first`);
      assert.equal(files.length, Math.ceil(bytes / size), `${kind}: ${files.length} files`);
      for (const f of files.slice(0, -1)) assert.equal(fs.statSync(f).size, size, `${kind}: ${path.basename(f)} is exactly the rotation size`);
      assert.equal(r.device.counters.bytesFromGuest, bytes);
      assertSpliced(r.output, bytes, 0.5);
      report(
        `rotated ${kind}: ${files.length} files, ${((r.output.stats.spliced / bytes) * 100).toFixed(1)} % spliced, ${r.output.stats.switches} path changes`,
      );
    }
  });
  it('a file device and a <log> that stop taking bytes mid-stream (RLIMIT_FSIZE: a short write, then EFBIG) hold the stream up to the limit; no byte goes uncounted', {
    timeout: 60000,
  }, async (ctx) => {
    // The thread's write(2) to the file then fails the way a full disk does, after a partial write.
    const limiter = fileSizeLimit();
    if (typeof limiter === 'string') {
      ctx.skip(limiter);
      return;
    }
    const bytes = 16 * MiB;
    // Odd, so the limit falls inside a transfer.
    const limit = 5 * MiB + 12345;
    for (const kind of ['file', 'log'] as const) {
      const r = await rig(
        ctx,
        (dir) =>
          kind === 'file'
            ? `<serial type='file'><source path='${path.join(dir, 'out')}'/><target port='0'/></serial>`
            : `<serial type='null'><log file='${path.join(dir, 'out')}'/><target port='0'/></serial>`,
        bytes,
      );
      const errors: string[] = [];
      r.device.on('error', (e: Error & { code?: string }) => errors.push(`${e.code ?? ''}: ${e.message}`));
      await limiter.within(limit, async () => {
        r.start();
        await r.output.ended;
      });
      const file = fs.readFileSync(path.join(r.dir, 'out'));
      assert.equal(file.length, limit, `${kind}: the file grew to the limit`);
      assert.equal(sha256(file), sha256(r.data.subarray(0, limit)), `${kind}: sha256 of the file: the stream up to the limit`);
      const c = r.device.counters;
      assert.equal(c.bytesFromGuest, bytes, `${kind}: every byte was taken from the guest`);
      // A file device's output that the file did not take is dropped; a null device's output
      // is discarded anyway, only its log stopped.
      assert.equal(c.dropped, kind === 'file' ? bytes - limit : 0, `${kind}: bytes counted dropped`);
      assert.ok(r.output.stats.spliced > 0, `${kind}: the data-plane thread moved bytes before the file failed`);
      assert.equal(errors.length, 1, `${kind}: one error reported: ${errors.join('; ')}`);
      assert.match(errors[0] ?? '', /^ERR_BACKEND_WRITE: .*File too large/);
      report(`${kind} at RLIMIT_FSIZE: ${r.output.stats.spliced} B by the thread, ${c.dropped} B dropped; ${errors[0]}`);
    }
  });
});
