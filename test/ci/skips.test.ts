/**
 * CI cannot skip silently: under CI=1 a test that needs something missing
 * fails instead of skipping; elsewhere it skips with its reason, and `npm test`'s summary
 * (scripts/test-summary.sh) lists every skipped test and skipped part with why.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-ci-'));
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A test file like the real ones: one test that needs something this machine lacks, one that needs nothing. */
const fixture = path.join(dir, 'needs.test.ts');
fs.writeFileSync(
  fixture,
  `import { it } from 'node:test';
import { needs, required } from ${JSON.stringify(path.join(ROOT, 'test', 'helpers', 'ci.ts'))};
const missing = 'the frobnicator is not installed';
it('frobnicates', needs(missing), () => { required(missing); });
it('needs nothing', needs(undefined), () => { required(undefined); });
// A test that reports part of itself as skipped, as the conformance test does.
process.stdout.write('  skipped: case-7.args: nothing to compare it with\\n');
`,
);

function runFixture(ci: boolean): { status: number | null; out: string } {
  const env = { ...process.env };
  delete env['CI'];
  delete env['NODE_TEST_CONTEXT']; // a run of its own, not a subtest of this one
  if (ci) env['CI'] = '1';
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', fixture], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

function summary(tap: string): string {
  const file = path.join(dir, `tap-${Math.random().toString(36).slice(2)}.txt`);
  fs.writeFileSync(file, tap);
  const r = spawnSync('sh', [path.join(ROOT, 'scripts', 'test-summary.sh'), file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test('outside CI a test that needs what is missing skips, and the summary says which and why', () => {
  const r = runFixture(false);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /# SKIP the frobnicator is not installed/);
  const s = summary(r.out);
  assert.match(s, /^# skipped 1$/m);
  assert.match(s, /^# skipped: 1 test, 1 part of tests$/m);
  assert.match(s, /^# {3}test: frobnicates \(the frobnicator is not installed\)$/m);
  assert.match(s, /^# {3}part: case-7\.args: nothing to compare it with$/m);
});

test('under CI=1 the same test runs and fails, naming what CI must provide', () => {
  const r = runFixture(true);
  assert.notEqual(r.status, 0, 'the run must fail');
  assert.doesNotMatch(r.out, /# SKIP/);
  assert.match(r.out, /CI must provide this \(CI is set\): the frobnicator is not installed/);
  assert.match(summary(r.out), /^# fail 1$/m);
});

test('.ci/run exports CI=1 before it runs the suite, and npm test ends with the skip summary', () => {
  const ci = fs.readFileSync(path.join(ROOT, '.ci', 'run'), 'utf8');
  const exported = ci.search(/^export CI=1$/m);
  const firstTest = ci.search(/npm test/);
  assert.ok(exported >= 0, '.ci/run exports CI=1');
  assert.ok(exported < firstTest, 'before npm test');
  assert.match(fs.readFileSync(path.join(ROOT, 'scripts', 'test.sh'), 'utf8'), /sh scripts\/test-summary\.sh "\$tmp\/light" "\$tmp\/heavy" "\$tmp\/soak"/);
});
