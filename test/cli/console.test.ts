/**
 * `chardev console` and `chardev list` against a running `chardev run`, driven the way a
 * person would: in tmux, with send-keys and capture-pane.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { domainXml, run, tmpDir, waitFor } from '../core/helpers.ts';

const CLI = path.join(ROOT, 'src', 'cli', 'main.ts');
const T = { timeout: 40000 };
/** A tmux server of our own, so nothing here touches a user's sessions. */
const TMUX = ['-L', `chardev-test-${process.pid}`];

function tmux(...args: string[]): string {
  return execFileSync('tmux', [...TMUX, ...args], { encoding: 'utf8' });
}
function screen(window: string): string {
  return tmux('capture-pane', '-p', '-t', window);
}

describe('chardev console (in tmux)', () => {
  let dir = '';
  let runDir = '';
  let domain: ReturnType<typeof spawn> | undefined;
  let domainOut = '';
  const cli = (args: string): string => `${process.execPath} --import tsx ${CLI} ${args}`;

  before(async () => {
    dir = tmpDir('console');
    runDir = path.join(dir, 'run');
    fs.mkdirSync(runDir, { mode: 0o700 });
    const xml = path.join(dir, 'con.xml');
    fs.writeFileSync(xml, domainXml(`<serial type='null'><target port='0'/><cd:history size='65536'/></serial>`, 'con'));
    // The guest echoes each line it reads, so what reaches it is visible.
    const guest = 'echo boot-line; while IFS= read -r l; do printf "echo:%s\\n" "$l"; done';
    domain = spawn(process.execPath, ['--import', 'tsx', CLI, 'run', '--run-dir', runDir, '--log-dir', path.join(dir, 'logs'), xml, '--', 'sh', '-c', guest], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    domain.stdout?.on('data', (b: Buffer) => (domainOut += b.toString()));
    await waitFor(() => /console: chardev console con/.test(domainOut), 'the domain to start', 15000);
    tmux('new-session', '-d', '-s', 'main', '-x', '120', '-y', '30', 'sleep 600');
  });

  after(() => {
    try {
      tmux('kill-server');
    } catch {
      // already gone
    }
    domain?.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Open a tmux window running `chardev console ARGS`, then report its exit status and terminal settings. */
  function openConsole(name: string, args: string): void {
    tmux(
      'new-window',
      '-d',
      '-t',
      'main',
      '-n',
      name,
      `stty -g > ${dir}/${name}.before; ${cli(`console --run-dir ${runDir} ${args}`)}; echo "EXIT=$?"; stty -g > ${dir}/${name}.after; sleep 600`,
    );
  }

  it('attaches with the banner and history, input reaches the guest, ^] leaves and restores the terminal', T, async () => {
    openConsole('a', 'con');
    await waitFor(() => screen('main:a').includes('boot-line'), 'banner and history', 10000);
    const s = screen('main:a');
    assert.match(s, /^Connected to domain 'con'\nEscape character is \^\]\nboot-line\n/);
    tmux('send-keys', '-t', 'main:a', 'hello', 'C-j');
    await waitFor(() => screen('main:a').includes('echo:hello'), 'the guest to echo the line', 10000);
    tmux('send-keys', '-t', 'main:a', 'C-]');
    await waitFor(() => screen('main:a').includes('EXIT='), 'the console to exit', 10000);
    assert.match(screen('main:a'), /EXIT=0/);
    await waitFor(() => fs.existsSync(`${dir}/a.after`), 'stty after');
    assert.equal(fs.readFileSync(`${dir}/a.after`, 'utf8'), fs.readFileSync(`${dir}/a.before`, 'utf8'), 'the terminal is restored');
  });

  it('a second console is a viewer; --readonly input never reaches the guest; --force takes over and both are told', T, async () => {
    openConsole('w', 'con serial0');
    await waitFor(() => screen('main:w').includes('Escape character'), 'writer attached', 10000);
    openConsole('v', 'con --readonly');
    await waitFor(() => screen('main:v').includes('Escape character'), 'viewer attached', 10000);
    tmux('send-keys', '-t', 'main:v', 'from-viewer', 'C-j');
    tmux('send-keys', '-t', 'main:w', 'from-writer', 'C-j');
    await waitFor(() => screen('main:v').includes('echo:from-writer'), 'the viewer sees the writer’s echo', 10000);
    assert.ok(!screen('main:w').includes('echo:from-viewer'), 'viewer input is dropped');

    openConsole('f', 'con --force');
    await waitFor(() => screen('main:w').includes('took over; you are a read-only viewer now'), 'the old writer is told', 10000);
    tmux('send-keys', '-t', 'main:w', 'old-writer', 'C-j');
    tmux('send-keys', '-t', 'main:f', 'new-writer', 'C-j');
    await waitFor(() => screen('main:w').includes('echo:new-writer'), 'the new writer’s input reaches the guest', 10000);
    assert.ok(!screen('main:f').includes('echo:old-writer'));
    for (const w of ['w', 'v', 'f']) tmux('send-keys', '-t', `main:${w}`, 'C-]');
    for (const w of ['w', 'v', 'f']) await waitFor(() => screen(`main:${w}`).includes('EXIT=0'), `console ${w} to exit`, 10000);
  });

  it('chardev list and chardev status show the running domain; console to an unknown domain or device is one clear line', T, async () => {
    const list = await run(process.execPath, ['--import', 'tsx', CLI, 'list', '--run-dir', runDir]);
    assert.equal(list.code, 0, list.stderr.toString());
    assert.match(list.stdout.toString(), new RegExp(`^Pid\\s+Name\\s+State\\s+Started\\n-+\\n${domain?.pid}\\s+con\\s+running\\s+\\S+\\n$`));
    const json = JSON.parse((await run(process.execPath, ['--import', 'tsx', CLI, 'list', '--json', '--run-dir', runDir])).stdout.toString()) as Array<{
      name: string;
    }>;
    assert.deepEqual(
      json.map((d) => d.name),
      ['con'],
    );
    // status goes through the QMP control socket: live counters and clients.
    openConsole('s', 'con --readonly');
    await waitFor(() => screen('main:s').includes('Escape character'), 'a viewer attached', 10000);
    const st = await run(process.execPath, ['--import', 'tsx', CLI, 'status', '--json', '--run-dir', runDir, 'con']);
    assert.equal(st.code, 0, st.stderr.toString());
    const report = JSON.parse(st.stdout.toString()) as {
      name: string;
      devices: Array<{ alias: string; type: string; filename: string; bytesFromGuest: number; clients: Array<{ kind: string; role: string }> }>;
    };
    assert.equal(report.name, 'con');
    assert.equal(report.devices.length, 1);
    const dev = report.devices[0];
    assert.equal(dev?.alias, 'serial0');
    assert.equal(dev?.type, 'null');
    assert.equal(dev?.filename, 'null');
    assert.ok((dev?.bytesFromGuest ?? 0) >= 'boot-line\n'.length);
    assert.deepEqual(
      dev?.clients.map((c) => [c.kind, c.role]),
      [['console', 'viewer']],
    );
    const table = await run(process.execPath, ['--import', 'tsx', CLI, 'status', '--run-dir', runDir]);
    assert.match(
      table.stdout.toString(),
      /^Domain con: running, pid \d+, since \S+\ncontrol socket \(QMP\): \S+con\.qmp\nDevice\s+Type\s+From guest\s+To guest\s+Dropped\s+Clients\s+Host interface\nserial0\s+null\s+\d+\s+\d+\s+\d+\s+viewer console pid \d+\s+null\n$/,
    );
    tmux('send-keys', '-t', 'main:s', 'C-]');

    const nope = await run(process.execPath, ['--import', 'tsx', CLI, 'console', '--run-dir', runDir, 'nope']);
    assert.equal(nope.code, 1);
    assert.equal(nope.stderr.toString(), "failed to get domain 'nope'\n");
    const noDev = await run(process.execPath, ['--import', 'tsx', CLI, 'console', '--run-dir', runDir, 'con', 'serial9']);
    assert.equal(noDev.code, 1);
    assert.equal(noDev.stderr.toString(), "error: no device 'serial9' in domain con (has: serial0)\n");
  });

  it(
    'a `run --tty` guest has the console’s terminal size (and follows it); ~B sends it a BREAK (SIGINT, per stty sane’s brkint); ~? lists the commands; ~~ is one ~',
    T,
    async () => {
      const ttyRun = path.join(dir, 'ttyrun');
      fs.mkdirSync(ttyRun, { mode: 0o700 });
      const xml = path.join(dir, 'tty.xml');
      fs.writeFileSync(xml, domainXml(`<serial type='null'><target port='0'/><cd:history size='65536'/></serial>`, 'ttycon'));
      const guest = 'trap "echo got-break" INT; echo tty-ready; while :; do read l; echo "line:$l size:$(stty size)"; done';
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', CLI, 'run', '--tty', '--run-dir', ttyRun, '--log-dir', path.join(dir, 'logs'), xml, '--', 'sh', '-c', guest],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
      try {
        await waitFor(() => /console: chardev console ttycon/.test(out), 'the tty domain to start', 15000);
        tmux('new-window', '-d', '-t', 'main', '-n', 't', `${cli(`console --run-dir ${ttyRun} ttycon`)}; echo "EXIT=$?"; sleep 600`);
        await waitFor(() => screen('main:t').includes('tty-ready'), 'attached', 10000);
        tmux('send-keys', '-t', 'main:t', 'one', 'Enter');
        await waitFor(() => /line:one size:30 120/.test(screen('main:t')), `the guest's size is the console's 120x30: ${screen('main:t')}`, 10000);
        tmux('resize-window', '-t', 'main:t', '-x', '100', '-y', '25');
        tmux('send-keys', '-t', 'main:t', 'two', 'Enter');
        await waitFor(() => /line:two size:25 100/.test(screen('main:t')), `the guest follows the window: ${screen('main:t')}`, 10000);
        tmux('send-keys', '-t', 'main:t', '~?');
        await waitFor(() => screen('main:t').includes('~B  send a BREAK'), 'the ~ help', 10000);
        tmux('send-keys', '-t', 'main:t', 'Enter', '~B');
        // The shell runs its trap once its `read` is done.
        tmux('send-keys', '-t', 'main:t', 'Enter');
        await waitFor(() => screen('main:t').includes('got-break'), `the BREAK as SIGINT in the guest: ${screen('main:t')}`, 10000);
        tmux('send-keys', '-t', 'main:t', '~~x', 'Enter');
        await waitFor(() => /line:~x size/.test(screen('main:t')), `~~ as one ~: ${screen('main:t')}`, 10000);
        tmux('send-keys', '-t', 'main:t', '~.');
        await waitFor(() => screen('main:t').includes('EXIT=0'), '~. to leave', 10000);
      } finally {
        child.kill('SIGTERM');
      }
    },
  );

  it('the domain stopping ends the session with a message and gives the terminal back (last: stops the domain)', T, async () => {
    openConsole('z', 'con');
    await waitFor(() => screen('main:z').includes('Escape character'), 'attached', 10000);
    domain?.kill('SIGTERM');
    await waitFor(() => screen('main:z').includes('EXIT='), 'the console to exit', 15000);
    assert.match(screen('main:z'), /\[chardev: the device was stopped\]\n+EXIT=0/);
    await waitFor(() => fs.existsSync(`${dir}/z.after`), 'stty after');
    assert.equal(fs.readFileSync(`${dir}/z.after`, 'utf8'), fs.readFileSync(`${dir}/z.before`, 'utf8'), 'the terminal is restored');
  });
});
