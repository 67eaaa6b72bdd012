/**
 * A pty run alone on the data-plane thread writes to the master blocking (the kernel waits for
 * room inside write(2), as socat's relay does), so while the pty's reader stalls the thread is
 * parked in a write it cannot leave by itself. What must still hold then: the reader's own
 * input reaches the device (the main thread's reader shares the master's file description);
 * another device's run starts and finishes (every wake-up kicks the parked write); the
 * process exits. Real processes, every byte checked by count and sha256.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { domainXml, waitFor } from '../core/helpers.ts';
import { PYTHON, sha256, tmp } from '../reliability/helpers.ts';
import { open } from '../../src/index.ts';
import type { Chardev, Domain } from '../../src/index.ts';
import { type GuestOutput, guestPipe, startDataPlane } from '../../src/core/guest-output.ts';
import { FILE_GUEST_PY } from '../helpers/file-guest-py.ts';

const MiB = 1024 * 1024;

/**
 * A pty client. argv: SLAVE N STALL_AT INPUT GO. Reads the slave until it has STALL_AT bytes,
 * then writes the file INPUT (if not '-') to the slave and reads nothing until the file GO
 * exists; then reads on to N bytes and prints `COUNT SHA256`.
 */
const PTY_CLIENT = `
import hashlib, os, sys, time
path, n, stall_at, inp, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
print('open', flush=True)
got, h = 0, hashlib.sha256()
def take(upto):
    global got
    while got < upto:
        b = os.read(fd, min(65536, upto - got))
        if not b:
            return
        got += len(b)
        h.update(b)
take(stall_at)
print('stalled', flush=True)
if inp != '-':
    data = open(inp, 'rb').read()
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.write(fd, view[done:])
while not os.path.exists(go):
    time.sleep(0.02)
take(n)
print(got, h.hexdigest(), flush=True)
`;

interface Client {
  readonly proc: ChildProcess;
  /** Resolves once the client has read its first STALL_AT bytes and stopped reading. */
  readonly stalled: Promise<void>;
  readonly done: Promise<[number, string]>;
}

function ptyClient(device: Chardev, n: number, stallAt: number, input: string, go: string): Client {
  const slave = device.ptyPath;
  if (slave === undefined) throw new Error('no pty');
  const proc = spawn(PYTHON, ['-S', '-c', PTY_CLIENT, slave, String(n), String(stallAt), input, go], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  let stalledResolve: () => void = () => {};
  const stalled = new Promise<void>((resolve) => (stalledResolve = resolve));
  const done = new Promise<[number, string]>((resolve, reject) => {
    proc.stdout?.on('data', (b: Buffer) => {
      text += b.toString();
      if (text.includes('stalled\n')) stalledResolve();
    });
    proc.on('close', () => {
      const [count, sha] = text
        .replace(/^open\nstalled\n/, '')
        .trim()
        .split(' ');
      if (count === undefined || sha === undefined) reject(new Error(`pty client: ${text}`));
      else resolve([Number(count), sha]);
    });
  });
  return { proc, stalled, done };
}

interface Rig {
  readonly dir: string;
  readonly data: Buffer;
  readonly domain: Domain;
  readonly device: Chardev;
  readonly output: GuestOutput;
  /** Bytes the guest has written so far. */
  progress(): number;
}

let root: string;
before(async () => {
  root = tmp('pty-blocking');
  await startDataPlane();
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A domain with `device` (serial0) and a guest writing `bytes` random bytes to it, started by `start()`. */
async function rig(ctx: TestContext, device: (dir: string) => string, bytes: number): Promise<Omit<Rig, 'output'> & { start(): GuestOutput }> {
  const dir = fs.mkdtempSync(path.join(root, 'r'));
  const data = randomBytes(bytes);
  const dataFile = path.join(dir, 'data');
  fs.writeFileSync(dataFile, data);
  const domain = await open(domainXml(device(dir)), { logDir: dir, ptyPollMs: 10 });
  const dev = domain.device('serial0');
  dev.on('error', () => {});
  const progressFile = path.join(dir, 'progress');
  let child: ChildProcess | undefined;
  ctx.after(async () => {
    child?.kill('SIGKILL');
    await domain.stop();
  });
  return {
    dir,
    data,
    domain,
    device: dev,
    progress: () => {
      try {
        return Number(fs.readFileSync(progressFile, 'latin1') || '0');
      } catch {
        return 0;
      }
    },
    start: () => {
      const pipe = guestPipe();
      try {
        child = spawn(PYTHON, ['-S', '-c', FILE_GUEST_PY, dataFile, progressFile, '0', '0'], { stdio: ['ignore', pipe.writeFd, 'inherit'] });
      } finally {
        fs.closeSync(pipe.writeFd);
      }
      return dev.pipeFrom(pipe.readFd);
    },
  };
}

/** Until the guest has written nothing for two looks 300 ms apart: it is held (by the stalled client). */
async function heldGuest(progress: () => number): Promise<number> {
  for (let last = -1; ; ) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const now = progress();
    if (now === last) return now;
    last = now;
  }
}

describe('a pty run writing blocking, its reader stalled (real processes, sha256)', { timeout: 120000 }, () => {
  it("the pty client's own input reaches the device while the guest's output waits for that client", { timeout: 60000 }, async (ctx) => {
    const bytes = 12 * MiB;
    const r = await rig(ctx, () => `<serial type='pty'><target port='0'/></serial>`, bytes);
    const input = randomBytes(256 * 1024);
    const inputFile = path.join(r.dir, 'input');
    fs.writeFileSync(inputFile, input);
    const received: Buffer[] = [];
    let receivedBytes = 0;
    r.device.on('data', (chunk: Buffer) => {
      received.push(Buffer.from(chunk));
      receivedBytes += chunk.length;
    });
    const go = path.join(r.dir, 'go');
    const client = ptyClient(r.device, bytes, 2 * MiB, inputFile, go);
    ctx.after(() => client.proc.kill());
    await waitFor(() => r.device.hub.size === 1, 'the pty client to be seen', 5000);
    const output = r.start();
    await client.stalled;
    const held = await heldGuest(r.progress);
    assert.ok(held < bytes, `the guest is held while the client reads nothing: it wrote ${held} of ${bytes} B`);
    assert.equal(output.path, 'kernel', 'the output is on the data-plane thread');
    // The client wrote its input after it stopped reading; the output stays held meanwhile.
    await waitFor(() => receivedBytes >= input.length, 'the client input to reach the device', 20000);
    assert.equal(sha256(Buffer.concat(received)), sha256(input), 'every input byte, in order, once');
    assert.equal(r.progress(), held, 'the guest is still held: the input went by while the output waited');
    fs.writeFileSync(go, '');
    const [got, sha] = await client.done;
    assert.equal(got, bytes);
    assert.equal(sha, sha256(r.data), 'the client got every output byte, in order, once');
    assert.equal(r.device.counters.dropped, 0);
  });

  it("another device's run starts and finishes while the pty's write waits for its stalled client", { timeout: 60000 }, async (ctx) => {
    const bytes = 8 * MiB;
    const pty = await rig(ctx, () => `<serial type='pty'><target port='0'/></serial>`, bytes);
    const file = await rig(ctx, (dir) => `<serial type='file'><source path='${path.join(dir, 'out')}'/><target port='0'/></serial>`, 16 * MiB);
    const go = path.join(pty.dir, 'go');
    const client = ptyClient(pty.device, bytes, MiB, '-', go);
    ctx.after(() => client.proc.kill());
    await waitFor(() => pty.device.hub.size === 1, 'the pty client to be seen', 5000);
    const ptyOutput = pty.start();
    await client.stalled;
    const held = await heldGuest(pty.progress);
    assert.equal(ptyOutput.path, 'kernel', "the pty's output is on the data-plane thread");
    // The file's runs are messages to a thread parked in the pty's write: each must kick it.
    const fileOutput = file.start();
    await fileOutput.ended;
    const out = fs.readFileSync(path.join(file.dir, 'out'));
    assert.equal(out.length, 16 * MiB);
    assert.equal(sha256(out), sha256(file.data), 'the file holds every byte, in order, once');
    assert.equal(pty.progress(), held, 'the pty client still reads nothing: its guest is still held');
    fs.writeFileSync(go, '');
    const [got, sha] = await client.done;
    assert.equal(got, bytes);
    assert.equal(sha, sha256(pty.data), 'the pty client got every byte, in order, once');
    assert.equal(pty.device.counters.dropped, 0);
  });

  it('the process exits while the write waits for the stalled client', { timeout: 60000 }, async (ctx) => {
    const dir = fs.mkdtempSync(path.join(root, 'exit'));
    // .mts: ESM wherever the directory is (top-level await), whatever package.json lies above it.
    const script = path.join(dir, 'host.mts');
    const here = path.dirname(fileURLToPath(import.meta.url));
    const src = (p: string): string => JSON.stringify(path.join(here, '../../src', p));
    // A process streaming into its pty until the client stalls, then exiting with the write parked.
    fs.writeFileSync(
      script,
      `import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { open } from ${src('index.ts')};
import { guestPipe, startDataPlane } from ${src('core/guest-output.ts')};
await startDataPlane();
const domain = await open(${JSON.stringify(domainXml(`<serial type='pty'><target port='0'/></serial>`))}, { ptyPollMs: 10 });
const device = domain.device('serial0');
device.on('error', () => {});
process.stdout.write(device.ptyPath + '\\n');
while (device.hub.size === 0) await new Promise((r) => setTimeout(r, 10));
const pipe = guestPipe();
spawn(${JSON.stringify(PYTHON)}, ['-S', '-c', 'import os\\nb = bytes(65536)\\nwhile True: os.write(1, b)'], { stdio: ['ignore', pipe.writeFd, 'ignore'], detached: true }).unref();
fs.closeSync(pipe.writeFd);
const output = device.pipeFrom(pipe.readFd);
for (let last = -1; ; ) {
  await new Promise((r) => setTimeout(r, 300));
  const now = device.counters.bytesFromGuest;
  if (now === last && output.path === 'kernel') break;
  last = now;
}
process.stdout.write('parked\\n');
process.exit(0);
`,
    );
    const host = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    ctx.after(() => host.kill('SIGKILL'));
    let text = '';
    const slave = await new Promise<string>((resolve) => {
      host.stdout?.on('data', (b: Buffer) => {
        text += b.toString();
        const line = text.split('\n')[0];
        if (text.includes('\n') && line !== undefined) resolve(line);
      });
    });
    const go = path.join(dir, 'never');
    const clientProc = spawn(PYTHON, ['-S', '-c', PTY_CLIENT, slave, String(64 * MiB), String(MiB), '-', go], { stdio: ['ignore', 'ignore', 'ignore'] });
    ctx.after(() => clientProc.kill());
    const code = await new Promise<number | null>((resolve) => host.on('exit', (c) => resolve(c)));
    assert.ok(text.includes('parked\n'), `the host saw its client stall before it exited: ${text}`);
    assert.equal(code, 0, 'the process exited by itself with its pty write parked');
  });
});
