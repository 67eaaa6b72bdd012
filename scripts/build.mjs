#!/usr/bin/env node
// `npm run build` (and `prepare`, so `npm ci` runs it): compile src/ to dist/ with the
// project's own tsc (JS + .d.ts), then what tsc does not do:
//  - relative imports in the .d.ts files end in .js, like the JS beside them (tsc's
//    rewriteRelativeImportExtensions rewrites only the JS; a consumer's tsc must not be
//    sent to '.ts' files the package does not ship);
//  - the browser console's page (src/web/static) is copied next to dist/web/server.js.
// It builds into dist.new and swaps it in at the end, so a half-built dist/ is never run.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const out = path.join(root, 'dist.new');
const dist = path.join(root, 'dist');
fs.rmSync(out, { recursive: true, force: true });

// typescript's exports do not list bin/tsc: find it from its package.json.
const tsc = path.join(path.dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', out], { stdio: 'inherit' });
if (r.status !== 0) {
  fs.rmSync(out, { recursive: true, force: true });
  process.exit(r.status ?? 1);
}

// `from './x.ts'`, `import('./x.ts')`, `import './x.ts'` → .js, relative specifiers only.
const relTs = /((?:from\s+|import\s*\(\s*|import\s+)['"])(\.{1,2}\/[^'"]*?)\.ts(['"])/g;
for (const entry of fs.readdirSync(out, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !entry.name.endsWith('.d.ts')) continue;
  const file = path.join(entry.parentPath, entry.name);
  const text = fs.readFileSync(file, 'utf8');
  const fixed = text.replace(relTs, '$1$2.js$3');
  if (fixed !== text) fs.writeFileSync(file, fixed);
}

fs.cpSync(path.join(root, 'src', 'web', 'static'), path.join(out, 'web', 'static'), { recursive: true });

fs.rmSync(dist, { recursive: true, force: true });
fs.renameSync(out, dist);
