/**
 * Safe by default: no TCP listener hands out a shell unless the user asks, and
 * `chardev run FILE` with no COMMAND does not serve one by itself. Real `chardev run`
 * processes (bin/chardev.js), looked at from outside: /proc/net/tcp, socket modes, a
 * Python client.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run } from '../platform/helpers.ts';
import { Daemon, tcpListeners } from './daemon.ts';

const T = { timeout: 40000 };

describe('chardev run is safe by default', () => {
  let dir = '';
  const daemons: Daemon[] = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-safety-'));
  });
  after(async () => {
    await Promise.all(daemons.map((d) => d.kill()));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const runDir = (name: string): string => {
    const d = path.join(dir, name);
    fs.mkdirSync(d, { mode: 0o700 });
    return d;
  };
  const start = (args: readonly string[], env: NodeJS.ProcessEnv = {}): Daemon => {
    const d = new Daemon(['run', ...args], { ...process.env, SHELL: '/bin/sh', ...env });
    daemons.push(d);
    return d;
  };

  it('the default domain: the shell on an owner-only socket, the pty and the browser console; no TCP port but the console’s, on loopback', T, async () => {
    const rd = runDir('default');
    const d = start(['--run-dir', rd, '--log-dir', path.join(dir, 'default-logs')]);
    await d.match(/guest is \/bin\/sh \(on its own pty\)/, 'the default domain to start');
    const web = Number(/^web console: http:\/\/127\.0\.0\.1:(\d+)\//m.exec(d.stdout)?.[1]);
    assert.ok(web > 0, d.stdout);
    assert.deepEqual(tcpListeners(d.pid), [`127.0.0.1:${web}`], 'the only TCP listener is the token-protected browser console');
    const sock = path.join(rd, 'chardev.sock');
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    assert.equal(fs.statSync(rd).mode & 0o777, 0o700);
    // The owner gets the shell through the socket: a command's answer comes back.
    const py = [
      'import socket,sys,time',
      's=socket.socket(socket.AF_UNIX)',
      's.settimeout(10)',
      `s.connect(${JSON.stringify(sock)})`,
      's.sendall(b"echo sh-$((6*7))\\n")',
      'out=b""',
      'while b"sh-42" not in out: out+=s.recv(100)',
      'sys.stdout.write("ok\\n")',
    ].join('\n');
    const client = await run('python3', ['-c', py], 15000);
    assert.equal(client.stdout.toString(), 'ok\n', client.stderr.toString());
    assert.equal(d.stderr, '', 'no warning for the default domain');
    d.child.kill('SIGTERM');
    assert.equal(await d.exitWithin(8000), 129, 'the shell ended by SIGHUP, as when its terminal goes');
    assert.deepEqual(fs.readdirSync(rd), [], 'socket, control sockets and status file gone');
  });

  it('run FILE without COMMAND refuses with a one-line hint (exit 2) and starts nothing', T, async () => {
    const rd = runDir('nocommand');
    const file = path.join(dir, 'tcp.xml');
    fs.writeFileSync(
      file,
      `<domain type='kvm'><name>tcpdom</name><os><type arch='x86_64'>hvm</type></os><devices>
      <serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/></serial>
    </devices></domain>`,
    );
    const d = start([file, '--run-dir', rd, '--log-dir', path.join(dir, 'logs')]);
    assert.equal(await d.exitWithin(10000), 2);
    assert.equal(d.stderr, `run: no guest for ${file}: add --shell to serve your $SHELL on its devices, or -- COMMAND ARGS…\n`);
    assert.equal(d.stdout, '');
    assert.deepEqual(fs.readdirSync(rd), []);
  });

  it('run FILE --shell on a TCP device: served as asked, with one line saying who gets the shell', T, async () => {
    const rd = runDir('shell');
    const file = path.join(dir, 'tcp-shell.xml');
    fs.writeFileSync(
      file,
      `<domain type='kvm'><name>tcpshell</name><os><type arch='x86_64'>hvm</type></os><devices>
      <serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/></serial>
    </devices></domain>`,
    );
    const d = start([file, '--shell', '--run-dir', rd, '--log-dir', path.join(dir, 'logs')]);
    await d.match(/guest is \/bin\/sh/, 'the domain to start');
    const port = Number(/charserial0: listening on tcp:127\.0\.0\.1:(\d+)/.exec(d.stdout)?.[1]);
    assert.equal(d.stderr, `run: warning: anyone who can reach raw 127.0.0.1:${port} gets this shell, with no password (charserial0)\n`);
    const py = [
      'import socket,sys',
      `s=socket.create_connection(("127.0.0.1",${port}),timeout=10)`,
      's.sendall(b"echo sh-$((6*7))\\n")',
      'out=b""',
      'while b"sh-42" not in out: out+=s.recv(100)',
      'sys.stdout.write("ok\\n")',
    ].join('\n');
    const client = await run('python3', ['-c', py], 15000);
    assert.equal(client.stdout.toString(), 'ok\n', client.stderr.toString());
    d.child.kill('SIGTERM');
    assert.equal(await d.exitWithin(8000), 129);
  });

  it('--shell and a COMMAND together, --telnet with a FILE, a bad --telnet: usage errors (exit 2)', T, async () => {
    const rd = runDir('usage');
    const file = path.join(dir, 'null.xml');
    fs.writeFileSync(file, `<domain type='kvm'><name>n</name><os><type arch='x86_64'>hvm</type></os><devices><serial type='null'/></devices></domain>`);
    const cases: Array<[string[], string]> = [
      [[file, '--shell', '--', 'true'], 'run: --shell or -- COMMAND, not both\n'],
      [[file, '--telnet', '127.0.0.1:0', '--', 'true'], 'run: --telnet applies to the embedded domain only (put a tcp device in FILE instead)\n'],
      [['--telnet', 'nope'], "run: --telnet must be HOST:PORT (e.g. 127.0.0.1:4555; port 0 picks a free one), not 'nope'\n"],
    ];
    for (const [args, err] of cases) {
      const d = start([...args, '--run-dir', rd, '--log-dir', path.join(dir, 'logs')]);
      assert.equal(await d.exitWithin(10000), 2, args.join(' '));
      assert.equal(d.stderr, err);
    }
    assert.deepEqual(fs.readdirSync(rd), []);
  });
});
