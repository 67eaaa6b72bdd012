/**
 * Running as a service: readiness to systemd over a real unix datagram socket
 * (a Python listener standing in for systemd), $RUNTIME_DIRECTORY/$LOGS_DIRECTORY, the web
 * token kept out of anything but a terminal, --quiet/--verbose, one version, and the
 * example unit accepted by systemd-analyze.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';
import { run } from '../platform/helpers.ts';
import { BIN, Daemon } from './daemon.ts';

const T = { timeout: 40000 };
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** systemd's side of sd_notify: a unix datagram socket; each datagram becomes one JSON line. */
const LISTENER_PY = String.raw`
import json, os, socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(('\0' + addr[1:]) if addr.startswith('@') else addr)
print(json.dumps('listening'), flush=True)
while True:
    data = s.recv(4096)
    print(json.dumps(data.decode()), flush=True)
`;

class NotifyListener {
  readonly child: ChildProcessWithoutNullStreams;
  readonly messages: string[] = [];
  constructor(address: string) {
    this.child = spawn('python3', ['-c', LISTENER_PY, address], { stdio: ['pipe', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout.on('data', (b: Buffer) => {
      buf += b.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.messages.push(JSON.parse(buf.slice(0, i)) as string);
        buf = buf.slice(i + 1);
      }
    });
  }
  async ready(): Promise<void> {
    await waitFor(() => this.messages[0] === 'listening', 'the notify listener', 5000);
  }
  stop(): void {
    this.child.kill('SIGKILL');
  }
}

describe('chardev as a service', () => {
  let dir = '';
  const daemons: Daemon[] = [];
  const listeners: NotifyListener[] = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-service-'));
  });
  after(async () => {
    await Promise.all(daemons.map((d) => d.kill()));
    for (const l of listeners) l.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const domainFile = (name: string, devices: string): string => {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(file, `<domain type='kvm'><name>${name}</name><os><type arch='x86_64'>hvm</type></os><devices>${devices}</devices></domain>`);
    return file;
  };
  const privateDir = (name: string): string => {
    const d = path.join(dir, name);
    fs.mkdirSync(d, { mode: 0o700 });
    return d;
  };

  for (const kind of ['path', 'abstract'] as const) {
    it(`READY=1 reaches $NOTIFY_SOCKET (${kind}) once the domain is up, from chardev's own pid; STOPPING=1 on SIGTERM`, T, async () => {
      const address = kind === 'path' ? path.join(dir, `notify-${kind}.sock`) : `@chardev-test-notify-${process.pid}`;
      const listener = new NotifyListener(address);
      listeners.push(listener);
      await listener.ready();
      const rd = privateDir(`notify-${kind}`);
      const file = domainFile(`svc${kind}`, `<serial type='null'/>`);
      const d = new Daemon(['run', file, '--run-dir', rd, '--log-dir', path.join(dir, 'logs'), '--', 'sleep', '60'], {
        ...process.env,
        NOTIFY_SOCKET: address,
      });
      daemons.push(d);
      await d.match(/guest is sleep/, 'the domain to start');
      await waitFor(() => listener.messages.length >= 2, 'READY=1', 5000);
      const ready = listener.messages[1] ?? '';
      assert.match(ready, /^READY=1\n/);
      assert.match(ready, new RegExp(`\\nMAINPID=${d.pid}$`));
      assert.match(ready, new RegExp(`\\nSTATUS=domain svc${kind}: guest sleep 60 \\(pid \\d+\\)\\n`));
      assert.ok(fs.existsSync(path.join(rd, `svc${kind}.json`)), 'ready means the status file is there');
      d.child.kill('SIGTERM');
      assert.equal(await d.exitWithin(8000), 128 + 15);
      assert.ok(listener.messages.includes('STOPPING=1'), JSON.stringify(listener.messages));
      assert.equal(d.stderr, '');
    });
  }

  it('$RUNTIME_DIRECTORY and $LOGS_DIRECTORY (systemd) are where the status, sockets and logs go; chardev list finds it there', T, async () => {
    const runtime = privateDir('runtime');
    const logs = privateDir('logs-dir');
    const env = {
      ...process.env,
      RUNTIME_DIRECTORY: runtime,
      LOGS_DIRECTORY: logs,
      XDG_RUNTIME_DIR: path.join(dir, 'not-here'),
      XDG_STATE_HOME: path.join(dir, 'not-here'),
    };
    const file = domainFile('sysd', `<serial type='stdio'/>`);
    const d = new Daemon(['run', file, '--', 'sh', '-c', 'echo to-the-log; exec sleep 60'], env);
    daemons.push(d);
    await d.match(/guest is sh/, 'the domain to start');
    assert.deepEqual(fs.readdirSync(runtime).sort(), ['sysd.console', 'sysd.json', 'sysd.qmp']);
    await waitFor(
      () => fs.existsSync(path.join(logs, 'sysd.log')) && fs.readFileSync(path.join(logs, 'sysd.log'), 'utf8').includes('to-the-log'),
      'the domain log in $LOGS_DIRECTORY',
      5000,
    );
    const list = spawnSync(process.execPath, [BIN, 'list', '--json'], { env, encoding: 'utf8' });
    assert.deepEqual(
      (JSON.parse(list.stdout) as Array<{ name: string }>).map((x) => x.name),
      ['sysd'],
    );
    assert.equal(fs.existsSync(path.join(dir, 'not-here')), false);
    d.child.kill('SIGTERM');
    await d.exitWithin(8000);
    assert.deepEqual(fs.readdirSync(runtime), []);
  });

  it('the web token: not on stdout or stderr through a pipe (nor in the logs), in the status file; printed on a terminal', T, async () => {
    const rd = privateDir('token');
    const logs = path.join(dir, 'token-logs');
    const file = domainFile('tok', `<serial type='vc'/><serial type='stdio'/>`);
    const d = new Daemon(['run', file, '--verbose', '--run-dir', rd, '--log-dir', logs, '--', 'sleep', '60']);
    daemons.push(d);
    await d.match(/guest is sleep/, 'the domain to start');
    const status = JSON.parse(fs.readFileSync(path.join(rd, 'tok.json'), 'utf8')) as { webUrl: string };
    const token = /token=([\w-]+)/.exec(status.webUrl)?.[1] ?? '';
    assert.ok(token.length >= 16);
    assert.ok(!d.stdout.includes(token) && !d.stderr.includes(token));
    assert.match(d.stdout, /^web console: http:\/\/127\.0\.0\.1:\d+\/console\/serial0 \(charserial0; token: chardev status tok\)$/m);
    const st = spawnSync(process.execPath, [BIN, 'status', '--run-dir', rd, 'tok'], { encoding: 'utf8' });
    assert.ok(st.stdout.includes(status.webUrl), 'chardev status shows it');
    d.child.kill('SIGTERM');
    await d.exitWithin(8000);
    for (const f of fs.readdirSync(logs)) assert.ok(!fs.readFileSync(path.join(logs, f), 'utf8').includes(token), f);

    // On a terminal (util-linux script gives it a pty as stdout) the URL carries the token.
    const rd2 = privateDir('token-tty');
    const cmd = [process.execPath, BIN, 'run', file, '--run-dir', rd2, '--log-dir', logs, '--', 'true'].map((a) => `'${a}'`).join(' ');
    const tty = await run('script', ['-qec', cmd, '/dev/null'], 20000);
    assert.equal(tty.code, 0, tty.stderr.toString());
    assert.match(tty.stdout.toString(), /web console: http:\/\/127\.0\.0\.1:\d+\/console\/serial0\?token=[\w-]{16,} \(charserial0\)/);
  });

  it('--quiet prints nothing but problems; --verbose adds clients, signals and the stop', T, async () => {
    const rd = privateDir('levels');
    const sock = path.join(rd, 'dev.sock');
    const file = domainFile('lv', `<serial type='unix'><source mode='bind' path='${sock}'/></serial>`);
    const quiet = spawnSync(process.execPath, [BIN, 'run', '--quiet', file, '--run-dir', rd, '--log-dir', path.join(dir, 'logs'), '--', 'true'], {
      encoding: 'utf8',
    });
    assert.equal(quiet.status, 0, quiet.stderr);
    assert.equal(quiet.stdout, '');
    assert.equal(quiet.stderr, '');
    const d = new Daemon(['run', '--verbose', file, '--run-dir', rd, '--log-dir', path.join(dir, 'logs'), '--', 'sleep', '60']);
    daemons.push(d);
    await d.match(/guest is sleep/, 'the domain to start');
    assert.match(d.stdout, new RegExp(`^chardev ${VERSION.replace(/\./g, '\\.')} on Node v\\d+`, 'm'));
    const client = await run(
      'python3',
      ['-c', `import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.connect(${JSON.stringify(sock)})\ntime.sleep(0.3)\ns.close()`],
      10000,
    );
    assert.equal(client.code, 0);
    await d.match(/^charserial0: \S+ client .* left$/m, 'the client leaving, in --verbose');
    assert.match(d.stdout, /^charserial0: \S+ client .* attached as writer$/m);
    d.child.kill('SIGINT');
    assert.equal(await d.exitWithin(8000), 128 + 15, 'sleep got SIGTERM');
    assert.match(d.stdout, /^run: SIGINT received; stopping$/m);
    assert.match(d.stdout, /^run: stopped$/m);
  });

  it('one version: --version and the QMP greeting say package.json’s', T, async () => {
    const v = spawnSync(process.execPath, [BIN, '--version'], { encoding: 'utf8' });
    assert.equal(v.stdout, `${VERSION}\n`);
    const rd = privateDir('version');
    const file = domainFile('ver', `<serial type='null'/>`);
    const d = new Daemon(['run', file, '--run-dir', rd, '--log-dir', path.join(dir, 'logs'), '--', 'sleep', '60']);
    daemons.push(d);
    await d.match(/guest is sleep/, 'the domain to start');
    const greeting = await run(
      'python3',
      [
        '-c',
        `import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(${JSON.stringify(path.join(rd, 'ver.qmp'))})\nb=b''\nwhile b'\\n' not in b: b+=s.recv(4096)\nsys.stdout.write(b.decode())`,
      ],
      10000,
    );
    assert.match(greeting.stdout.toString(), new RegExp(`"package": ?"chardev ${VERSION.replace(/\./g, '\\.')}"`));
    d.child.kill('SIGTERM');
    await d.exitWithin(8000);
  });

  it('examples/chardev@.service: systemd-analyze accepts it (with this checkout’s chardev as ExecStart)', {
    ...T,
    skip: spawnSync('systemd-analyze', ['--version']).status === 0 ? false : 'systemd-analyze is not installed',
  }, () => {
    const unitDir = fs.mkdtempSync(path.join(dir, 'unit-'));
    const exe = path.join(unitDir, 'chardev');
    fs.writeFileSync(exe, `#!/bin/sh\nexec ${process.execPath} ${BIN} "$@"\n`, { mode: 0o755 });
    const text = fs.readFileSync(path.join(ROOT, 'examples', 'chardev@.service'), 'utf8').replaceAll('/usr/local/bin/chardev', exe);
    assert.match(text, /^Type=notify$/m);
    assert.match(text, /^RuntimeDirectory=chardev\/%i$/m);
    assert.match(text, /^LogsDirectory=chardev\/%i$/m);
    fs.writeFileSync(path.join(unitDir, 'chardev@.service'), text);
    fs.symlinkSync(path.join(unitDir, 'chardev@.service'), path.join(unitDir, 'chardev@vm1.service'));
    const r = spawnSync('systemd-analyze', ['verify', path.join(unitDir, 'chardev@vm1.service')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '');
  });
});
