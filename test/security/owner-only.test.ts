/**
 * Everything chardev creates is owner-only, whatever the caller's umask: a real `chardev
 * run` started under `umask 000` with a domain that makes every kind of path — UNIX server
 * sockets, file output, `<log>` files, the rotating domain log and its backups, the run and
 * log directories, the status file, the console and QMP sockets, and devices added over
 * QMP — and every created path is stat()ed from outside: mode 0600 (0700 for directories),
 * owned by us, and nothing left behind at exit but the output files.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { QmpClient } from '../../src/control/qmp-client.ts';
import { q } from '../core/helpers.ts';
import { ChardevRun, scratchDir, secDomain, Tally } from './helpers.ts';

const T = { timeout: 60000 };
/** Enough guest output for the domain log (2 MiB a file) to rotate twice. */
const GUEST_BYTES = 5_000_000;

/** Every path below `dir` (not `dir` itself), depth first. */
function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    out.push(p);
    if (fs.lstatSync(p).isDirectory()) out.push(...walk(p));
  }
  return out;
}

function kind(st: fs.Stats): string {
  return st.isSocket() ? 'socket' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
}

describe('security: sockets, logs and status files are owner-only (chardev run under umask 000)', () => {
  let dir = '';
  const runs: ChardevRun[] = [];
  before(() => {
    dir = scratchDir('owner');
  });
  after(async () => {
    await Promise.all(runs.map((r) => r.stop()));
  });

  it('every path a running domain creates is 0600 (directories 0700) and ours; rotated logs too', T, async (t) => {
    const tally = new Tally();
    const uid = process.getuid!();
    // Directories the test makes, world-readable on purpose: the protection must come from chardev.
    const open = path.join(dir, 'open');
    fs.mkdirSync(open, { mode: 0o777 });
    fs.chmodSync(open, 0o777);
    // Directories chardev must create itself (nested: the parents it creates count too).
    const logDir = path.join(dir, 'state', 'chardev', 'logs');
    const rundir = path.join(dir, 'runtime', 'chardev');
    const sock = path.join(open, 'serial.sock');
    const fileOut = path.join(open, 'serial.out');
    const fileLog = path.join(open, 'file-tee.log');
    const ptyLog = path.join(open, 'pty.log');
    const tcpLog = path.join(open, 'tcp.log');
    const domainFile = path.join(dir, 'perm.xml');
    fs.writeFileSync(
      domainFile,
      secDomain(
        'perm',
        `<serial type='unix'><source mode='bind' path='${q(sock)}'/></serial>
<serial type='file'><source path='${q(fileOut)}'/><log file='${q(fileLog)}'/></serial>
<serial type='stdio'/>
<serial type='pty'><log file='${q(ptyLog)}' append='on'/></serial>
<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><log file='${q(tcpLog)}'/></serial>`,
      ),
    );
    const script = `head -c ${GUEST_BYTES} /dev/zero | tr '\\0' x; echo; echo guest-done; exec sleep 60`;
    const r = new ChardevRun(['--run-dir', rundir, '--log-dir', logDir, '--attach', 'serial1', '--attach', 'serial2', domainFile, '--', 'sh', '-c', script], {
      umask: '000',
    });
    runs.push(r);
    await r.match(/guest is sh/, 'the domain to start');
    const domainLog = path.join(logDir, 'perm.log');
    const logged = (): number =>
      [domainLog, `${domainLog}.1`, `${domainLog}.2`, `${domainLog}.3`].reduce((n, f) => n + (fs.existsSync(f) ? fs.statSync(f).size : 0), 0);
    await r.until(
      () => fs.existsSync(fileOut) && fs.statSync(fileOut).size === GUEST_BYTES + 12 && logged() === GUEST_BYTES + 12,
      'all guest output in the file and the domain log',
    );

    // Devices added while running, over QMP.
    const qmp = await QmpClient.connect(path.join(rundir, 'perm.qmp'));
    const qmpFile = path.join(open, 'qmp-added.out');
    const qmpTee = path.join(open, 'qmp-added.tee');
    const qmpSock = path.join(open, 'qmp-added.sock');
    await qmp.execute('chardev-add', { id: 'qf0', backend: { type: 'file', data: { out: qmpFile, logfile: qmpTee } } });
    await qmp.execute('chardev-add', {
      id: 'qu0',
      backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: qmpSock } }, server: true, wait: false } },
    });
    await qmp.close();

    const expected = new Map<string, string>([
      [path.join(dir, 'state'), 'dir'],
      [path.join(dir, 'state', 'chardev'), 'dir'],
      [logDir, 'dir'],
      [domainLog, 'file'],
      [`${domainLog}.1`, 'file'],
      [`${domainLog}.2`, 'file'],
      [path.join(dir, 'runtime'), 'dir'],
      [rundir, 'dir'],
      [path.join(rundir, 'perm.json'), 'file'],
      [path.join(rundir, 'perm.console'), 'socket'],
      [path.join(rundir, 'perm.qmp'), 'socket'],
      [sock, 'socket'],
      [fileOut, 'file'],
      [fileLog, 'file'],
      [ptyLog, 'file'],
      [tcpLog, 'file'],
      [qmpFile, 'file'],
      [qmpTee, 'file'],
      [qmpSock, 'socket'],
    ]);
    const created = walk(dir).filter((p) => p !== open && p !== domainFile);
    assert.deepEqual([...created].sort(), [...expected.keys()].sort(), 'exactly these paths were created (no temp files left over)');
    const wrong: string[] = [];
    for (const [p, k] of expected) {
      const st = fs.lstatSync(p);
      const want = k === 'dir' ? 0o700 : 0o600;
      if (kind(st) !== k) wrong.push(`${p}: a ${kind(st)}, expected a ${k}`);
      if ((st.mode & 0o7777) !== want) wrong.push(`${p}: mode ${(st.mode & 0o7777).toString(8)}, expected ${want.toString(8)}`);
      if (st.uid !== uid) wrong.push(`${p}: owner ${st.uid}, expected ${uid}`);
      tally.add(`${k}s stat()ed (mode and owner)`);
    }
    assert.deepEqual(wrong, []);
    assert.equal(fs.statSync(`${domainLog}.2`).size, 2 * 1024 * 1024, 'the oldest backup is a full rotation');

    // The guest (sleep) ends on SIGTERM: chardev exits with its status, 128 + 15.
    assert.equal(await r.stop(), 143);
    assert.equal(r.stderr(), '');
    // At exit the sockets and the status file are gone; output files stay, still 0600.
    const left = walk(dir).filter((p) => p !== open && p !== domainFile && !fs.lstatSync(p).isDirectory());
    assert.deepEqual(left.sort(), [domainLog, `${domainLog}.1`, `${domainLog}.2`, fileOut, fileLog, ptyLog, tcpLog, qmpFile, qmpTee].sort());
    for (const p of left) assert.equal(fs.statSync(p).mode & 0o777, 0o600, p);
    tally.add('removed at exit (sockets, status file)', 5);
    tally.report('owner-only paths', (s) => t.diagnostic(s));
  });

  it('the embedded default domain under umask 000: serial0.log, chardev.log, sockets and status are owner-only', T, async (t) => {
    const tally = new Tally();
    const base = path.join(dir, 'default');
    const logDir = path.join(base, 'logs');
    const rundir = path.join(base, 'run');
    const r = new ChardevRun(['--run-dir', rundir, '--log-dir', logDir, '--', 'sh', '-c', 'echo hello; exec sleep 60'], { umask: '000' });
    runs.push(r);
    await r.match(/guest is sh/, 'the default domain to start');
    await r.until(
      () => fs.existsSync(path.join(logDir, 'serial0.log')) && fs.readFileSync(path.join(logDir, 'serial0.log'), 'utf8').includes('hello'),
      'guest output in serial0.log',
    );
    const wrong: string[] = [];
    for (const p of walk(base)) {
      const st = fs.lstatSync(p);
      const want = st.isDirectory() ? 0o700 : 0o600;
      if ((st.mode & 0o7777) !== want) wrong.push(`${p}: ${kind(st)} mode ${(st.mode & 0o7777).toString(8)}`);
      if (st.uid !== process.getuid!()) wrong.push(`${p}: owner ${st.uid}`);
      tally.add(`${kind(st)}s stat()ed (mode and owner)`);
    }
    assert.deepEqual(wrong, []);
    assert.ok(tally.total >= 7, `the log and run directories, two logs, three sockets, a status file: ${walk(base).join(' ')}`);
    // The status file holds the web console's token: readable by us only (checked above), and it has it.
    const status = JSON.parse(fs.readFileSync(path.join(rundir, 'chardev.json'), 'utf8')) as { webUrl?: string };
    assert.match(status.webUrl ?? '', /token=/);
    await r.stop();
    tally.report('owner-only paths, default domain', (s) => t.diagnostic(s));
  });
});
