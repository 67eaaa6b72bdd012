/**
 * Start-up and idle memory of the `chardev` command as users run it (bin/chardev.js →
 * dist/), in the same run as the other figures:
 *
 * - `chardev validate FILE` wall time against `node -e 0` on the same machine: both are run
 *   alternately (so a busy moment hits both), RUNS times each, and the median ratio is the
 *   figure; target ≤ 2×.
 * - idle RSS of `chardev run` with the embedded default domain (pty console, serial log,
 *   domain log, owner-only socket, browser console) and `/bin/sh` as the guest shell, read
 *   from /proc after it has settled; target ≤ 75 MB. The peer column is an idle `node`
 *   (a timer only), the floor any Node daemon starts from.
 *
 * dist/ is rebuilt first if src/ is newer (bin/chardev.js would otherwise run the sources
 * through tsx, which is what a developer's checkout does, not what users run).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { judged, type Ctx, type Row } from './measurements.ts';
import { atMostRatio, atMostValue, median } from './verdict.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'chardev.js');
const MB = 1e6;
const VALIDATE_TARGET = 2;
const IDLE_RSS_TARGET_MB = 75;
/** How long the idle daemon is left alone before its RSS is read. */
const SETTLE_MS = 2000;

function newestMtime(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) t = Math.max(t, fs.statSync(path.join(e.parentPath, e.name)).mtimeMs);
  }
  return t;
}

/** Build dist/ when it is missing or older than src/, so bin/chardev.js runs the compiled CLI. */
export function ensureBuilt(log: (s: string) => void, row: string): void {
  const built = path.join(ROOT, 'dist', 'cli', 'main.js');
  if (fs.existsSync(built) && newestMtime(path.join(ROOT, 'src')) <= fs.statSync(built).mtimeMs) return;
  log(`${row}: dist/ is older than src/; building it first`);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`npm run build failed: ${r.stderr.toString().trim()}`);
}

/** Wall time of one run, in seconds; the command must succeed. */
function timed(args: readonly string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const s = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${String(r.status)}: ${r.stderr.toString().trim()}`);
  return s;
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Start a process, wait until its stdout matches `ready` (or it is just up), settle, read its RSS, stop it. */
async function idleRss(args: readonly string[], env: NodeJS.ProcessEnv, ready: RegExp | undefined): Promise<number> {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  try {
    const deadline = Date.now() + 20_000;
    while (ready !== undefined && !ready.test(out)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`did not start: ${err.trim() || out.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    return rssBytes(child.pid as number);
  } finally {
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
}

const DOMAIN = `<domain type='kvm'>
  <name>startup</name>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/><protocol type='telnet'/><target port='1'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
`;

/** The start-up and idle-memory rows. */
export async function startupFigures(ctx: Ctx): Promise<Row[]> {
  ensureBuilt(ctx.log, 'startup');
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-bench-startup-'));
  try {
    const file = path.join(scratch, 'domain.xml');
    fs.writeFileSync(file, DOMAIN);
    const runs = ctx.quick ? 10 : 20;
    // One warm-up of each (page cache), then alternating pairs.
    timed(['-e', '0']);
    timed([BIN, 'validate', file]);
    const node: number[] = [];
    const validate: number[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < runs; i++) {
      // Which goes first alternates, so neither always runs right after the other.
      let n: number;
      let v: number;
      if (i % 2 === 0) {
        n = timed(['-e', '0']);
        v = timed([BIN, 'validate', file]);
      } else {
        v = timed([BIN, 'validate', file]);
        n = timed(['-e', '0']);
      }
      node.push(n);
      validate.push(v);
      ratios.push(v / n);
    }
    const ratio = median(ratios);

    const runDir = path.join(scratch, 'run');
    fs.mkdirSync(runDir, { mode: 0o700 });
    const env = { ...process.env, SHELL: '/bin/sh', NOTIFY_SOCKET: '' };
    const daemon = await idleRss([BIN, 'run', '--run-dir', runDir, '--log-dir', path.join(scratch, 'logs')], env, /guest is \/bin\/sh/);
    const bare = await idleRss(['-e', 'setInterval(() => {}, 1000)'], env, undefined);
    return [
      judged({
        id: 'startup-validate',
        figure: '`chardev validate FILE` wall time (median of runs)',
        unit: 's',
        chardev: median(validate),
        peer: median(node),
        peerName: 'node -e 0',
        ratio,
        goal: atMostRatio(VALIDATE_TARGET),
        details: { runs, validateSeconds: validate, nodeSeconds: node, ratios },
      }),
      judged({
        id: 'startup-rss',
        figure: 'idle `chardev run` RSS, default domain, /bin/sh guest',
        unit: 'MB',
        chardev: daemon / MB,
        peer: bare / MB,
        peerName: 'idle node',
        ratio: daemon / bare,
        goal: atMostValue(IDLE_RSS_TARGET_MB),
        details: { rssBytes: daemon, idleNodeRssBytes: bare, settleMs: SETTLE_MS },
      }),
    ];
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}
