/**
 * The C library chosen at run time: src/platform/native.ts reads the program
 * interpreter of the running executable and binds each symbol when first used.
 *
 * On this machine's Node that is glibc. The musl path is proven for real with the musl kit
 * (scripts/musl-kit.sh): a musl-linked JavaScript runtime runs chardev's dist/ — koffi's
 * musl build, musl's libc dlopened, a pty device, `run --tty`, sd_notify — in a process whose
 * C library is musl, and `mallopt` (absent from musl) is one line while the rest works.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';
import { currentLibc, detectLibc, elfInterpreter, nativeProblem, platformName } from '../../src/platform/index.ts';
import { libc } from '../../src/platform/native.ts';
import { makePipe } from '../../src/platform/splice.ts';
import { POLLIN, POLLOUT } from '../../src/platform/linux-abi.ts';
import { run } from './helpers.ts';

const T = { timeout: 60000 };

function onPath(cmd: string): boolean {
  return (process.env['PATH'] ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, cmd)));
}

/** The musl kit's runtime, or why there is none. */
function muslKit(): { runtime?: string; missing?: string } {
  const env = path.join(ROOT, '.cache', 'musl', 'kit.env');
  const runtime = fs.existsSync(env) ? /^CHARDEV_MUSL_RUNTIME=(.*)$/m.exec(fs.readFileSync(env, 'utf8'))?.[1] : undefined;
  if (runtime !== undefined && fs.existsSync(runtime)) return { runtime };
  return { missing: 'the musl kit is not built (scripts/musl-kit.sh; needs apt-get install musl musl-tools patchelf)' };
}
const kit = muslKit();
/** Skip locally with the reason; in CI the missing kit is the failure. */
const needsKit = kit.missing !== undefined && process.env['CI'] === undefined ? { skip: kit.missing } : {};

describe('platform: the C library at run time', () => {
  let dir = '';
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-libc-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("this Node is glibc's: its ELF interpreter says so, libc.so.6 is what is loaded, and it loads", () => {
    const interp = elfInterpreter(process.execPath);
    assert.match(interp ?? '', /\/ld-linux[-\w.]*\.so\.\d$|\/ld64\.so\.\d$/);
    assert.deepEqual(currentLibc(), { family: 'glibc', interpreter: interp, library: 'libc.so.6' });
    assert.equal(platformName(), `${process.platform}-${process.arch} (glibc)`);
    assert.equal(nativeProblem(), undefined);
  });

  it('read, write and poll by address (the pty run’s calls) reach the bytes of the Buffer they were given, at the offset given', () => {
    const c = libc();
    const pipe = makePipe({ nonBlocking: true });
    try {
      const src = Buffer.from('0123456789abcdef');
      const srcAt = c.addressOf(src);
      // Six bytes from offset 4: a wrong address or a dropped offset writes other bytes.
      assert.equal(c.writeAt(pipe.writeFd, srcAt + 4, 6), 6);
      const pfd = Buffer.alloc(16);
      pfd.writeInt32LE(pipe.readFd, 0);
      pfd.writeInt16LE(POLLIN, 4);
      pfd.writeInt32LE(pipe.writeFd, 8);
      pfd.writeInt16LE(POLLOUT, 12);
      assert.equal(c.pollAt(c.addressOf(pfd), 2, 0), 2);
      assert.equal(pfd.readUInt16LE(6) & POLLIN, POLLIN, 'poll filled in the Buffer it was given: the pipe has bytes');
      assert.equal(pfd.readUInt16LE(14) & POLLOUT, POLLOUT);
      const dst = Buffer.alloc(12, 0x2e);
      assert.equal(c.readAt(pipe.readFd, c.addressOf(dst) + 3, 9), 6);
      assert.equal(dst.toString('latin1'), '...456789...');
      // Empty now: -1 with EAGAIN, as read(2) says it.
      assert.equal(c.readAt(pipe.readFd, c.addressOf(dst), 12), -1);
      assert.equal(c.errno(), 11);
    } finally {
      fs.closeSync(pipe.readFd);
      fs.closeSync(pipe.writeFd);
    }
  });

  it("threadSleeps counts this thread's sleeps in the kernel (a blocking pty run's waits), and only them", () => {
    const c = libc();
    const pipe = makePipe({ nonBlocking: true });
    try {
      const pfd = Buffer.alloc(8);
      pfd.writeInt32LE(pipe.readFd, 0);
      pfd.writeInt16LE(POLLIN, 4);
      const before = c.threadSleeps();
      assert.ok(before >= 0, `getrusage answered (${before})`);
      // Polls that find the empty pipe at once never sleep; ones that wait out a timeout do, once each.
      for (let i = 0; i < 50; i++) c.poll(pfd, 1, 0);
      const awake = c.threadSleeps();
      for (let i = 0; i < 5; i++) c.poll(pfd, 1, 2);
      const slept = c.threadSleeps();
      assert.ok(awake - before < 5, `50 polls that did not wait: ${awake - before} sleeps`);
      assert.ok(slept - awake >= 5, `5 polls that waited 2 ms each: ${slept - awake} sleeps`);
    } finally {
      fs.closeSync(pipe.readFd);
      fs.closeSync(pipe.writeFd);
    }
  });

  it('a musl program (musl-gcc), a static one (busybox-static) and a script are told apart', {
    skip: onPath('musl-gcc') ? false : 'musl-gcc is not installed (apt-get install musl-tools)',
  }, () => {
    const src = path.join(dir, 'hello.c');
    fs.writeFileSync(src, 'int main(void) { return 0; }\n');
    const exe = path.join(dir, 'hello-musl');
    execFileSync('musl-gcc', ['-o', exe, src]);
    execFileSync(exe);
    assert.deepEqual(detectLibc(exe), { family: 'musl', interpreter: '/lib/ld-musl-x86_64.so.1', library: '/lib/ld-musl-x86_64.so.1' });
    if (fs.existsSync('/bin/busybox') && elfInterpreter('/bin/busybox') === undefined) {
      assert.deepEqual(detectLibc('/bin/busybox'), { family: 'unknown', interpreter: undefined, library: 'libc.so.6' });
    }
    const script = path.join(dir, 'script.sh');
    fs.writeFileSync(script, '#!/bin/sh\n');
    assert.equal(elfInterpreter(script), undefined);
    assert.equal(elfInterpreter(path.join(dir, 'none')), undefined);
  });

  it('under musl (the musl kit): musl chosen, koffi’s musl build loads, pty, FIFO, dup and poll work; mallopt is one line', { ...T, ...needsKit }, async () => {
    assert.ok(kit.runtime !== undefined, `CI must provide the musl kit: ${kit.missing ?? ''}`);
    const probe = path.join(dir, 'probe.mjs');
    fs.writeFileSync(
      probe,
      `import * as fs from 'node:fs';
const p = await import(${JSON.stringify(path.join(ROOT, 'dist', 'platform', 'index.js'))});
const out = { interpreter: ${JSON.stringify('')} || p.elfInterpreter('/proc/self/exe'), libc: p.currentLibc(), platform: p.platformName(), problem: p.nativeProblem() ?? null };
const pty = p.linuxPlatform.openPty();
const slave = fs.openSync(pty.slavePath, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
fs.writeSync(slave, 'ping\\n');
const buf = Buffer.alloc(64);
let n = -1;
for (let i = 0; i < 100 && n < 0; i++) { try { n = fs.readSync(pty.masterFd, buf, 0, 64, null); } catch (e) { if (e.code !== 'EAGAIN') throw e; await new Promise((r) => setTimeout(r, 20)); } }
out.readBack = buf.subarray(0, n).toString();
out.hasReader = p.linuxPlatform.ptyHasReader(pty.masterFd);
fs.closeSync(slave);
p.linuxPlatform.mkfifo(${JSON.stringify(path.join(dir, 'fifo'))}, 0o600);
out.fifo = fs.statSync(${JSON.stringify(path.join(dir, 'fifo'))}).isFIFO();
const copy = p.linuxPlatform.dup(pty.masterFd);
out.dup = copy > 2;
fs.closeSync(copy);
p.linuxPlatform.close(pty.masterFd);
out.tune = p.tuneAllocator() ?? 'applied';
out.trim = p.releaseFreedHeap();
process.stdout.write(JSON.stringify(out));
`,
    );
    const r = await run(kit.runtime, [probe], 30000);
    assert.equal(r.code, 0, r.stderr.toString());
    const out = JSON.parse(r.stdout.toString()) as Record<string, unknown>;
    assert.deepEqual(out, {
      interpreter: '/lib/ld-musl-x86_64.so.1',
      libc: { family: 'musl', interpreter: '/lib/ld-musl-x86_64.so.1', library: '/lib/ld-musl-x86_64.so.1' },
      platform: 'linux-x64 (musl)',
      problem: null,
      readBack: 'ping\n',
      hasReader: true,
      fifo: true,
      dup: true,
      tune: 'mallopt is not in this C library (musl, /lib/ld-musl-x86_64.so.1)',
      trim: false,
    });
  });

  // The guest is piped, not on a pty of its own (--tty): reading a pty master through a tty
  // stream is the runtime's (Bun's tty streams are not Node's and lose the guest's last
  // output now and then); the pty device and its native calls are what this is about.
  it('under musl (the musl kit): chardev run serves a pty device, logs the guest, and tells systemd it is ready', { ...T, ...needsKit }, async () => {
    assert.ok(kit.runtime !== undefined, `CI must provide the musl kit: ${kit.missing ?? ''}`);
    const notify = path.join(dir, 'notify.sock');
    const listener = spawn(
      'python3',
      [
        '-c',
        `import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(notify)})\nprint('listening',flush=True)\nprint(repr(s.recv(4096).decode()),flush=True)`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let heard = '';
    listener.stdout.on('data', (b: Buffer) => (heard += b.toString()));
    try {
      await waitFor(() => heard.includes('listening'), 'the notify listener', 5000);
      const log = path.join(dir, 'serial0.log');
      const file = path.join(dir, 'musl.xml');
      fs.writeFileSync(
        file,
        `<domain type='kvm'><name>musl</name><os><type arch='x86_64'>hvm</type></os><devices><serial type='pty'><log file='${log}'/></serial></devices></domain>`,
      );
      const rd = path.join(dir, 'run');
      fs.mkdirSync(rd, { mode: 0o700 });
      const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const c = spawn(
          kit.runtime as string,
          [
            path.join(ROOT, 'bin', 'chardev.js'),
            'run',
            '--verbose',
            file,
            '--run-dir',
            rd,
            '--log-dir',
            path.join(dir, 'logs'),
            '--',
            'sh',
            '-c',
            'echo from-musl',
          ],
          {
            env: { ...process.env, NOTIFY_SOCKET: notify },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
        c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        const t = setTimeout(() => c.kill('SIGKILL'), 30000);
        c.once('close', (code) => {
          clearTimeout(t);
          resolve({ code, stdout, stderr });
        });
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^chardev \S+ on Node \S+, linux-x64 \(musl\);/m);
      assert.match(r.stdout, /^run: allocator left as it is: mallopt is not in this C library \(musl, \/lib\/ld-musl-x86_64\.so\.1\)$/m);
      assert.match(r.stdout, /^char device redirected to \/dev\/pts\/\d+ \(label charserial0\)$/m);
      assert.match(r.stdout, /^run: told systemd READY=1 \(via koffi\)$/m);
      assert.equal(fs.readFileSync(log, 'utf8'), 'from-musl\n');
      await waitFor(() => heard.includes('READY=1'), 'READY=1 over the datagram socket', 5000);
      assert.deepEqual(fs.readdirSync(rd), []);
    } finally {
      listener.kill('SIGKILL');
    }
  });
});
