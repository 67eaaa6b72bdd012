/**
 * `chardev daemon` under systemd: socket activation (systemd-socket-activate holds the
 * control socket and starts the daemon on the first connection, as chardev-daemon.socket
 * does), readiness and stopping on $NOTIFY_SOCKET (a Python datagram listener standing in
 * for systemd), and the example units accepted by systemd-analyze.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient } from '../../src/control/qmp-client.ts';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';
import { BIN } from '../cli/daemon.ts';

const T = { timeout: 40000 };
const has = (cmd: string, arg: string): boolean => spawnSync(cmd, [arg]).status === 0;

/** systemd's side of sd_notify: a unix datagram socket; each datagram becomes one JSON line. */
const LISTENER_PY = String.raw`
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps('listening'), flush=True)
while True:
    print(json.dumps(s.recv(4096).decode()), flush=True)
`;

describe('chardev daemon as a systemd service', () => {
  let dir = '';
  let listener: ChildProcessWithoutNullStreams | undefined;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-daemon-svc-'));
  });
  after(async () => {
    listener?.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('socket activation: the first connection to the held control socket starts the daemon, which answers on it; READY=1 and STOPPING=1 reach $NOTIFY_SOCKET', {
    ...T,
    skip: has('systemd-socket-activate', '--version') ? false : 'systemd-socket-activate is not installed',
  }, async () => {
    const notify = path.join(dir, 'notify.sock');
    const messages: string[] = [];
    const l = spawn('python3', ['-c', LISTENER_PY, notify], { stdio: ['pipe', 'pipe', 'pipe'] });
    listener = l;
    let buf = '';
    l.stdout.on('data', (b: Buffer) => {
      buf += b.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        messages.push(JSON.parse(buf.slice(0, i)) as string);
        buf = buf.slice(i + 1);
      }
    });
    await waitFor(() => messages[0] === 'listening', 'the notify listener');

    // As chardev-daemon.socket: the directories 0700, the socket held before the daemon runs.
    const runDir = path.join(dir, 'run');
    fs.mkdirSync(path.join(runDir, 'daemon'), { recursive: true, mode: 0o700 });
    fs.chmodSync(runDir, 0o700);
    const control = path.join(runDir, 'daemon', 'control.qmp');
    // systemd-socket-activate execs the daemon in its own process: the pid is the daemon's.
    const sa = spawn(
      'systemd-socket-activate',
      ['-l', control, '-E', `NOTIFY_SOCKET=${notify}`, process.execPath, BIN, 'daemon', '--run-dir', runDir, '--log-dir', path.join(dir, 'logs'), '--verbose'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    sa.stdout.on('data', (b: Buffer) => (out += b.toString()));
    sa.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((resolve) => sa.once('close', (code) => resolve(code)));
    try {
      await waitFor(() => fs.existsSync(control), 'the held socket');
      assert.equal(messages.length, 1, 'nothing runs before the first connection');
      const qmp = await QmpClient.connect(control, 30000);
      try {
        assert.deepEqual(await qmp.execute('x-domain-list', undefined, 30000), []);
        const started = (await qmp.execute('x-domain-start', { xml: "<domain><name>act</name><devices><serial type='null'/></devices></domain>" })) as {
          name: string;
        };
        assert.equal(started.name, 'act');
      } finally {
        await qmp.close();
      }
      assert.match(out, /daemon: listening on the socket systemd passed/);
      await waitFor(() => messages.some((m) => m.startsWith('READY=1\n')), 'READY=1');
      assert.match(messages.find((m) => m.startsWith('READY=1\n')) ?? '', new RegExp(`^READY=1\\nSTATUS=0 domains\\nMAINPID=${sa.pid}$`));
      // The CLI finds the domain through the status file, as for any daemon.
      const list = spawnSync(process.execPath, [BIN, 'list', '--run-dir', runDir], { encoding: 'utf8' });
      assert.match(list.stdout, new RegExp(`^${sa.pid}\\s+act\\s+running`, 'm'));
      sa.kill('SIGTERM');
      assert.equal(await exited, 0, out);
      assert.ok(messages.includes('STOPPING=1'), JSON.stringify(messages));
      assert.ok(fs.existsSync(control), "the held socket stays (it is systemd's)");
    } finally {
      sa.kill('SIGKILL');
    }
  });

  it('examples/chardev-daemon.service and .socket: systemd-analyze accepts them (with this checkout’s chardev as ExecStart)', {
    ...T,
    skip: has('systemd-analyze', '--version') ? false : 'systemd-analyze is not installed',
  }, () => {
    const unitDir = fs.mkdtempSync(path.join(dir, 'unit-'));
    const exe = path.join(unitDir, 'chardev');
    fs.writeFileSync(exe, `#!/bin/sh\nexec ${process.execPath} ${BIN} "$@"\n`, { mode: 0o755 });
    const service = fs.readFileSync(path.join(ROOT, 'examples', 'chardev-daemon.service'), 'utf8').replaceAll('/usr/local/bin/chardev', exe);
    assert.match(service, /^Type=notify$/m);
    assert.match(service, /^KillMode=process$/m, 'the QEMUs are not killed with the daemon');
    assert.match(service, /^RuntimeDirectoryPreserve=yes$/m, 'the state file and sockets outlive a stop');
    const socket = fs.readFileSync(path.join(ROOT, 'examples', 'chardev-daemon.socket'), 'utf8');
    assert.match(socket, /^ListenStream=\/run\/chardev\/daemon\/control\.qmp$/m, 'where the CLI looks: RuntimeDirectory/daemon/control.qmp');
    assert.match(socket, /^SocketMode=0600$/m);
    fs.writeFileSync(path.join(unitDir, 'chardev-daemon.service'), service);
    fs.writeFileSync(path.join(unitDir, 'chardev-daemon.socket'), socket);
    const r = spawnSync('systemd-analyze', ['verify', path.join(unitDir, 'chardev-daemon.socket'), path.join(unitDir, 'chardev-daemon.service')], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '');
  });
});
