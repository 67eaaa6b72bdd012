/**
 * `npm run bench [-- OPTIONS]`: chardev and socat side by side on this machine, one run,
 * the same work on both sides. Prints a table of figures, ratios, targets and met / not
 * met (computed by the bench, verdict.ts), what the floors say about a target not met, the
 * versions compared and the machine with its load before and after; `--json` prints the
 * same as one JSON document (report.ts).
 *
 *   --quick          smaller sizes, one repetition (about a minute)
 *   --json           machine-readable output on stdout (progress still goes to stderr)
 *   --only IDS       comma-separated subset of the registered measurements (--help lists them)
 *   --reps N         repetitions per figure (default 3, --quick 1); ratios are per repetition, then the median
 *   --profile DIR    run every chardev host process under `node --cpu-prof`, profiles in DIR
 *   --write-docs     after the run, write docs/performance.md and docs/performance.json and
 *                    rewrite the README's Performance summary between its markers (docs.ts)
 *   --docs-from FILE render the docs from a saved `--json` report instead of running
 *
 * How each figure is measured is described in scripts/bench/measurements.ts; the guest,
 * the readers, the clients and the Python floors (stdlib only) are in
 * scripts/bench/peers.ts, their C twins in scripts/bench/c/relay.c (built at the start with
 * `cc -O2`, scripts/bench/compiled.ts; without a compiler those rows say so); the chardev
 * side runs in a process of its own (scripts/bench/host.ts).
 * Measurements are registered in scripts/bench/registry.ts's order (below); a module of rows
 * of its own registers itself and is imported here.
 *
 * The guest is never paced: it writes a fixed pseudo-random stream as fast as it can (the
 * fan-out's stated 5 MB/s aside), and every bulk figure is checked — the reader's byte count
 * and SHA-256 against the generator's own. A side that missed a byte gives no figure: the run
 * says `FAILED <row>, BYTES LOST` with bytes expected and got, and exits 1.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performancePage, readmeSummary, replaceBetweenMarkers, terminalText } from './bench/docs.ts';
import { GUEST_PY, PINGPONG_PY, READER_PY, RELAY_PY } from './bench/peers.ts';
import { ownGroup, watchOtherCpu, type OtherCpu } from './bench/load.ts';
import { C_RELAY_SOURCE, buildCFloor, compilerVersions } from './bench/compiled.ts';
import { BenchError, cleanup, cleanupSync, commandOutput, fdLimits, makeScratch, resolvePython, startedGroups } from './bench/procs.ts';
import { LostBytesError, fanOut, fileWrite, idleDevices, inputThroughput, latency, throughput, type Ctx, type Row } from './bench/measurements.ts';
import { register, registered } from './bench/registry.ts';
import type { BenchReport, Machine, RunError, Versions } from './bench/report.ts';
import { startupFigures } from './bench/startup.ts';
import { daemonFigures } from './bench/daemon.ts';

register({
  id: 'bulk-tcp',
  about: 'guest → client through a TCP server; CPU per GiB; the same with <log> and <cd:history>; floors',
  run: (ctx) => throughput(ctx, 'tcp'),
});
register({ id: 'bulk-unix', about: 'guest → client through a UNIX server; CPU per GiB; floors', run: (ctx) => throughput(ctx, 'unix') });
register({ id: 'input-tcp', about: 'client → guest through a TCP server; floors', run: (ctx) => inputThroughput(ctx, 'tcp') });
register({ id: 'input-unix', about: 'client → guest through a UNIX server; floors', run: (ctx) => inputThroughput(ctx, 'unix') });
register({ id: 'latency', about: '1-byte round trips through an echo guest', run: (ctx) => latency(ctx) });
register({ id: 'pty', about: 'guest → pty reader', run: (ctx) => throughput(ctx, 'pty') });
register({ id: 'idle', about: '10,000 idle devices: memory and CPU', run: (ctx) => idleDevices(ctx, fdLimits().hard) });
register({ id: 'fanout', about: '100 viewers, one stalled: unthrottled and at 5 MB/s', run: (ctx) => fanOut(ctx) });
register({ id: 'file', about: 'file backend and <log> tee vs cat > file; floors', run: (ctx) => fileWrite(ctx) });
register({ id: 'startup', about: 'chardev validate vs node -e 0; idle chardev run RSS', run: (ctx) => startupFigures(ctx) });
register({
  id: 'daemon',
  about: '100 domains × 4 devices in one daemon: memory, adding a domain, idle CPU, restart under load',
  run: (ctx) => daemonFigures(ctx),
});

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PAGE = 'docs/performance.md';
const PAGE_JSON = 'docs/performance.json';
const NOTES = 'docs/performance-notes.md';

interface Options {
  quick: boolean;
  json: boolean;
  only: Set<string>;
  reps: number | undefined;
  profileDir: string | undefined;
  writeDocs: boolean;
  docsFrom: string | undefined;
}

function usage(): string {
  const ids = registered().map((m) => `    ${m.id.padEnd(10)} ${m.about}`);
  return `usage: npm run bench -- [--quick] [--json] [--only IDS] [--reps N] [--profile DIR] [--write-docs] [--docs-from FILE]\n  measurements (--only):\n${ids.join('\n')}\n`;
}

function parseArgs(argv: readonly string[]): Options {
  const all = registered().map((m) => m.id);
  const o: Options = { quick: false, json: false, only: new Set(all), reps: undefined, profileDir: undefined, writeDocs: false, docsFrom: undefined };
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
      const ids = value()
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
      for (const id of ids) if (!all.includes(id)) throw new BenchError(`unknown measurement '${id}' (known: ${all.join(', ')})`);
      o.only = new Set(ids);
    } else if (a === '--reps') {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1 || n > 20) throw new BenchError('--reps takes an integer from 1 to 20');
      o.reps = n;
    } else if (a === '--profile') o.profileDir = path.resolve(value());
    else if (a === '--write-docs') o.writeDocs = true;
    else if (a === '--docs-from') o.docsFrom = path.resolve(value());
    else if (a === '--help' || a === '-h') {
      process.stdout.write(usage());
      process.exit(0);
    } else throw new BenchError(`unknown option '${a}'\n${usage()}`);
  }
  // The generated docs are one whole run's: a subset would silently drop rows from them.
  if (o.writeDocs && o.only.size !== all.length) throw new BenchError('--write-docs takes a whole run; leave out --only');
  return o;
}

const load = (): number[] => os.loadavg().map((x) => Math.round(x * 100) / 100);

function machine(loadBefore: readonly number[], loadAfter: readonly number[], otherCpu: OtherCpu): Machine {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    loadBefore,
    loadAfter,
    openFilesLimit: fdLimits(),
    otherCpu,
  };
}

/** The commit measured; `+dirty` if the tree differs from it (a figure from uncommitted code says so). */
function commitOf(): string {
  const head = commandOutput('git', ['-C', ROOT, 'rev-parse', '--short=10', 'HEAD'])?.trim();
  if (head === undefined || head === '') return 'unknown commit';
  const dirty = (commandOutput('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no']) ?? '').trim() !== '';
  return `${head}${dirty ? '+dirty' : ''}`;
}

/** docs/performance.md, docs/performance.json and the README's summary, all from one report. */
function writeDocs(report: BenchReport, log: (s: string) => void): void {
  const notesFile = path.join(ROOT, NOTES);
  const notes = fs.existsSync(notesFile) ? fs.readFileSync(notesFile, 'utf8') : '';
  fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, PAGE), performancePage(report, notes));
  fs.writeFileSync(path.join(ROOT, PAGE_JSON), `${JSON.stringify(report, null, 2)}\n`);
  const readmeFile = path.join(ROOT, 'README.md');
  const readme = fs.readFileSync(readmeFile, 'utf8');
  fs.writeFileSync(readmeFile, replaceBetweenMarkers(readme, readmeSummary(report, PAGE)));
  log(`wrote ${PAGE}, ${PAGE_JSON} and the README's Performance summary`);
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const log = (s: string): void => void process.stderr.write(`bench: ${s}\n`);

  if (opts.docsFrom !== undefined) {
    const report = JSON.parse(fs.readFileSync(opts.docsFrom, 'utf8')) as BenchReport;
    writeDocs(report, log);
    return 0;
  }

  // The peer must be there: the figures are ratios to it, measured in the same run.
  const socatV = commandOutput('socat', ['-V']);
  if (socatV === undefined) {
    process.stderr.write(
      'bench: socat is not installed; the benchmark compares chardev with socat in the same run.\n  Install it (Debian: apt-get install socat) and run again.\n',
    );
    return 1;
  }
  const python = resolvePython();
  if (python === undefined) {
    process.stderr.write(
      'bench: python3 is not installed; the readers and the ping-pong client are Python (stdlib only).\n  Install it (Debian: apt-get install python3) and run again.\n',
    );
    return 1;
  }
  if (opts.profileDir !== undefined) fs.mkdirSync(opts.profileDir, { recursive: true });

  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version?: string };
  const versions: Versions = {
    chardev: pkg.version ?? 'unknown',
    commit: commitOf(),
    socat: /socat version \S+/.exec(socatV)?.[0].replace('socat version ', '') ?? (socatV.split('\n')[0] ?? '').trim(),
    node: process.version,
    python: (commandOutput(python, ['--version']) ?? '').trim().replace(/^Python /, ''),
  };
  const loadBefore = load();
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');

  const scripts = makeScratch('chardev-bench-', true);
  const readerPy = path.join(scripts, 'reader.py');
  const pingPy = path.join(scripts, 'pingpong.py');
  const guestPy = path.join(scripts, 'guest.py');
  const relayPy = path.join(scripts, 'relay.py');
  fs.writeFileSync(readerPy, READER_PY);
  fs.writeFileSync(pingPy, PINGPONG_PY);
  fs.writeFileSync(guestPy, GUEST_PY);
  fs.writeFileSync(relayPy, RELAY_PY);
  // The C floors are built here, before any clock; without a compiler their rows say so.
  const cFloor = buildCFloor(path.join(ROOT, C_RELAY_SOURCE), scripts);
  if ('skipped' in cFloor) log(`C floors skipped: ${cFloor.skipped}`);
  const versionsWithCc: Versions = { ...versions, ...compilerVersions(cFloor) };

  const ctx: Ctx = {
    quick: opts.quick,
    reps: opts.reps ?? (opts.quick ? 1 : 3),
    python,
    readerPy,
    pingPy,
    guestPy,
    relayPy,
    cFloor,
    profileDir: opts.profileDir,
    log,
  };
  log(
    `${opts.quick ? 'quick' : 'full'} run, ${ctx.reps} repetition${ctx.reps === 1 ? '' : 's'}; chardev ${versions.chardev} (${versions.commit}), socat ${versions.socat}, Node ${versions.node}, C floors: ${'relay' in cFloor ? cFloor.compiler : `none (${cFloor.skipped})`}; ${os.cpus().length} cores, load ${loadBefore.join(' ')}`,
  );

  const group = ownGroup();
  const others = watchOtherCpu((pgrp) => pgrp === group || startedGroups.has(pgrp));
  const started = performance.now();
  const rows: Row[] = [];
  const errors: RunError[] = [];
  for (const m of registered()) {
    if (!opts.only.has(m.id)) continue;
    const t0 = performance.now();
    try {
      rows.push(...(await m.run(ctx)));
      log(`${m.id} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      const lostBytes = e instanceof LostBytesError;
      // A reader that missed a byte is no figure: said at once, and again under the table.
      log(lostBytes ? `${m.id} FAILED, BYTES LOST: ${message}` : `${m.id} failed: ${message}`);
      errors.push({ id: m.id, error: message, lostBytes });
    } finally {
      // Whatever a measurement left running or on disk goes before the next one starts.
      await cleanup();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const command = ['npm run bench --', ...process.argv.slice(2).filter((a) => a !== '--json' && a !== '--write-docs')].join(' ').replace(/ --$/, '');
  const report: BenchReport = {
    mode: opts.quick ? 'quick' : 'full',
    reps: ctx.reps,
    date,
    command,
    seconds,
    versions: versionsWithCc,
    machine: machine(loadBefore, load(), others.stop()),
    rows,
    errors,
  };

  process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : terminalText(report));
  if (opts.writeDocs) writeDocs(report, log);
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
