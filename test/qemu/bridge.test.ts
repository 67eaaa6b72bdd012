/**
 * `chardev qemu`'s bridge between QEMU's sockets and the devices, with a stand-in for QEMU
 * (a Python program that connects to the `-chardev socket,…,path=…` sockets it is given and
 * speaks QMP like QEMU), so flow control and exit statuses are checked without a guest.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { linuxPlatform } from '../../src/platform/index.ts';
import { q, run, tmpDir, waitFor } from '../core/helpers.ts';

const BIN = path.join(ROOT, 'bin', 'chardev.js');

/**
 * FAKE_QEMU_BULK=N: send N pattern bytes to charserial0 at once (blocking: only as fast as
 * chardev takes them), then echo whatever arrives there. FAKE_QEMU_EXIT=S: after the bulk,
 * print an error on stderr and exit S. QMP: greeting, `{"return": {}}` to everything, exit 0
 * after `quit`.
 */
const FAKE_QEMU = String.raw`#!/usr/bin/env python3
import os, socket, sys, threading
args = sys.argv[1:]
paths = {}
for i, a in enumerate(args):
    if a == '-chardev':
        props = dict(p.split('=', 1) for p in args[i + 1].split(',')[1:])
        paths[props['id']] = props['path']
def connect(p):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(p)
    return s
qmp = connect(paths.pop('charmonitor'))
ports = {k: connect(v) for k, v in paths.items()}
port = ports['charserial0']
def guest():
    n = int(os.environ.get('FAKE_QEMU_BULK', '0'))
    if n:
        port.sendall(bytes((i * 7 + i // 251) % 256 for i in range(n)))
    code = os.environ.get('FAKE_QEMU_EXIT')
    if code:
        sys.stderr.write('fake-qemu: warning: something\nfake-qemu: the guest crashed\n')
        sys.stderr.flush()
        os._exit(int(code))
    while True:
        b = port.recv(4096)
        if not b:
            return
        port.sendall(b)
threading.Thread(target=guest, daemon=True).start()
qmp.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
buf = b''
while True:
    b = qmp.recv(4096)
    if not b:
        os._exit(0)
    buf += b
    while b'\n' in buf:
        line, buf = buf.split(b'\n', 1)
        qmp.sendall(b'{"return": {}}\r\n')
        if b'"quit"' in line:
            os._exit(0)
`;

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + Math.floor(i / 251)) % 256;
  return b;
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('chardev qemu: the bridge to QEMU (stand-in QEMU)', () => {
  let dir = '';
  let fake = '';
  before(() => {
    dir = tmpDir('qemu-bridge');
    fake = path.join(dir, 'fake-qemu');
    fs.writeFileSync(fake, FAKE_QEMU, { mode: 0o755 });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function start(name: string, devices: string, env: Record<string, string>) {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(file, `<domain type='kvm'><name>${name}</name><os><type arch='x86_64'>hvm</type></os><devices>${devices}</devices></domain>`);
    const child = spawn(process.execPath, [BIN, 'qemu', file, '--run-dir', path.join(dir, 'run'), '--log-dir', path.join(dir, 'logs'), '--', fake], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    return { child, exited, stdout: () => stdout, stderr: () => stderr };
  }

  it('guest output a slow pipe reader cannot take yet waits (QEMU is held back), none lost; input reaches QEMU', { timeout: 60000 }, async () => {
    // More than the FIFO (64 KiB) and the pipe backend's own queue (1 MiB) hold together.
    const n = 3 * 1024 * 1024;
    const base = path.join(dir, 'slow');
    const log = path.join(dir, 'slow.log');
    linuxPlatform.mkfifo(`${base}.in`, 0o600);
    linuxPlatform.mkfifo(`${base}.out`, 0o600);
    const c = start('slow', `<serial type='pipe'><source path='${q(base)}'/><log file='${q(log)}'/></serial>`, { FAKE_QEMU_BULK: String(n) });
    try {
      await waitFor(() => /every device connected/.test(c.stdout()), `QEMU to connect\n${c.stdout()}\n${c.stderr()}`, 20000);
      // Nobody reads for a while: the FIFO (64 KiB) fills, the rest must wait, not vanish.
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(fs.statSync(log).size < n, 'the device took only what the FIFO and its queue hold so far');
      const reader = run('head', ['-c', String(n + 5), `${base}.out`], 30000);
      await waitFor(() => fs.statSync(log).size === n, 'every byte accepted', 20000);
      assert.equal((await run('sh', ['-c', 'printf "ping\\n" > "$1"', 'sh', `${base}.in`])).code, 0);
      const got = (await reader).stdout;
      assert.equal(got.length, n + 5);
      assert.equal(sha(got.subarray(0, n)), sha(pattern(n)), 'the bytes in order');
      assert.equal(got.subarray(n).toString(), 'ping\n', 'input reached QEMU (which echoed it)');
      assert.equal(sha(fs.readFileSync(log)), sha(Buffer.concat([pattern(n), Buffer.from('ping\n')])), 'the <log> file has exactly what the device took');
      c.child.kill('SIGTERM');
      assert.equal(await c.exited, 0, c.stderr());
    } finally {
      c.child.kill('SIGKILL');
    }
  });

  it('QEMU failing while running: chardev exits with its status and its last words', { timeout: 30000 }, async () => {
    const c = start('crash', `<serial type='null'/>`, { FAKE_QEMU_BULK: '10', FAKE_QEMU_EXIT: '3' });
    try {
      assert.equal(await c.exited, 3);
      assert.equal(c.stderr(), 'qemu: fake-qemu exited with status 3: fake-qemu: the guest crashed\n');
      const domainLog = fs.readFileSync(path.join(dir, 'logs', 'crash.log'), 'utf8');
      assert.match(domainLog, /fake-qemu: warning: something\nfake-qemu: the guest crashed\n.*qemu exited \(status 3\)\n$/);
    } finally {
      c.child.kill('SIGKILL');
    }
  });
});
