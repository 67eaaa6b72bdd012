/**
 * Signals and exit statuses: SIGHUP, SIGINT and SIGTERM each stop `chardev run`
 * and `chardev qemu` cleanly — the guest stopped, sockets and status file gone — and the
 * exit status says whose failure it was (README "Exit status"). Real processes:
 * bin/chardev.js, /bin/sh guests, a stand-in QEMU in Python that speaks enough QMP.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';
import { BIN, Daemon, alive, childrenOf } from './daemon.ts';

const T = { timeout: 60000 };
const STOP_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM'] as const;

/** Connects to every -chardev socket and QMP; answers QMP, exits 0 on `quit`. */
const FAKE_QEMU = String.raw`#!/usr/bin/env python3
import os, socket, sys
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
ports = [connect(v) for v in paths.values()]
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

describe('signals stop chardev run and chardev qemu cleanly; exit statuses', () => {
  let dir = '';
  let fake = '';
  const daemons: Daemon[] = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-signals-'));
    fake = path.join(dir, 'fake-qemu');
    fs.writeFileSync(fake, FAKE_QEMU, { mode: 0o755 });
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
  const domainFile = (name: string, devices: string): string => {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(file, `<domain type='kvm'><name>${name}</name><os><type arch='x86_64'>hvm</type></os><devices>${devices}</devices></domain>`);
    return file;
  };
  const start = (args: readonly string[]): Daemon => {
    const d = new Daemon(args, { ...process.env, SHELL: '/bin/sh' });
    daemons.push(d);
    return d;
  };

  for (const sig of STOP_SIGNALS) {
    it(`${sig} stops chardev run (default domain, shell guest): the shell ends, sockets and status go`, T, async () => {
      const rd = runDir(`run-${sig}`);
      const d = start(['run', '--run-dir', rd, '--log-dir', path.join(dir, 'logs')]);
      await d.match(/guest is \/bin\/sh/, 'the domain to start');
      const guests = childrenOf(d.pid);
      assert.equal(guests.length, 1, `one guest: ${guests.join(' ')}`);
      assert.ok(fs.readdirSync(rd).length >= 4, 'sockets and status file there while it runs');
      d.child.kill(sig);
      // An interactive shell leaves on SIGHUP (its terminal went away): 128 + 1.
      assert.equal(await d.exitWithin(8000), 129, d.stderr);
      assert.equal(d.stderr, '');
      await waitFor(() => !alive(guests[0] as number), 'the shell to be gone', 2000);
      assert.deepEqual(fs.readdirSync(rd), []);
    });
  }

  it('npm start killed with SIGTERM: npm’s sh -c is in between, chardev sees npm go and stops all the same', T, async () => {
    const rd = runDir('npm-start');
    const npm = spawn('npm', ['start', '--', '--run-dir', rd, '--log-dir', path.join(dir, 'logs')], {
      cwd: ROOT,
      env: { ...process.env, SHELL: '/bin/sh' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    npm.stdout.on('data', (b: Buffer) => (out += b.toString()));
    npm.stderr.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitFor(() => /guest is \/bin\/sh/.test(out), `npm start to start the default domain: ${out}`, 20000);
      const { pid } = JSON.parse(fs.readFileSync(path.join(rd, 'chardev.json'), 'utf8')) as { pid: number };
      assert.notEqual(pid, npm.pid, 'chardev is not npm’s own process');
      npm.kill('SIGTERM');
      await waitFor(() => !alive(pid), 'chardev to stop after npm went', 8000);
      assert.deepEqual(fs.readdirSync(rd), []);
    } finally {
      npm.kill('SIGKILL');
    }
  });

  it('a guest that ignores SIGTERM and SIGHUP is killed 3 s after the signal; nothing is left', T, async () => {
    const rd = runDir('stubborn');
    const file = domainFile('stubborn', `<serial type='null'/>`);
    const d = start(['run', file, '--run-dir', rd, '--log-dir', path.join(dir, 'logs'), '--', 'sh', '-c', "trap '' TERM HUP; exec sleep 60"]);
    await d.match(/guest is sh/, 'the domain to start');
    const [guest] = childrenOf(d.pid);
    const t0 = Date.now();
    d.child.kill('SIGHUP');
    assert.equal(await d.exitWithin(8000), 128 + 9, 'SIGKILLed');
    assert.ok(Date.now() - t0 >= 2500, 'it had its 3 s');
    assert.ok(guest !== undefined && !alive(guest));
    assert.deepEqual(fs.readdirSync(rd), []);
  });

  for (const sig of STOP_SIGNALS) {
    it(`${sig} stops chardev qemu: QEMU quits over QMP, chardev exits 0, nothing is left`, T, async () => {
      const rd = runDir(`qemu-${sig}`);
      const file = domainFile(
        `q${sig.toLowerCase()}`,
        `<serial type='pty'/><serial type='unix'><source mode='bind' path='${path.join(rd, 'extra.sock')}'/></serial>`,
      );
      const d = start(['qemu', file, '--run-dir', rd, '--log-dir', path.join(dir, 'logs'), '--', fake]);
      await d.match(/qemu: every device connected/, 'QEMU to connect');
      const [qemu] = childrenOf(d.pid).filter((p) => fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('fake-qemu'));
      assert.ok(qemu !== undefined, 'the stand-in QEMU runs under chardev');
      d.child.kill(sig);
      assert.equal(await d.exitWithin(15000), 0, d.stderr);
      assert.equal(d.stderr, '');
      assert.ok(!alive(qemu));
      assert.deepEqual(fs.readdirSync(rd), [], 'status, control sockets, QEMU sockets and device sockets gone');
    });
  }

  it('exit statuses: 2 usage, 1 a refused document (validate), 125 chardev failed (run), 126/127 the command, else the guest’s', T, () => {
    const rd = runDir('status');
    const good = domainFile('st', `<serial type='null'/>`);
    const bad = domainFile('stbad', `<serial type='tcp'><source mode='bind' service='1'/></serial>`);
    const notExec = path.join(dir, 'not-executable');
    fs.writeFileSync(notExec, '#!/bin/sh\n', { mode: 0o644 });
    const common = ['--run-dir', rd, '--log-dir', path.join(dir, 'logs')];
    const cases: Array<[string[], number]> = [
      [['run', '--no-such-option'], 2],
      [['qemu-args', good, '--syntax', 'yaml'], 2],
      [['run', good, ...common], 2],
      [['run', '--web', 'nope', good, ...common, '--', 'true'], 2],
      [['validate', bad], 1],
      [['run', bad, ...common, '--', 'true'], 125],
      [['run', path.join(dir, 'missing.xml'), ...common, '--', 'true'], 125],
      [['qemu', bad, ...common, '--', fake], 125],
      [['run', good, ...common, '--', notExec], 126],
      [['run', good, ...common, '--', 'no-such-command-anywhere'], 127],
      [['run', good, ...common, '--', 'sh', '-c', 'exit 1'], 1],
      [['run', good, ...common, '--', 'sh', '-c', 'exit 3'], 3],
      [['run', good, ...common, '--', 'sh', '-c', 'kill -TERM $$'], 128 + 15],
    ];
    const got = cases.map(([args]) => {
      const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20000 });
      return r.status;
    });
    assert.deepEqual(
      got,
      cases.map(([, s]) => s),
      cases.map(([a]) => a.filter((x) => !x.startsWith(dir)).join(' ')).join('\n'),
    );
    assert.deepEqual(fs.readdirSync(rd), []);
  });
});
