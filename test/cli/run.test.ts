/** `chardev run` end to end: real child processes as guests, real files, FIFOs and signals. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { linuxPlatform } from '../../src/platform/index.ts';
import { domainXml, q, run, tmpDir, waitFor } from '../core/helpers.ts';

const RUN_CLI = path.join(ROOT, 'src', 'cli', 'main.ts');
const BIN = path.join(ROOT, 'bin', 'chardev.js');
const T = { timeout: 30000 };
/** Per test process: the domain names here must not collide with a user's running domains. */
const RUN_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-rundir-'));
process.on('exit', () => fs.rmSync(RUN_DIR, { recursive: true, force: true }));

/** `chardev run ARGS…` from the sources. */
function chardevRun(args: readonly string[], timeoutMs = 15000) {
  return run(process.execPath, ['--import', 'tsx', RUN_CLI, 'run', '--run-dir', RUN_DIR, ...args], timeoutMs);
}

describe('chardev run', () => {
  let dir = '';
  let logDir = '';
  before(() => {
    dir = tmpDir('run');
    logDir = path.join(dir, 'logs');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function writeDomain(name: string, devices: string): string {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(file, domainXml(devices, name));
    return file;
  }

  it("the child's stdout and stderr are guest output; exits with the child's status", T, async () => {
    const out = path.join(dir, 'serial.out');
    const file = writeDomain('basic', `<serial type='file'><source path='${q(out)}'/></serial><serial type='null'/>`);
    const r = await chardevRun(['--log-dir', logDir, file, '--', 'sh', '-c', 'echo hello; echo oops >&2; exit 3']);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(fs.readFileSync(out, 'utf8'), 'hello\noops\n');
    assert.match(r.stdout.toString(), new RegExp(`^charserial0: file ${out}$`, 'm'));
    assert.match(r.stdout.toString(), /^charserial1: null/m);
  });

  it('device input reaches the child’s stdin (pipe device, external writer and reader)', T, async () => {
    const base = path.join(dir, 'io');
    linuxPlatform.mkfifo(`${base}.in`, 0o600);
    linuxPlatform.mkfifo(`${base}.out`, 0o600);
    const file = writeDomain('io', `<serial type='pipe'><source path='${q(base)}'/></serial>`);
    const chardev = chardevRun(['--log-dir', logDir, file, '--', 'sh', '-c', 'read line; echo "got $line"']);
    const reader = run('head', ['-c', '9', `${base}.out`], 15000);
    assert.equal((await run('sh', ['-c', 'printf "ping\\n" > "$1"', 'sh', `${base}.in`])).code, 0);
    assert.equal((await reader).stdout.toString(), 'got ping\n');
    const r = await chardev;
    assert.equal(r.code, 0, r.stderr);
  });

  it('--tty: the child runs on a pty of its own; a pty device reports its path', T, async () => {
    const out = path.join(dir, 'tty.out');
    const file = writeDomain('tty', `<serial type='file'><source path='${q(out)}'/></serial><serial type='pty'/>`);
    const r = await chardevRun(['--tty', '--log-dir', logDir, file, '--', 'sh', '-c', 'tty; test -t 0 && echo stdin-is-a-tty']);
    assert.equal(r.code, 0, r.stderr);
    // A cooked terminal maps \n to \r\n on output, as any terminal would.
    assert.match(fs.readFileSync(out, 'utf8'), /^\/dev\/pts\/\d+\r\nstdin-is-a-tty\r\n$/);
    assert.match(r.stdout.toString(), /^char device redirected to \/dev\/pts\/\d+ \(label charserial1\)$/m);
  });

  it('no FILE: the embedded default domain, with the serial log and domain log under --log-dir', T, async () => {
    const defaults = path.join(dir, 'default-logs');
    const r = await chardevRun(['--log-dir', defaults, '--', 'sh', '-c', 'echo from-the-guest']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.statSync(defaults).mode & 0o777, 0o700);
    // The console pty has no reader here, so its output is discarded — but logged.
    assert.equal(fs.readFileSync(path.join(defaults, 'serial0.log'), 'utf8'), 'from-the-guest\n');
    assert.ok(fs.existsSync(path.join(defaults, 'chardev.log')), 'the domain log exists');
    assert.match(r.stdout.toString(), /^char device redirected to \/dev\/pts\/\d+ \(label charserial0\)$/m);
  });

  it('SIGTERM stops the domain and the child, and exits', T, async () => {
    const out = path.join(dir, 'sig.out');
    const file = writeDomain('sig', `<serial type='file'><source path='${q(out)}'/></serial>`);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', RUN_CLI, 'run', '--run-dir', RUN_DIR, '--log-dir', logDir, file, '--', 'sh', '-c', 'echo started; exec sleep 30'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor(() => fs.existsSync(out) && fs.readFileSync(out, 'utf8') === 'started\n', 'the guest to start', 10000);
      const t0 = Date.now();
      child.kill('SIGTERM');
      const code = await exited;
      assert.equal(code, 128 + 15, 'the child was terminated: 128 + SIGTERM');
      assert.ok(Date.now() - t0 < 5000);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it("a device that fails to start: one line naming it, exit 125 (chardev's own failure), the guest never runs", T, async () => {
    const marker = path.join(dir, 'ran');
    const file = writeDomain('bad', `<serial type='file'><source path='${q(path.join(dir, 'missing', 'x'))}'/></serial>`);
    const r = await chardevRun(['--log-dir', logDir, file, '--', 'touch', marker]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /^charserial0: file: Could not open '.*missing\/x': directory '.*missing' does not exist\n$/);
    assert.equal(fs.existsSync(marker), false);
  });

  it('bin/chardev.js run: the installed command works the same', T, async () => {
    const out = path.join(dir, 'bin.out');
    const file = writeDomain('bin', `<serial type='file'><source path='${q(out)}'/></serial>`);
    const r = await run(process.execPath, [BIN, 'run', '--run-dir', RUN_DIR, '--log-dir', logDir, file, '--', 'sh', '-c', 'echo hello; exit 3'], 15000);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(fs.readFileSync(out, 'utf8'), 'hello\n');
  });

  /** `chardev run` in the background, its stdout collected as it comes. */
  function startRun(args: readonly string[]) {
    const child = spawn(process.execPath, ['--import', 'tsx', RUN_CLI, 'run', '--run-dir', RUN_DIR, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    return { child, exited, stdout: () => stdout, stderr: () => stderr };
  }

  it('dumpxml NAME reads the running domain (live: pty path, bound port); a second run of it is refused', T, async () => {
    const file = writeDomain(
      'live',
      `<serial type='pty'/><serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='telnet'/></serial>`,
    );
    const r = startRun(['--log-dir', logDir, file, '--', 'sleep', '30']);
    try {
      await waitFor(() => /guest is sleep/.test(r.stdout()), 'the domain to start', 10000);
      const pts = /redirected to (\/dev\/pts\/\d+) \(label charserial0\)/.exec(r.stdout())?.[1];
      const port = /charserial1: listening on telnet:127\.0\.0\.1:(\d+)/.exec(r.stdout())?.[1];
      assert.ok(pts !== undefined && port !== undefined, r.stdout());
      const live = await run(process.execPath, ['--import', 'tsx', RUN_CLI, 'dumpxml', '--live', '--run-dir', RUN_DIR, 'live']);
      assert.equal(live.code, 0, live.stderr);
      const xml = live.stdout.toString();
      assert.ok(xml.includes(`<source path='${pts}'/>`), xml);
      assert.ok(xml.includes(`<source mode='bind' host='127.0.0.1' service='${port}'/>`), xml);
      assert.ok(xml.includes(`<console type='pty' tty='${pts}'>`), xml);
      const inactive = await run(process.execPath, ['--import', 'tsx', RUN_CLI, 'dumpxml', '--run-dir', RUN_DIR, 'live']);
      assert.ok(inactive.stdout.toString().includes(`service='0'`), 'inactive XML keeps what the user wrote');
      assert.ok(!inactive.stdout.toString().includes(pts));

      const again = await chardevRun(['--log-dir', logDir, file, '--', 'true']);
      assert.equal(again.code, 125);
      assert.equal(again.stderr.toString(), `Requested operation is not valid: domain 'live' is already running (pid ${r.child.pid})\n`);
    } finally {
      r.child.kill('SIGTERM');
      await r.exited;
    }
    const gone = await run(process.execPath, ['--import', 'tsx', RUN_CLI, 'dumpxml', '--live', '--run-dir', RUN_DIR, 'live']);
    assert.equal(gone.code, 1);
    assert.equal(gone.stderr.toString(), "dumpxml: no running domain 'live' and no such file\n");
    assert.deepEqual(fs.readdirSync(RUN_DIR), [], 'the status file is removed at exit');
  });

  it('the default domain serves the guest on an owner-only UNIX socket in the run directory, and nothing on TCP (Python client)', T, async () => {
    const r = startRun(['--log-dir', path.join(dir, 'unix-logs'), '--', 'sh', '-c', 'read l; echo "got:$l"']);
    try {
      await waitFor(() => /guest is/.test(r.stdout()), 'the domain to start', 10000);
      assert.match(r.stdout(), /^charserial0, charserial2, charserial3: guest is sh -c/m);
      const sock = path.join(RUN_DIR, 'chardev.sock');
      assert.match(r.stdout(), new RegExp(`^charserial2: listening on unix:${sock}$`, 'm'));
      const st = fs.statSync(sock);
      assert.ok(st.isSocket() && (st.mode & 0o777) === 0o600, `socket mode ${(st.mode & 0o777).toString(8)}`);
      // No TCP listener at all: the process's sockets are UNIX ones and the browser console's loopback port.
      assert.doesNotMatch(r.stdout(), /listening on (telnet|tcp):/);
      const py = [
        'import socket,sys',
        's=socket.socket(socket.AF_UNIX)',
        's.settimeout(10)',
        `s.connect(${JSON.stringify(sock)})`,
        's.sendall(b"ping\\n")',
        'out=b""',
        'while b"\\n" not in out: out+=s.recv(100)',
        'sys.stdout.write(out.decode())',
      ].join('\n');
      const client = await run('python3', ['-c', py], 15000);
      assert.equal(client.code, 0, client.stderr.toString());
      // The shell's pty is cooked: the line comes back as echo, then the answer.
      assert.match(client.stdout.toString(), /got:ping/);
      assert.equal(await r.exited, 0, r.stderr());
      assert.equal(r.stderr(), '', 'no warning: nothing is reachable from the network');
    } finally {
      r.child.kill('SIGTERM');
      await r.exited;
    }
  });

  it('--telnet HOST:PORT adds a telnet server on request, with one warning line; the Python client gets the guest', T, async () => {
    const r = startRun(['--log-dir', path.join(dir, 'telnet-logs'), '--telnet', '127.0.0.1:0', '--', 'sh', '-c', 'read l; echo "got:$l"']);
    try {
      await waitFor(() => /guest is/.test(r.stdout()), 'the domain to start', 10000);
      assert.match(r.stdout(), /^charserial0, charserial2, charserial3, charserial4: guest is sh -c/m);
      const port = /charserial4: listening on telnet:127\.0\.0\.1:(\d+)/.exec(r.stdout())?.[1];
      assert.ok(port !== undefined, r.stdout());
      const py = [
        'import socket,sys',
        `s=socket.create_connection(("127.0.0.1",${port}),timeout=10)`,
        'buf=b""',
        'while len(buf)<12: buf+=s.recv(12-len(buf))',
        'sys.stdout.write(buf.hex()+"\\n")',
        's.sendall(b"ping\\n")',
        'out=b""',
        'while b"\\n" not in out: out+=s.recv(100)',
        'sys.stdout.write(out.decode())',
      ].join('\n');
      const client = await run('python3', ['-c', py], 15000);
      assert.equal(client.code, 0, client.stderr.toString());
      assert.equal(client.stdout.toString(), 'fffb01fffb03fffb00fffd00\ngot:ping\n');
      assert.equal(await r.exited, 0, r.stderr());
      assert.equal(r.stderr(), `run: warning: anyone who can reach telnet 127.0.0.1:${port} gets the guest (sh), with no password (charserial4)\n`);
    } finally {
      r.child.kill('SIGTERM');
      await r.exited;
    }
  });

  it('input the guest does not read yet waits in the kernel, not in chardev; once it reads, every byte arrives (Python client, 64 MiB)', T, async () => {
    const file = writeDomain('slowin', `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/></serial>`);
    const out = path.join(dir, 'slowin.out');
    const bytes = 64 * 1024 * 1024;
    const go = path.join(dir, 'slowin.go');
    // The guest reads nothing until the test creates `go`, then takes everything.
    const r = startRun(['--log-dir', logDir, file, '--', 'sh', '-c', `while [ ! -e '${go}' ]; do sleep 0.1; done; exec head -c ${bytes} > '${out}'`]);
    try {
      await waitFor(() => /guest is/.test(r.stdout()), 'the domain to start', 10000);
      const port = /listening on tcp:127\.0\.0\.1:(\d+)/.exec(r.stdout())?.[1];
      assert.ok(port !== undefined, r.stdout());
      const vm = (key: string): number =>
        Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${r.child.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
      const rss0 = vm('VmRSS');
      // Sends a deterministic stream as fast as the connection takes it, then prints its sha256.
      const py = [
        'import hashlib,socket,sys',
        `s=socket.create_connection(("127.0.0.1",${port}),timeout=60)`,
        'h=hashlib.sha256()',
        `left=${bytes}`,
        'i=0',
        'while left>0:',
        '  b=bytes([(i+k)%251 for k in range(256)])*256',
        '  b=b[:left]; h.update(b); s.sendall(b); left-=len(b); i+=1',
        'sys.stdout.write(h.hexdigest()+"\\n")',
      ].join('\n');
      const client = run('python3', ['-c', py], 25000);
      // While the guest does not read: the client is held back, chardev's memory is not the buffer.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const held = vm('VmHWM') - rss0;
      // The input's first burst starts the data-plane thread (input is spliced from the
      // client's socket): a second V8 isolate with koffi, measured ~31–33 MiB at its peak,
      // against ~0.5 MiB on the JavaScript path. The bound still fails if chardev held the
      // unread part of the 64 MiB stream (all but the kernel's few MiB).
      assert.ok(held < 48 * 1024 * 1024, `chardev grew ${(held / 1048576).toFixed(1)} MiB holding unread input`);
      fs.writeFileSync(go, '');
      const c = await client;
      assert.equal(c.code, 0, c.stderr.toString());
      assert.equal(await r.exited, 0, r.stderr());
      const sha = createHash('sha256').update(fs.readFileSync(out)).digest('hex');
      assert.equal(`${sha}\n`, c.stdout.toString(), 'the guest read every byte the client sent, in order');
    } finally {
      r.child.kill('SIGTERM');
      await r.exited;
    }
  });
});
