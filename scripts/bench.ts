/**
 * `npm run bench [-- OPTIONS]`: chardev and socat side by side on this machine, one run,
 * the same work on both sides (SPEC §8, issue 7). Prints a table of figures and ratios,
 * the versions compared and the machine; `--json` prints the same as one JSON document.
 *
 *   --quick        smaller sizes, one repetition (under a minute)
 *   --json         machine-readable output on stdout (progress still goes to stderr)
 *   --only IDS     comma-separated subset: bulk-tcp, bulk-unix, latency, pty, idle, fanout, file
 *   --reps N       repetitions per figure (default 3, --quick 1); ratios are per repetition, then the median
 *   --profile DIR  run every chardev host process under `node --cpu-prof`, profiles in DIR
 *
 * How each figure is measured is described in scripts/bench/measurements.ts; the guest,
 * the readers and the ping-pong client (Python, stdlib only) are in scripts/bench/peers.ts;
 * the chardev side runs in a process of its own (scripts/bench/host.ts).
 *
 * The guest is never paced (issue 14): it writes a fixed pseudo-random stream as fast as it
 * can, and every bulk figure is checked — the reader's byte count and SHA-256 against the
 * generator's own. A side that missed a byte gives no figure: the run says
 * `FAILED <row>, BYTES LOST` with bytes expected and got, and exits 1.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GUEST_PY, PINGPONG_PY, READER_PY } from './bench/peers.ts';
import { BenchError, cleanup, cleanupSync, commandOutput, fdLimits, makeScratch, resolvePython } from './bench/procs.ts';
import { LostBytesError, fanOut, fileWrite, idleDevices, latency, throughput, type Ctx, type Row } from './bench/measurements.ts';
import { startupFigures } from './bench/startup.ts';
import { daemonFigures } from './bench/daemon.ts';

const ALL = ['bulk-tcp', 'bulk-unix', 'latency', 'pty', 'idle', 'fanout', 'file', 'startup', 'daemon'] as const;
type Id = (typeof ALL)[number];

interface Options {
  quick: boolean;
  json: boolean;
  only: Set<Id>;
  reps: number | undefined;
  profileDir: string | undefined;
}

function usage(): string {
  return `usage: npm run bench -- [--quick] [--json] [--only ${ALL.join(',')}] [--reps N] [--profile DIR]\n`;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = { quick: false, json: false, only: new Set(ALL), reps: undefined, profileDir: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new BenchError(`${a} needs a value\n${usage()}`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--json') o.json = true;
    else if (a === '--only') {
      const ids = value().split(',').map((s) => s.trim()).filter((s) => s !== '');
      for (const id of ids) if (!(ALL as readonly string[]).includes(id)) throw new BenchError(`unknown figure '${id}' (known: ${ALL.join(', ')})`);
      o.only = new Set(ids as Id[]);
    } else if (a === '--reps') {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1 || n > 20) throw new BenchError('--reps takes an integer from 1 to 20');
      o.reps = n;
    } else if (a === '--profile') o.profileDir = path.resolve(value());
    else if (a === '--help' || a === '-h') {
      process.stdout.write(usage());
      process.exit(0);
    } else throw new BenchError(`unknown option '${a}'\n${usage()}`);
  }
  return o;
}

interface Versions {
  chardev: string;
  socat: string;
  node: string;
  python: string;
}

interface Machine {
  cores: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  loadAverage: number[];
  openFilesLimit: { soft: number | null; hard: number | null };
}

function machine(): Machine {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
    openFilesLimit: fdLimits(),
  };
}

function fmt(x: number | null, unit: string): string {
  if (x === null || !Number.isFinite(x)) return '—';
  const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
  return `${x.toFixed(digits)} ${unit}`;
}

function table(rows: readonly Row[]): string {
  const head = ['figure', 'chardev', 'socat / peer', 'ratio', 'target', 'met?'];
  const body = rows.map((r) => [
    r.figure,
    fmt(r.chardev, r.unit),
    r.peer === null ? '—' : `${fmt(r.peer, r.unit)} (${r.peerName})`,
    r.ratio === null || !Number.isFinite(r.ratio) ? '—' : `${r.ratio.toFixed(2)}×`,
    r.target,
    r.met === null ? '—' : r.met ? 'yes' : 'NO',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: readonly string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const log = (s: string): void => void process.stderr.write(`bench: ${s}\n`);

  // The peer must be there: the figures are ratios to it, measured in the same run.
  const socatV = commandOutput('socat', ['-V']);
  if (socatV === undefined) {
    process.stderr.write('bench: socat is not installed; the benchmark compares chardev with socat in the same run.\n  Install it (Debian: apt-get install socat) and run again.\n');
    return 1;
  }
  const python = resolvePython();
  if (python === undefined) {
    process.stderr.write('bench: python3 is not installed; the readers and the ping-pong client are Python (stdlib only).\n  Install it (Debian: apt-get install python3) and run again.\n');
    return 1;
  }
  if (opts.profileDir !== undefined) fs.mkdirSync(opts.profileDir, { recursive: true });

  const root = fileURLToPath(new URL('..', import.meta.url));
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: string };
  const versions: Versions = {
    chardev: pkg.version ?? 'unknown',
    socat: /socat version \S+/.exec(socatV)?.[0].replace('socat version ', '') ?? (socatV.split('\n')[0] ?? '').trim(),
    node: process.version,
    python: (commandOutput(python, ['--version']) ?? '').trim().replace(/^Python /, ''),
  };
  const mach = machine();

  const scripts = makeScratch('chardev-bench-', true);
  const readerPy = path.join(scripts, 'reader.py');
  const pingPy = path.join(scripts, 'pingpong.py');
  const guestPy = path.join(scripts, 'guest.py');
  fs.writeFileSync(readerPy, READER_PY);
  fs.writeFileSync(pingPy, PINGPONG_PY);
  fs.writeFileSync(guestPy, GUEST_PY);

  const ctx: Ctx = { quick: opts.quick, reps: opts.reps ?? (opts.quick ? 1 : 3), python, readerPy, pingPy, guestPy, profileDir: opts.profileDir, log };
  log(`${opts.quick ? 'quick' : 'full'} run, ${ctx.reps} repetition${ctx.reps === 1 ? '' : 's'}; chardev ${versions.chardev}, socat ${versions.socat}, Node ${versions.node}; ${mach.cores} cores, load ${mach.loadAverage.join(' ')}`);

  const started = performance.now();
  const rows: Row[] = [];
  const errors: Array<{ id: Id; error: string; lostBytes: boolean }> = [];
  const steps: Array<[Id, () => Promise<Row | Row[]>]> = [
    ['bulk-tcp', () => throughput(ctx, 'tcp')],
    ['bulk-unix', () => throughput(ctx, 'unix')],
    ['latency', () => latency(ctx)],
    ['pty', () => throughput(ctx, 'pty')],
    ['idle', () => idleDevices(ctx, mach.openFilesLimit.hard)],
    ['fanout', () => fanOut(ctx)],
    ['file', () => fileWrite(ctx)],
    ['startup', () => startupFigures(ctx)],
    ['daemon', () => daemonFigures(ctx)],
  ];
  for (const [id, run] of steps) {
    if (!opts.only.has(id)) continue;
    const t0 = performance.now();
    try {
      const r = await run();
      rows.push(...(Array.isArray(r) ? r : [r]));
      log(`${id} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      const lostBytes = e instanceof LostBytesError;
      // A reader that missed a byte is no figure: said at once, and again under the table.
      log(lostBytes ? `${id} FAILED, BYTES LOST: ${message}` : `${id} failed: ${message}`);
      errors.push({ id, error: message, lostBytes });
    } finally {
      // Whatever a measurement left running or on disk goes before the next one starts.
      await cleanup();
    }
  }
  const seconds = (performance.now() - started) / 1000;

  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ mode: opts.quick ? 'quick' : 'full', reps: ctx.reps, seconds, versions, machine: mach, rows, errors }, null, 2)}\n`);
  } else {
    const out: string[] = [];
    out.push(table(rows));
    for (const r of rows) if (r.note !== undefined) out.push(`note (${r.id}): ${r.note}`);
    for (const e of errors) out.push(e.lostBytes ? `FAILED ${e.id}, BYTES LOST (no figure): ${e.error}` : `FAILED ${e.id}: ${e.error}`);
    out.push('');
    out.push(`versions: chardev ${versions.chardev}, socat ${versions.socat} (peer), Node ${versions.node}, Python ${versions.python} (readers and clients)`);
    out.push(`machine: ${mach.cores} cores, ${mach.cpu}, ${mach.memoryGiB} GiB, ${mach.kernel}, load average at start ${mach.loadAverage.join(' ')}`);
    out.push(`run: ${opts.quick ? 'quick' : 'full'}, ${ctx.reps} repetition${ctx.reps === 1 ? '' : 's'} (ratios per repetition, then the median), ${seconds.toFixed(0)} s`);
    process.stdout.write(`${out.join('\n')}\n`);
  }
  return errors.length > 0 ? 1 : 0;
}

process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    void cleanup({ all: true }).finally(() => process.exit(130));
  });
}

main().then(
  (code) => cleanup({ all: true }).then(() => process.exit(code)),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    void cleanup({ all: true }).then(() => process.exit(e instanceof BenchError ? 2 : 1));
  },
);
