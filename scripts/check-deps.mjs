#!/usr/bin/env node
// The module graph of src/ points one way. Layers, bottom to top:
//   0  errors.ts, version.ts, platform/, protocols/   (no chardev layer above them)
//   1  config/                                        (plain data: parse, validate, format)
//   2  core/                                          (devices, hub, flow control; finds backends by type)
//   3  backends/                                      (one file per host interface type)
//   4  control/, web/, qemu/, daemon/                 (shells over a running domain)
//   5  cli/                                           (the command)
//   6  index.ts, testing.ts                           (the package's entry points)
// A module may import its own layer or a lower one, never a higher one, and no set of
// modules may import each other in a circle (type-only imports included: they are design
// dependencies even though they vanish at run time). Prints each violation and exits 1 if
// there is any; `--json` prints the findings as JSON, `--root DIR` checks another tree.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const rootArg = process.argv.indexOf('--root');
const root = rootArg > 0 ? path.resolve(process.argv[rootArg + 1]) : path.join(path.dirname(path.dirname(fileURLToPath(import.meta.url))), 'src');
const RANK = {
  errors: 0,
  version: 0,
  platform: 0,
  protocols: 0,
  config: 1,
  core: 2,
  backends: 3,
  control: 4,
  web: 4,
  qemu: 4,
  daemon: 4,
  cli: 5,
  index: 6,
  testing: 6,
};

function layerOf(file) {
  const rel = path.relative(root, file).split(path.sep);
  const top = rel.length > 1 ? rel[0] : rel[0].replace(/\.ts$/, '');
  if (!(top in RANK)) throw new Error(`scripts/check-deps.mjs: src/${rel.join('/')} is in no layer: add '${top}' to RANK`);
  return top;
}

const files = fs
  .readdirSync(root, { recursive: true, withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith('.ts'))
  .map((e) => path.join(e.parentPath, e.name))
  .sort();

// import … from './x.ts', export … from './x.ts', import './x.ts', import('./x.ts')
const SPECIFIER = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\sfrom\s+)?['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/gm;
const graph = new Map();
for (const file of files) {
  const text = fs.readFileSync(file, 'utf8');
  const targets = new Set();
  for (const m of text.matchAll(SPECIFIER)) targets.add(path.resolve(path.dirname(file), m[1] ?? m[2]));
  graph.set(
    file,
    [...targets].filter((t) => graph.has(t) || files.includes(t)),
  );
}

const rel = (f) => path.relative(path.dirname(root), f);
const upward = [];
for (const [from, targets] of graph) {
  for (const to of targets) {
    const a = layerOf(from);
    const b = layerOf(to);
    if (RANK[b] > RANK[a]) upward.push(`${rel(from)} (${a}) imports ${rel(to)} (${b})`);
  }
}

// Tarjan's strongly connected components: every component of more than one module is a cycle.
const cycles = [];
let next = 0;
const index = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
function visit(v) {
  index.set(v, next);
  low.set(v, next);
  next++;
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!index.has(w)) {
      visit(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
  }
  if (low.get(v) === index.get(v)) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1) cycles.push(component.map(rel).sort().join(' ↔ '));
  }
}
for (const f of files) if (!index.has(f)) visit(f);

if (process.argv.includes('--json')) {
  process.stdout.write(`${JSON.stringify({ modules: files.length, upward, cycles }, null, 2)}\n`);
} else {
  for (const u of upward) process.stdout.write(`upward import: ${u}\n`);
  for (const c of cycles) process.stdout.write(`import cycle: ${c}\n`);
  process.stdout.write(`${files.length} modules, ${upward.length} upward imports, ${cycles.length} cycles\n`);
}
process.exitCode = upward.length + cycles.length > 0 ? 1 : 0;
