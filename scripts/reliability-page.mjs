#!/usr/bin/env node
// Writes the figures of a passing `npm test` into docs/reliability.md, between its
// `<!-- figures:start -->` and `<!-- figures:end -->` markers, so the page's numbers come from
// a run and are never typed by hand. The figures are the lines the tests print for it, read
// from the runners' TAP output (the files given as arguments): `reliability: …` (faults,
// nothing lost, soak), `security (…): N checks — …`, and the fuzzer's `fuzz: …`, each once, in
// the order they came, with the suite's counts and the machine.
// scripts/test.sh runs it when CHARDEV_WRITE_DOCS=1 and both runners passed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const page = path.join(root, 'docs', 'reliability.md');
const START = '<!-- figures:start -->';
const END = '<!-- figures:end -->';

const lines = [];
const seen = new Set();
const counts = new Map();
for (const file of process.argv.slice(2)) {
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim().replace(/^#\s*/, '');
    const count = /^(tests|pass|fail|skipped) (\d+)$/.exec(line);
    if (count !== null && raw.startsWith('# ')) counts.set(count[1], (counts.get(count[1]) ?? 0) + Number(count[2]));
    if (!/^(reliability: |security \(|fuzz: )/.test(line) || seen.has(line)) continue;
    seen.add(line);
    lines.push(line.replace(/^reliability: /, ''));
  }
}
if (lines.length === 0) {
  process.stderr.write('reliability-page: no figures in the given output; docs/reliability.md left as it was\n');
  process.exit(1);
}
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const when = new Date().toISOString().slice(0, 16).replace('T', ' ');
const block = [
  START,
  `Written by \`npm test\` on ${when} UTC (\`CHARDEV_WRITE_DOCS=1 npm test\`; scripts/reliability-page.mjs): ` +
    `${counts.get('pass') ?? '?'} of ${counts.get('tests') ?? '?'} tests passed, ${counts.get('fail') ?? 0} failed; ` +
    `Node ${process.version}, ${os.cpus().length} × ${cpu}, Linux ${os.release()}.`,
  '',
  ...lines.map((l) => `- ${l.replace(/\|/g, '\\|')}`),
  END,
].join('\n');
const text = fs.readFileSync(page, 'utf8');
const a = text.indexOf(START);
const b = text.indexOf(END);
if (a < 0 || b < a) {
  process.stderr.write(`reliability-page: ${page} has no ${START} … ${END} section\n`);
  process.exit(1);
}
fs.writeFileSync(page, text.slice(0, a) + block + text.slice(b + END.length));
process.stdout.write(`# reliability figures written to docs/reliability.md (${lines.length} lines)\n`);
