/**
 * Client → guest input on the data plane (`GuestInput`): a real client (Python, a plain
 * socket) sends a random stream into a tcp or unix server whose input goes to a real guest
 * process reading its stdin (a socketpair, `guestInputSocket`, as `chardev run` wires it:
 * spliced socket → a pipe → the socketpair; once a pipe, `guestInputPipe`, spliced in one
 * hop). The guest reads slowly, or stalls and then reads; a viewer attaches mid-stream, or
 * while bytes wait between the two hops; the writer leaves mid-stream and another takes over. Every check is count + sha256 of what the guest read,
 * the device's `bytesToGuest`, and that the data-plane thread spliced some of it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { domainXml, waitFor } from '../core/helpers.ts';
import { PYTHON, sha256, tmp } from '../reliability/helpers.ts';
import { open } from '../../src/index.ts';
import type { Chardev } from '../../src/index.ts';
import { GuestInput, guestInputPipe, guestInputSocket } from '../../src/core/guest-input.ts';
import { startDataPlane } from '../../src/core/guest-output.ts';

const MiB = 1024 * 1024;

/**
 * The guest. argv: N RATE STALL_S PROGRESS. Sleeps STALL_S (its stdin fills, the client
 * is held), then reads N bytes from stdin at RATE bytes/s (0: as fast as it can), writing
 * how many it has to PROGRESS; prints `COUNT SHA256` at N bytes or end of file. A negative
 * STALL_S: no sleep first, but once a file PROGRESS.stop exists it stops reading, creates
 * PROGRESS.stopped, and waits for PROGRESS.go to read on.
 */
const GUEST = `
import hashlib, os, sys, time
n, rate, stall, progress = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
pf = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
time.sleep(max(stall, 0))
got, h, t0 = 0, hashlib.sha256(), time.monotonic()
while got < n:
    if stall < 0 and os.path.exists(progress + '.stop'):
        stall = 0
        open(progress + '.stopped', 'w').close()
        while not os.path.exists(progress + '.go'):
            time.sleep(0.01)
        rate = 0
    b = os.read(0, min(65536, n - got))
    if not b:
        break
    got += len(b)
    h.update(b)
    os.pwrite(pf, b'%012d' % got, 0)
    if rate > 0:
        ahead = t0 + got / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
print(got, h.hexdigest(), flush=True)
`;

/**
 * The client. argv: KIND ADDRESS FILE HOLD: sends FILE whole on a plain socket, prints
 * `sent`, then (HOLD 1) waits for its stdin to close, and closes the socket.
 */
const SENDER = `
import socket, sys
kind, address, data, hold = sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read(), sys.argv[4] == '1'
if kind == 'tcp':
    s = socket.create_connection(('127.0.0.1', int(address)))
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(address)
s.sendall(data)
print('sent', flush=True)
if hold:
    sys.stdin.read()
s.close()
`;

type Kind = 'tcp' | 'unix';

interface Rig {
  readonly dir: string;
  readonly device: Chardev;
  readonly input: GuestInput;
  /** The guest's `[count, sha256]` once it exits. */
  readonly result: Promise<[number, string]>;
  progress(): number;
  /**
   * Send `data` from a new Python client; resolves once it has sent it all and closed
   * (with `hold`, only once `leave()` was called too).
   */
  send(data: Buffer, hold?: { leave: Promise<void> }): Promise<void>;
  address(): { port: number } | { path: string };
  /** A guest started with a negative stall stops reading; resolves once it did. */
  stop(): Promise<void>;
  /** …and reads on. */
  go(): void;
}

let root: string;
before(async () => {
  root = tmp('input');
  await startDataPlane();
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

async function rig(ctx: TestContext, kind: Kind, bytes: number, guest: { rate: number; stallS: number; stdin?: 'socket' | 'pipe' }, extra = ''): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(root, 'r'));
  const sockPath = path.join(dir, 's');
  const device =
    kind === 'tcp'
      ? `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/><target port='0'/>${extra}</serial>`
      : `<serial type='unix'><source mode='bind' path='${sockPath}'/><target port='0'/>${extra}</serial>`;
  const xml = domainXml(device).replace("<domain type='kvm'>", "<domain type='kvm' xmlns:cd='urn:chardev:1'>");
  const domain = await open(xml, { logDir: dir });
  const dev = domain.device('serial0');
  dev.on('error', () => {});
  const progressFile = path.join(dir, 'progress');
  const stdin = guest.stdin === 'pipe' ? guestInputPipe() : guestInputSocket();
  let child: ChildProcess;
  try {
    child = spawn(PYTHON, ['-S', '-c', GUEST, String(bytes), String(guest.rate), String(guest.stallS), progressFile], {
      stdio: [stdin.readFd, 'pipe', 'inherit'],
    });
  } finally {
    fs.closeSync(stdin.readFd);
  }
  const input = new GuestInput(stdin.writeFd, [dev]);
  let text = '';
  child.stdout?.on('data', (b: Buffer) => void (text += b.toString()));
  const result = new Promise<[number, string]>((resolve, reject) => {
    child.on('close', () => {
      const [count, sha] = text.trim().split(' ');
      if (count === undefined || sha === undefined) reject(new Error(`guest: ${text}`));
      else resolve([Number(count), sha]);
    });
  });
  const senders: ChildProcess[] = [];
  ctx.after(async () => {
    for (const s of senders) s.kill('SIGKILL');
    child.kill('SIGKILL');
    input.close();
    await domain.stop();
  });
  const address = (): { port: number } | { path: string } => (kind === 'tcp' ? { port: Number(dev.boundService) } : { path: sockPath });
  let sent = 0;
  return {
    dir,
    device: dev,
    input,
    result,
    address,
    stop: async () => {
      fs.writeFileSync(`${progressFile}.stop`, '');
      await waitFor(() => fs.existsSync(`${progressFile}.stopped`), 'the guest stopped reading', 20000);
    },
    go: () => fs.writeFileSync(`${progressFile}.go`, ''),
    progress(): number {
      try {
        return Number(fs.readFileSync(progressFile, 'latin1') || '0');
      } catch {
        return 0;
      }
    },
    send(data: Buffer, hold?: { leave: Promise<void> }): Promise<void> {
      const file = path.join(dir, `data${sent++}`);
      fs.writeFileSync(file, data);
      const a = address();
      const proc = spawn(PYTHON, ['-S', '-c', SENDER, kind, 'port' in a ? String(a.port) : a.path, file, hold !== undefined ? '1' : '0'], {
        stdio: ['pipe', 'ignore', 'inherit'],
      });
      senders.push(proc);
      if (hold !== undefined) void hold.leave.then(() => proc.stdin?.end());
      else proc.stdin?.end();
      return new Promise((resolve, reject) => proc.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`sender exited ${code}`)))));
    },
  };
}

async function checkGuest(r: Rig, data: Buffer): Promise<void> {
  const [count, sha] = await r.result;
  assert.equal(count, data.length, 'the guest read every byte');
  assert.equal(sha, sha256(data), 'in order, unchanged');
  assert.equal(r.device.counters.bytesToGuest, data.length, "the device's count of input delivered");
  assert.ok(r.input.stats.spliced > 0, `the data-plane thread spliced some of it (${JSON.stringify(r.input.stats)})`);
  assert.ok(r.input.stats.spliced <= data.length);
}

describe('client → guest input on the data plane (real client and guest, sha256)', { timeout: 180000 }, () => {
  for (const kind of ['tcp', 'unix'] as const) {
    it(`${kind}: a guest reading slowly gets every byte, in order`, { timeout: 60000 }, async (ctx) => {
      const data = randomBytes(8 * MiB);
      const r = await rig(ctx, kind, data.length, { rate: 16 * MiB, stallS: 0 });
      await r.send(data);
      await checkGuest(r, data);
    });

    it(`${kind}: a guest reading slowly from a pipe as stdin (one hop) gets every byte, in order`, { timeout: 60000 }, async (ctx) => {
      const data = randomBytes(8 * MiB);
      const r = await rig(ctx, kind, data.length, { rate: 16 * MiB, stallS: 0, stdin: 'pipe' });
      await r.send(data);
      await checkGuest(r, data);
    });

    it(`${kind}: a viewer attaches while bytes wait between the hops: they reach the guest first, whole`, { timeout: 60000 }, async (ctx) => {
      const data = randomBytes(32 * MiB);
      const r = await rig(ctx, kind, data.length, { rate: 16 * MiB, stallS: -1 }, "<cd:clients max='2'/>");
      let leave: () => void = () => {};
      const sending = r.send(data, { leave: new Promise((resolve) => (leave = resolve)) });
      // The guest is the slower side, so the pipe between the hops is full while the run
      // waits for room in the socketpair; once the guest stops reading it stays so (the
      // client has far more to send than the socket buffers, the pipe and the socketpair hold).
      await waitFor(() => r.input.stats.spliced > 0, 'the writer streaming by splice', 20000);
      await r.stop();
      assert.equal(r.input.stats.drained, 0);
      const viewer = net.connect(r.address());
      viewer.on('error', () => {});
      viewer.on('data', () => {});
      await new Promise<void>((resolve) => viewer.once('connect', () => resolve()));
      await waitFor(() => r.device.hub.size === 2, 'the viewer attached');
      assert.ok(r.input.stats.drained > 0, `the run's stop read out the pipe between the hops (${JSON.stringify(r.input.stats)})`);
      viewer.write('VIEWER INPUT');
      // The device reads no client while the guest's input is full (the viewer neither).
      r.go();
      await waitFor(() => r.device.hub.inputDropped === 12, "the viewer's input dropped", 20000);
      viewer.destroy();
      await waitFor(() => r.device.hub.size === 1, 'the viewer gone');
      leave();
      await sending;
      await checkGuest(r, data);
    });

    it(`${kind}: a guest that stalls, then reads: the client is held meanwhile, nothing lost`, { timeout: 60000 }, async (ctx) => {
      const data = randomBytes(16 * MiB);
      const r = await rig(ctx, kind, data.length, { rate: 0, stallS: 1.5 });
      const sending = r.send(data);
      await sending;
      await checkGuest(r, data);
    });

    it(`${kind}: a viewer attaches and leaves mid-stream: its input is dropped, the writer's arrives whole`, { timeout: 60000 }, async (ctx) => {
      const data = randomBytes(12 * MiB);
      const r = await rig(ctx, kind, data.length, { rate: 16 * MiB, stallS: 0 }, "<cd:clients max='2'/>");
      let leave: () => void = () => {};
      // The writer stays until the viewer is done, however fast the guest reads.
      const sending = r.send(data, { leave: new Promise((resolve) => (leave = resolve)) });
      await waitFor(() => r.input.stats.spliced > 0 && r.progress() < data.length / 2, 'the writer streaming by splice', 20000);
      const viewer = net.connect(r.address());
      viewer.on('error', () => {});
      viewer.on('data', () => {});
      await new Promise<void>((resolve) => viewer.once('connect', () => resolve()));
      await waitFor(() => r.device.hub.size === 2, 'the viewer attached');
      viewer.write('VIEWER INPUT');
      await waitFor(() => r.device.hub.inputDropped === 12, "the viewer's input dropped");
      viewer.destroy();
      await waitFor(() => r.device.hub.size === 1, 'the viewer gone');
      leave();
      await sending;
      await checkGuest(r, data);
    });

    it(`${kind}: the writer leaves mid-stream (its bytes still in flight), the next one goes on after them`, { timeout: 60000 }, async (ctx) => {
      const first = randomBytes(8 * MiB);
      const second = randomBytes(4 * MiB);
      const data = Buffer.concat([first, second]);
      const r = await rig(ctx, kind, data.length, { rate: 16 * MiB, stallS: 0.5 });
      // The first client has sent everything and closed long before the guest has read it.
      await r.send(first);
      assert.ok(r.progress() < first.length, 'the first writer left with its bytes in flight');
      await waitFor(() => r.device.hub.size === 0, 'the first writer detached', 20000);
      await r.send(second);
      await checkGuest(r, data);
    });
  }
});
