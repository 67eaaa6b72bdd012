/**
 * The bench's C floors (scripts/bench/c/relay.c, built by scripts/bench/compiled.ts): a floor
 * is only evidence if it does the row's work under the row's rules, so each mode is checked
 * here with real sockets, a pty and files, by count and sha256 — a fast reader, a slow one,
 * and for the fan-out a viewer that never reads, which must not hold the writer back.
 * Without a C compiler the relay tests are skipped with the reason (the bench then skips
 * the rows the same way), and fail under CI, which installs one (.ci/run); the build's own
 * failure paths are tested regardless.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { C_RELAY_SOURCE, buildCFloor, compilerVersions, type CFloor } from '../../scripts/bench/compiled.ts';
import { freePort } from '../../scripts/bench/measurements.ts';
import { needs, required } from '../helpers/ci.ts';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../platform/helpers.ts';

const MiB = 1024 * 1024;
const BYTES = 8 * MiB;
const source = path.join(ROOT, C_RELAY_SOURCE);
// Built while the file loads: whether the relay tests run is decided when they are declared.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-c-relay-'));
const built: CFloor = buildCFloor(source, dir);
const data = randomBytes(BYTES);
const digest = sha256(data);
const file = path.join(dir, 'guest.bin');
fs.writeFileSync(file, data);
const started: ChildProcess[] = [];
/** A relay that holds a byte back never ends its test otherwise. */
const timeout = 60_000;

after(() => {
  // The relay and its guest share a process group (the guest is the relay's child).
  for (const p of started) {
    try {
      if (p.pid !== undefined) process.kill(-p.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function skipReason(): string | undefined {
  return 'skipped' in built ? `no C floors here: ${built.skipped}` : undefined;
}

/** The relay in its own process group, its guest writing the test's bytes then holding its stdout open. */
function relay(args: readonly string[], guest: readonly string[] = ['sh', '-c', 'cat "$0"; exec sleep 60', file]): ChildProcess & { stderrText: () => string } {
  if (!('relay' in built)) throw new Error('no relay');
  const p = spawn(built.relay, [...args, '--', ...guest], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
  });
  started.push(p);
  return Object.assign(p, { stderrText: () => err });
}

/** Connects (retrying while nobody listens yet). */
async function connect(to: net.NetConnectOpts): Promise<net.Socket> {
  for (let i = 0; ; i++) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(to);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    } catch (e) {
      if (i > 500) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Reads until `want` bytes came (or the end); `slow`: pauses after every chunk, so the relay meets a full socket again and again. */
function readAll(s: net.Socket | fs.ReadStream, want: number, slow = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const done = (): void => resolve(Buffer.concat(chunks));
    s.on('data', (b: Buffer | string) => {
      const buf = typeof b === 'string' ? Buffer.from(b) : b;
      chunks.push(buf);
      got += buf.length;
      if (got >= want) {
        s.removeAllListeners('data');
        done();
        return;
      }
      if (slow) {
        s.pause();
        setTimeout(() => s.resume(), 2);
      }
    });
    s.once('end', done);
    s.once('close', done);
    s.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EIO' ? done() : reject(e)));
  });
}

test('the build says why there are no C floors instead of failing', () => {
  const none = buildCFloor(source, os.tmpdir(), path.join(os.tmpdir(), 'no-such-cc'));
  assert.ok('skipped' in none);
  assert.match(none.skipped, /^no C compiler \(.*no-such-cc\) found$/);
  assert.deepEqual(compilerVersions(none), { cFloorsSkipped: none.skipped });
  const missing = buildCFloor(path.join(os.tmpdir(), 'no-such-relay.c'), os.tmpdir());
  assert.ok('skipped' in missing);
});

test('a source the compiler rejects is skipped with the compiler’s first line', { ...needs(skipReason()), timeout }, () => {
  required(skipReason());
  const bad = path.join(dir, 'bad.c');
  fs.writeFileSync(bad, 'int main(void) { return }\n');
  const r = buildCFloor(bad, dir);
  assert.ok('skipped' in r);
  assert.match(r.skipped, /could not build bad\.c: /);
  assert.ok('cc' in compilerVersions(built));
});

for (const kind of ['tcp', 'unix'] as const) {
  for (const slow of [false, true]) {
    test(`out (${kind}): the client gets every byte by splice, ${slow ? 'a slow' : 'a fast'} reader`, { ...needs(skipReason()), timeout }, async () => {
      required(skipReason());
      const addr = kind === 'tcp' ? String(await freePort()) : path.join(dir, `out-${slow}.sock`);
      const p = relay(['out', kind, addr]);
      const s = await connect(kind === 'tcp' ? { host: '127.0.0.1', port: Number(addr) } : { path: addr });
      const got = await readAll(s, BYTES, slow);
      s.destroy();
      assert.equal(got.length, BYTES, p.stderrText());
      assert.equal(sha256(got), digest);
    });
  }
}

for (const mode of ['log-tee', 'log-copy'] as const) {
  test(`${mode}: the client and the log each get every byte, a slow reader holding the guest`, { ...needs(skipReason()), timeout }, async () => {
    required(skipReason());
    const port = await freePort();
    const log = path.join(dir, `${mode}.log`);
    const p = relay([mode, 'tcp', String(port), log]);
    const s = await connect({ host: '127.0.0.1', port });
    const got = await readAll(s, BYTES, true);
    s.destroy();
    assert.equal(got.length, BYTES, p.stderrText());
    assert.equal(sha256(got), digest);
    // The log is written before the client is sent the same bytes.
    assert.equal(sha256(fs.readFileSync(log)), digest);
  });
}

test('file-pipe: the file gets every byte from a guest that pauses, and the relay exits at its end', { ...needs(skipReason()), timeout }, async () => {
  required(skipReason());
  const out = path.join(dir, 'file-pipe.out');
  // An odd split, so the relay finds the guest's pipe empty mid-stream and a transfer ends off a page.
  const p = relay(['file-pipe', '-', out], ['sh', '-c', 'head -c 3000001 "$0"; sleep 0.2; tail -c +3000002 "$0"', file]);
  const exited = await new Promise<number | null>((resolve) => p.once('exit', resolve));
  assert.equal(exited, 0, p.stderrText());
  const got = fs.readFileSync(out);
  assert.equal(got.length, BYTES);
  assert.equal(sha256(got), digest);
});

test('pty: the reader of the linked slave gets every byte', { ...needs(skipReason()), timeout }, async () => {
  required(skipReason());
  const link = path.join(dir, 'pty.link');
  const p = relay(['pty', '-', link]);
  await waitFor(() => fs.existsSync(link), 'the pty link');
  const r = fs.createReadStream(link, { highWaterMark: 256 * 1024 });
  const got = await readAll(r, BYTES, true);
  r.destroy();
  assert.equal(got.length, BYTES, p.stderrText());
  assert.equal(sha256(got), digest);
});

test('in: every byte the client sends reaches the guest’s stdin', { ...needs(skipReason()), timeout }, async () => {
  required(skipReason());
  const sock = path.join(dir, 'in.sock');
  const out = path.join(dir, 'in.out');
  const p = relay(['in', 'unix', sock], ['sh', '-c', 'exec cat > "$0"', out]);
  const s = await connect({ path: sock });
  await new Promise<void>((resolve) => s.end(data, resolve));
  const exited = await new Promise<number | null>((resolve) => p.once('exit', resolve));
  assert.equal(exited, 0, p.stderrText());
  assert.equal(sha256(fs.readFileSync(out)), digest);
});

/** Connects `live` reading clients then `stalled` that never read, one after the other, so the relay accepts them in that order. */
async function fanClients(port: number, live: number, stalled: number): Promise<{ live: net.Socket[]; stalled: net.Socket[] }> {
  const l: net.Socket[] = [];
  const st: net.Socket[] = [];
  for (let i = 0; i < live; i++) l.push(await connect({ host: '127.0.0.1', port }));
  for (let i = 0; i < stalled; i++) {
    const s = await connect({ host: '127.0.0.1', port });
    s.pause();
    st.push(s);
  }
  return { live: l, stalled: st };
}

for (const mode of ['fanout-tee', 'fanout-ring'] as const) {
  test(`${mode}: the writer gets every byte while a viewer never reads; viewers get at most the stream`, { ...needs(skipReason()), timeout }, async () => {
    required(skipReason());
    const port = await freePort();
    const p = relay([mode, 'tcp', String(port), '3', '1']);
    const c = await fanClients(port, 3, 1);
    // Viewers may miss output (chardev's rule), so they are read until the writer is done.
    const viewers = c.live.slice(1).map((s) => readAll(s, BYTES));
    const writer = await readAll(c.live[0] as net.Socket, BYTES, true);
    assert.equal(writer.length, BYTES, p.stderrText());
    assert.equal(sha256(writer), digest);
    const writerPort = (c.live[0] as net.Socket).localPort;
    for (const s of [...c.live, ...c.stalled]) s.destroy();
    // Each viewer is told who the writer is before any guest byte, in chardev's words (src/core/hub.ts).
    const notice = Buffer.from(`\r\n[chardev: read-only: 127.0.0.1:${writerPort} is the writer (attach with force to take over)]\r\n`);
    for (const v of await Promise.all(viewers)) {
      assert.deepEqual(v.subarray(0, notice.length), notice);
      assert.ok(v.length - notice.length <= BYTES);
      assert.deepEqual(v.subarray(notice.length, notice.length + 4096), data.subarray(0, 4096));
    }
  });
}

test('fanout (lossless): every live client gets every byte, one of them slow', { ...needs(skipReason()), timeout }, async () => {
  required(skipReason());
  const port = await freePort();
  const p = relay(['fanout', 'tcp', String(port), '3', '1']);
  const c = await fanClients(port, 3, 1);
  const got = await Promise.all(c.live.map((s, i) => readAll(s, BYTES, i === 1)));
  for (const s of [...c.live, ...c.stalled]) s.destroy();
  for (const g of got) {
    assert.equal(g.length, BYTES, p.stderrText());
    assert.equal(sha256(g), digest);
  }
});
