/**
 * A busy exchange of small chunks on the data plane, both ways (`ChunkRate`,
 * `Chardev.duplexKernelPath`): `chardev run`'s wiring (the guest's stdout on `guestPipe`
 * read by `GuestOutput`, its stdin a socketpair fed by `GuestInput`) with `cat` as the guest
 * and a real client (Python, a plain socket) that first plays ping-pong with chunks of 1–32
 * bytes — never a burst, so only the exchange's rate can move it to the thread — and then
 * streams small chunks while it reads fast, slowly, or not at all until a viewer has come and
 * gone; and with a history, where the output must stay on libuv's path, the input stays
 * there too. Every check is count + sha256 of what came back against what was sent, the
 * device's counters, and which path moved the bytes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { domainXml, waitFor } from '../core/helpers.ts';
import { PYTHON, tmp } from '../reliability/helpers.ts';
import { open } from '../../src/index.ts';
import type { Chardev } from '../../src/index.ts';
import { GuestInput, guestInputSocket } from '../../src/core/guest-input.ts';
import { type GuestOutput, guestPipe, startDataPlane } from '../../src/core/guest-output.ts';

/**
 * The client. argv: KIND ADDRESS EXCHANGES BYTES MODE. Sends EXCHANGES chunks of 1–32 random
 * bytes, each after the one before came back whole; prints `exchanged COUNT` and waits for a line
 * on its stdin; then sends BYTES more in chunks of 1–64 bytes from a thread (TCP_NODELAY:
 * each its own segment) while it reads —
 * MODE `fast` as fast as it can, `slow` 4 KiB per 2 ms, `stall` nothing until a line on its
 * stdin — and prints `SENT_SHA256 GOT_SHA256 COUNT` once all of it came back. Its receive
 * buffer is small, so a client that does not read holds the guest soon.
 */
const CLIENT = `
import hashlib, random, socket, sys, threading, time
kind, address, exchanges, total, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fam = socket.AF_INET if kind == 'tcp' else socket.AF_UNIX
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(('127.0.0.1', int(address)) if kind == 'tcp' else address)
if kind == 'tcp':
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rnd = random.Random(16)
sent, got = hashlib.sha256(), hashlib.sha256()
count = 0
for i in range(exchanges):
    b = rnd.randbytes(rnd.randint(1, 32))
    s.sendall(b)
    sent.update(b)
    want = len(b)
    while want:
        r = s.recv(want)
        if not r:
            sys.exit('closed during the exchange')
        got.update(r)
        want -= len(r)
        count += len(r)
print('exchanged', count, flush=True)
sys.stdin.readline()
chunks = []
left = total
while left:
    n = min(left, rnd.randint(1, 64))
    chunks.append(rnd.randbytes(n))
    left -= n
def send():
    for c in chunks:
        s.sendall(c)
for c in chunks:
    sent.update(c)
t = threading.Thread(target=send)
t.start()
if mode == 'stall':
    sys.stdin.readline()
want = count + total
while count < want:
    r = s.recv(4096)
    if not r:
        sys.exit('closed after %d bytes' % count)
    got.update(r)
    count += len(r)
    if mode == 'slow':
        time.sleep(0.002)
t.join()
print(sent.hexdigest(), got.hexdigest(), count, flush=True)
`;

type Kind = 'tcp' | 'unix';

interface Rig {
  readonly device: Chardev;
  readonly output: GuestOutput;
  readonly input: GuestInput;
  address(): string;
}

let root: string;
before(async () => {
  root = tmp('interactive');
  await startDataPlane();
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A device with `cat` as its guest, wired as `chardev run` wires a piped guest. */
async function rig(ctx: TestContext, kind: Kind, extra = ''): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(root, 'r'));
  const sockPath = path.join(dir, 's');
  const clients = `<cd:clients max='2'/>${extra}`;
  const device =
    kind === 'tcp'
      ? `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/><target port='0'/>${clients}</serial>`
      : `<serial type='unix'><source mode='bind' path='${sockPath}'/><target port='0'/>${clients}</serial>`;
  const xml = domainXml(device).replace("<domain type='kvm'>", "<domain type='kvm' xmlns:cd='urn:chardev:1'>");
  const domain = await open(xml, { logDir: dir });
  const dev = domain.device('serial0');
  dev.on('error', () => {});
  const out = guestPipe();
  const stdin = guestInputSocket();
  let guest: ChildProcess;
  try {
    guest = spawn('cat', [], { stdio: [stdin.readFd, out.writeFd, 'inherit'] });
  } finally {
    fs.closeSync(stdin.readFd);
    fs.closeSync(out.writeFd);
  }
  const input = new GuestInput(stdin.writeFd, [dev]);
  const output = dev.pipeFrom(out.readFd);
  ctx.after(async () => {
    guest.kill('SIGKILL');
    input.close();
    output.close();
    await domain.stop();
  });
  return { device: dev, output, input, address: () => (kind === 'tcp' ? String(dev.boundService) : sockPath) };
}

interface Client {
  readonly proc: ChildProcess;
  /** The next line the client prints. */
  line(): Promise<string>;
}

function client(ctx: TestContext, kind: Kind, r: Rig, exchanges: number, bytes: number, mode: 'fast' | 'slow' | 'stall'): Client {
  const proc = spawn(PYTHON, ['-S', '-c', CLIENT, kind, r.address(), String(exchanges), String(bytes), mode], { stdio: ['pipe', 'pipe', 'inherit'] });
  ctx.after(() => {
    proc.kill('SIGKILL');
  });
  const lines = readline.createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  const queue: string[] = [];
  const waiting: Array<(l: string) => void> = [];
  lines.on('line', (l) => {
    const w = waiting.shift();
    if (w !== undefined) w(l);
    else queue.push(l);
  });
  return {
    proc,
    line: () => {
      const l = queue.shift();
      if (l !== undefined) return Promise.resolve(l);
      return new Promise((resolve, reject) => {
        waiting.push(resolve);
        proc.once('close', (code) => reject(new Error(`the client exited (${code}) before its next line`)));
      });
    },
  };
}

/**
 * The ping-pong moved to the data-plane thread both ways: its chunks were all small, so only
 * their rate could do that. The client waits meanwhile: the runs end after their grace of
 * quiet and count what they moved; then the client goes on.
 */
async function checkBothWaysOnThread(c: Client, r: Rig): Promise<void> {
  const [word, count] = (await c.line()).split(' ');
  assert.equal(word, 'exchanged');
  const n = Number(count);
  await waitFor(
    () => r.output.path === 'js' && r.device.counters.bytesToGuest === n && r.device.counters.bytesFromGuest === n,
    `the runs ended, their ${n} bytes each way counted (${JSON.stringify(r.device.counters)})`,
    20000,
  );
  assert.ok(r.output.stats.spliced > 0, `the guest's output moved on the data-plane thread (${JSON.stringify(r.output.stats)})`);
  assert.ok(r.input.stats.spliced > 0, `the client's input moved on the data-plane thread (${JSON.stringify(r.input.stats)})`);
  c.proc.stdin?.write('on\n');
}

/** `viewerCame`: a viewer that came and went may have missed output, counted in `dropped`; the writer never. */
async function checkEcho(c: Client, r: Rig, exchanged: number, viewerCame = false): Promise<void> {
  const [sentSha, gotSha, count] = (await c.line()).split(' ');
  assert.equal(gotSha, sentSha, 'every byte came back, in order, unchanged');
  assert.ok(Number(count) > exchanged);
  // A run counts what it moved every 20 ms and when it ends (after 20 ms of quiet).
  await waitFor(
    () => r.device.counters.bytesToGuest === Number(count) && r.device.counters.bytesFromGuest === Number(count),
    `the device's counts of input delivered and output taken reach ${count} (${JSON.stringify(r.device.counters)})`,
    20000,
  );
  if (!viewerCame) assert.equal(r.device.counters.dropped, 0);
}

/** The ping-pong's bytes: 2000 exchanges of 1–32 bytes (the client's seed fixes them). */
const EXCHANGES = 2000;

describe('a busy exchange of small chunks on the data plane, both ways (real client, cat as the guest, sha256)', { timeout: 240000 }, () => {
  for (const kind of ['tcp', 'unix'] as const) {
    it(`${kind}: ping-pong, then a stream read as fast as it comes: every byte back, in order`, { timeout: 60000 }, async (ctx) => {
      const r = await rig(ctx, kind);
      const c = client(ctx, kind, r, EXCHANGES, 1024 * 1024, 'fast');
      await checkBothWaysOnThread(c, r);
      await checkEcho(c, r, EXCHANGES);
    });

    it(`${kind}: ping-pong, then a stream read slowly: the guest is held, every byte back, in order`, { timeout: 60000 }, async (ctx) => {
      const r = await rig(ctx, kind);
      const c = client(ctx, kind, r, EXCHANGES, 4 * 1024 * 1024, 'slow');
      await checkBothWaysOnThread(c, r);
      await checkEcho(c, r, EXCHANGES);
      assert.ok(r.output.stats.waits > 0, `the guest waited for the slow client (${JSON.stringify(r.output.stats)})`);
    });

    it(`${kind}: ping-pong, then a stream the client stops reading while a viewer comes and goes: every byte back, in order`, {
      timeout: 60000,
    }, async (ctx) => {
      const r = await rig(ctx, kind);
      const c = client(ctx, kind, r, EXCHANGES, 8 * 1024 * 1024, 'stall');
      await checkBothWaysOnThread(c, r);
      // The client sends on and reads nothing: the echo fills its socket, the guest is held
      // (its stdout full), stops reading its stdin, and the client's input backs up too.
      const waits = r.output.stats.waits;
      await waitFor(() => r.output.stats.waits > waits, 'the guest held by the stalled client', 20000);
      const viewer = net.connect(kind === 'tcp' ? { port: Number(r.address()) } : { path: r.address() });
      viewer.on('error', () => {});
      viewer.on('data', () => {});
      await new Promise<void>((resolve) => viewer.once('connect', () => resolve()));
      await waitFor(() => r.device.hub.size === 2, 'the viewer attached');
      viewer.destroy();
      await waitFor(() => r.device.hub.size === 1, 'the viewer gone');
      c.proc.stdin?.write('go\n');
      await checkEcho(c, r, EXCHANGES, true);
    });

    it(`${kind}: with a history the output cannot leave libuv's path, so the input stays there too: every byte back, in order`, {
      timeout: 60000,
    }, async (ctx) => {
      const r = await rig(ctx, kind, "<cd:history size='65536'/>");
      const c = client(ctx, kind, r, EXCHANGES, 64 * 1024, 'fast');
      const [word, count] = (await c.line()).split(' ');
      assert.equal(word, 'exchanged');
      await waitFor(() => r.device.counters.bytesToGuest === Number(count), `the ${count} bytes of the exchange counted`, 20000);
      // One direction alone on the thread would cost every round trip a wake-up of each thread.
      assert.equal(r.input.stats.runs, 0, `no run for the input alone (${JSON.stringify(r.input.stats)})`);
      assert.equal(r.output.stats.spliced, 0);
      c.proc.stdin?.write('on\n');
      await checkEcho(c, r, EXCHANGES);
    });
  }
});
