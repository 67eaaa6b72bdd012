/** `chardev run` end to end: real child processes as guests, real files, FIFOs and signals. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { linuxPlatform } from '../../src/platform/index.ts';
import { domainXml, q, run, tmpDir, waitFor } from '../core/helpers.ts';

const RUN_CLI = path.join(ROOT, 'test', 'helpers', 'run-cli.ts');
const BIN = path.join(ROOT, 'bin', 'chardev.js');
const T = { timeout: 30000 };

/** `chardev run ARGS…` through run.ts (the helper mirrors cli/main.ts). */
function chardevRun(args: readonly string[], timeoutMs = 15000) {
  return run(process.execPath, ['--import', 'tsx', RUN_CLI, 'run', ...args], timeoutMs);
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
    const child = spawn(process.execPath, ['--import', 'tsx', RUN_CLI, 'run', '--log-dir', logDir, file, '--', 'sh', '-c', 'echo started; exec sleep 30'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
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

  it('a device that fails to start: one line naming it, exit 1, the guest never runs', T, async () => {
    const marker = path.join(dir, 'ran');
    const file = writeDomain('bad', `<serial type='file'><source path='${q(path.join(dir, 'missing', 'x'))}'/></serial>`);
    const r = await chardevRun(['--log-dir', logDir, file, '--', 'touch', marker]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^charserial0: file: Could not open '.*missing\/x': directory '.*missing' does not exist\n$/);
    assert.equal(fs.existsSync(marker), false);
  });

  it('bin/chardev.js run (once cli/main.ts registers the command)', T, async (t) => {
    const help = await run(process.execPath, [BIN, '--help']);
    if (!/^\s+run\b/m.test(help.stdout.toString())) {
      t.skip('`run` is not registered in src/cli/main.ts yet (one line: registerRunCommand(program, write))');
      return;
    }
    const out = path.join(dir, 'bin.out');
    const file = writeDomain('bin', `<serial type='file'><source path='${q(out)}'/></serial>`);
    const r = await run(process.execPath, [BIN, 'run', '--log-dir', logDir, file, '--', 'sh', '-c', 'echo hello; exit 3'], 15000);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(fs.readFileSync(out, 'utf8'), 'hello\n');
  });
});
