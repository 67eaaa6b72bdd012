/**
 * The module graph of src/ points one way and has no cycles (scripts/check-deps.mjs says
 * which layers there are). The checker is checked too: on a small tree with one upward
 * import and one cycle it must name both and fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';

const SCRIPT = path.join(ROOT, 'scripts', 'check-deps.mjs');

function check(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('src/ has no upward import and no import cycle', () => {
  const r = check();
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /\d+ modules, 0 upward imports, 0 cycles/);
});

test('the checker names an upward import and a cycle, and fails', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-deps-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const put = (file: string, text: string): void => {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), text);
  };
  put('config/a.ts', "import type { Thing } from '../core/b.ts';\nexport type A = Thing;\n");
  put('core/b.ts', "export interface Thing { n: number }\nimport './c.ts';\n");
  put('core/c.ts', "export {} from './d.ts';\n");
  put('core/d.ts', "export const lazy = () => import('./c.ts');\n");
  put('cli/main.ts', "import { lazy } from '../core/d.ts';\nvoid lazy;\n");
  const r = check('--root', dir);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /upward import: .*config\/a\.ts \(config\) imports .*core\/b\.ts \(core\)/);
  assert.match(r.out, /import cycle: .*core\/c\.ts ↔ .*core\/d\.ts/);
  assert.match(r.out, /5 modules, 1 upward imports, 1 cycles/);
});
