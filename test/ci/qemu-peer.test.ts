/**
 * The table in docs/conformance.md of QEMU's test-char.c scenarios stays true: every
 * scenario the reference catalogues (../shared/reference/qemu-chardev.md §6) has a row, and
 * every row that names a counterpart file has a test there whose name carries the id.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, SHARED } from '../helpers/paths.ts';

/** `/char/socket/server/mainloop/{tcp,unix}` → `/char/socket/server/mainloop`; `…` and variants dropped. */
const base = (id: string): string => id.replace(/\/(\{tcp,unix\}|…)$/, '').replace(/ \(QEMU 2\.x\)$/, '');

interface Row {
  readonly id: string;
  readonly file: string | undefined;
}

function readmeRows(): Row[] {
  const readme = fs.readFileSync(path.join(ROOT, 'docs', 'conformance.md'), 'utf8');
  const start = readme.indexOf("## QEMU's chardev tests as a peer");
  assert.ok(start >= 0, 'docs/conformance.md has the section');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const rows: Row[] = [];
  for (const line of section.split('\n')) {
    const m = /^\| `(\/char\/[^`]+)`[^|]*\| (?:`([^`]+)`|—) \|/.exec(line);
    if (m) rows.push({ id: m[1] as string, file: m[2] });
  }
  return rows;
}

test('every test-char.c scenario of the catalogue has a row in the table in docs/conformance.md', () => {
  const catalogue = fs.readFileSync(path.join(SHARED, 'reference', 'qemu-chardev.md'), 'utf8');
  const section = catalogue.slice(catalogue.indexOf('## 6. Catalogue'), catalogue.indexOf('## 7.'));
  const ids = new Set([...section.matchAll(/`(\/char\/[^`]+)`/g)].map((m) => base(m[1] as string)));
  assert.ok(ids.size >= 25, `the catalogue lists ${ids.size} ids`);
  const rows = new Set(readmeRows().map((r) => base(r.id)));
  assert.deepEqual(
    [...ids].filter((id) => !rows.has(id)),
    [],
    'ids without a row',
  );
});

test('every row that names a counterpart has a test there carrying the id (with its /tcp and /unix variants)', () => {
  const rows = readmeRows().filter((r) => r.file !== undefined);
  assert.ok(rows.length >= 20, `${rows.length} rows with a counterpart`);
  const missing: string[] = [];
  for (const { id, file } of rows) {
    const text = fs.readFileSync(path.join(ROOT, file as string), 'utf8');
    const needle = id.endsWith('/{tcp,unix}') ? `${base(id)}/\${kind}` : base(id);
    // In a test's name: it('… (ID)', it(`… (ID/${kind})`, … (the name may start on the next line).
    const names = [...text.matchAll(/\b(?:it|test)\(\s*(?:'([^']*)'|"([^"]*)"|`([^`]*)`)/g)].map((m) => m[1] ?? m[2] ?? m[3] ?? '');
    const inName = names.some((n) => n.includes(needle));
    if (!inName) missing.push(`${id} in ${file as string}`);
  }
  assert.deepEqual(missing, []);
});
