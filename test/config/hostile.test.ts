/**
 * The hostile corpus (test/fixtures/hostile/, written by `npm run corpus`):
 * every document goes through `chardev validate FILE` and must be refused
 * with exit status 1 (2 would be a usage error), exactly one line on stderr
 * naming the file, no stack trace, nothing on stdout, within a time limit,
 * and without anything from outside the document (such as /etc/passwd) in
 * the output.
 *
 * All documents run through the CLI's main() in this process (the same code
 * the binary runs: argument parsing, reading the file, loading, the error
 * line); a sample of them also through the spawned binary, where the exit
 * status and stderr are the real process's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { main } from '../../src/cli/main.ts';
import { loadDomain } from '../../src/config/domain.ts';
import { decodeDocument } from '../../src/config/xml.ts';
import { ConfigError } from '../../src/errors.ts';
import { ROOT } from '../helpers/paths.ts';

const DIR = join(ROOT, 'test', 'fixtures', 'hostile');
const REL_DIR = join('test', 'fixtures', 'hostile');

interface Entry {
  file: string;
  category: string;
  what: string;
  bytes: number;
  expect?: string;
}

const entries = JSON.parse(readFileSync(join(DIR, 'index.json'), 'utf8')) as Entry[];

/** Per document: in this process, and through a spawned binary (which also starts Node and tsx). */
const LIMIT_IN_PROCESS_MS = 10_000;
const LIMIT_SPAWNED_MS = 30_000;
/** A clear line is a short one, whatever the document holds. */
const MAX_LINE = 1024;

/** Lines of a file the XXE documents name; none may appear in any output. */
function secretLines(): string[] {
  const out: string[] = [];
  for (const file of ['/etc/passwd', '/etc/group']) {
    if (!existsSync(file)) continue;
    try {
      for (const line of readFileSync(file, 'utf8').split('\n')) if (line.length >= 8 && line.includes(':')) out.push(line);
    } catch {
      // unreadable here, so unreadable to the CLI too
    }
  }
  return out;
}
const SECRETS = secretLines();

interface Outcome {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut?: boolean;
}

/** What is wrong with an outcome; empty when the document was refused as it should be. */
function problems(entry: Entry, shownAs: string, o: Outcome, limitMs: number): string[] {
  const p: string[] = [];
  if (o.timedOut) p.push(`no answer within ${limitMs} ms`);
  else if (o.ms > limitMs) p.push(`took ${Math.round(o.ms)} ms (limit ${limitMs} ms)`);
  if (o.status !== 1 && o.status !== 2) p.push(`exit status ${String(o.status)}, not 1 (or 2 for usage)`);
  if (o.stdout !== '') p.push(`stdout not empty: ${JSON.stringify(o.stdout.slice(0, 200))}`);
  const lines = o.stderr.split('\n');
  if (lines.length !== 2 || lines[1] !== '' || o.stderr.includes('\r')) {
    p.push(`stderr is not exactly one line: ${JSON.stringify(o.stderr.slice(0, 400))}`);
  }
  const line = lines[0] ?? '';
  if (line.length === 0) p.push('stderr is empty');
  if (!line.startsWith(`${shownAs}:`)) p.push(`the line does not start with the file name: ${JSON.stringify(line.slice(0, 200))}`);
  if (line.length > MAX_LINE) p.push(`the line is ${line.length} characters long`);
  if (/^\s+at\s/m.test(o.stderr) || /\bat .*:\d+:\d+\)?\s*$/m.test(o.stderr)) p.push('stack trace on stderr');
  if (/\b(?:Type|Range|Syntax|Reference|Eval|URI|Aggregate|Internal)?Error: /.test(o.stderr))
    p.push(`an Error: prefix on stderr: ${JSON.stringify(line.slice(0, 200))}`);
  // The CLI prints 'internal error: …' only for an error that is not its own: a crash.
  if (o.stderr.includes('internal error:')) p.push(`not a ConfigError: ${JSON.stringify(line.slice(0, 200))}`);
  if (entry.expect !== undefined && !line.includes(entry.expect)) p.push(`expected ${JSON.stringify(entry.expect)} in: ${JSON.stringify(line.slice(0, 300))}`);
  const all = o.stdout + o.stderr;
  const leaked = SECRETS.find((s) => all.includes(s));
  if (leaked !== undefined || /root:[^:\n]*:0:0:/.test(all)) p.push('a line of /etc/passwd (or /etc/group) is in the output');
  return p;
}

/** The loader itself: only a ConfigError, and a document with a DTD or entity declaration refused as such. */
function loaderProblems(entry: Entry, bytes: Buffer): string[] {
  let text: string | undefined;
  let caught: unknown;
  try {
    text = decodeDocument(bytes, entry.file);
    loadDomain(text, { file: entry.file });
  } catch (e) {
    caught = e;
  }
  if (caught === undefined) return ['the loader accepted it'];
  if (!(caught instanceof ConfigError)) return [`the loader threw ${caught instanceof Error ? caught.name : typeof caught}, not a ConfigError`];
  if (text !== undefined && /<!(DOCTYPE|ENTITY)\b/.test(text) && caught.code !== 'ERR_XML_FORBIDDEN') {
    return [`a document with a DTD or entity declaration was refused with ${caught.code}, not ERR_XML_FORBIDDEN`];
  }
  return [];
}

async function inProcess(path: string): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const t0 = performance.now();
  const status = await main(['validate', path], { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  return { status, stdout, stderr, ms: performance.now() - t0 };
}

function spawned(relPath: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'chardev.js'), 'validate', relPath], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, LIMIT_SPAWNED_MS);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, ms: performance.now() - t0, timedOut });
    });
  });
}

/** The documents that also go through the spawned binary: per category the first, the last and the largest. */
function spawnSample(): Entry[] {
  const chosen = new Set<Entry>();
  for (const category of new Set(entries.map((e) => e.category))) {
    const of = entries.filter((e) => e.category === category);
    const largest = of.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    for (const e of [of[0], of[of.length - 1], largest]) if (e) chosen.add(e);
  }
  return [...chosen];
}

const failures: string[] = [];
const timings: Array<[string, number]> = [];
let spawnedCount = 0;

test('the index lists exactly the documents in the directory, at least 200', () => {
  const files = readdirSync(DIR)
    .filter((f) => f.endsWith('.xml'))
    .sort();
  assert.deepEqual(entries.map((e) => e.file).sort(), files);
  assert.ok(files.length >= 200, `only ${files.length} documents`);
  for (const e of entries)
    assert.equal(readFileSync(join(DIR, e.file)).length, e.bytes, `${e.file}: size differs from index.json (regenerate with npm run corpus)`);
});

for (const category of [...new Set(entries.map((e) => e.category))]) {
  const of = entries.filter((e) => e.category === category);
  test(`${category}: ${of.length} documents refused through main(), one line each`, { timeout: of.length * LIMIT_IN_PROCESS_MS }, async () => {
    const bad: string[] = [];
    for (const entry of of) {
      const path = join(DIR, entry.file);
      const outcome = await inProcess(path);
      timings.push([entry.file, outcome.ms]);
      const p = [...problems(entry, path, outcome, LIMIT_IN_PROCESS_MS), ...loaderProblems(entry, readFileSync(path))];
      if (p.length > 0) bad.push(`${entry.file} (${entry.what}): ${p.join('; ')}`);
    }
    failures.push(...bad);
    assert.deepEqual(bad, []);
  });
}

test('a sample through the spawned binary: the real exit status and stderr', { timeout: 10 * 60_000 }, async (t) => {
  const sample = spawnSample();
  assert.ok(sample.length >= 20, `sample of ${sample.length}`);
  const bad: string[] = [];
  const queue = [...sample];
  const worker = async (): Promise<void> => {
    for (let entry = queue.shift(); entry; entry = queue.shift()) {
      const rel = join(REL_DIR, entry.file);
      const outcome = await spawned(rel);
      const p = problems(entry, rel, outcome, LIMIT_SPAWNED_MS);
      if (p.length > 0) bad.push(`${entry.file} (${entry.what}): ${p.join('; ')}`);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  spawnedCount = sample.length;
  t.diagnostic(`${sample.length} documents through bin/chardev.js`);
  failures.push(...bad);
  assert.deepEqual(bad, []);
});

test('hostile corpus summary', (t) => {
  assert.deepEqual(failures, []);
  assert.equal(timings.length, entries.length);
  const slowest = [...timings].sort((a, b) => b[1] - a[1]).slice(0, 3);
  const total = timings.reduce((s, [, ms]) => s + ms, 0);
  t.diagnostic(`hostile corpus: ${entries.length} documents, all refused with one line`);
  t.diagnostic(
    `${spawnedCount} also through the spawned binary; ${(total / 1000).toFixed(1)} s in all; slowest ${slowest.map(([f, ms]) => `${f} ${Math.round(ms)} ms`).join(', ')}`,
  );
});
