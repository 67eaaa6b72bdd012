#!/usr/bin/env node
// The `chardev` command. It runs the compiled CLI in dist/, which `npm ci` (the package's
// `prepare` script) and `npm run build` make; an installed package ships dist/ only.
//
// In a checkout whose src/ changed after the last build, it runs the sources through tsx
// instead (a devDependency), so `npm start` and the tests that spawn this file never run
// stale code while someone edits; `npm run build` makes it fast again.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const built = join(root, 'dist', 'cli', 'main.js');

/** Newest mtime under dir (ms), or 0. */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
  }
  return t;
}

async function load() {
  const src = join(root, 'src');
  const fromSource = existsSync(join(src, 'cli', 'main.ts')) && (!existsSync(built) || newest(src) > statSync(built).mtimeMs);
  if (!fromSource) return import(pathToFileURL(built).href);
  try {
    const { register } = await import('tsx/esm/api');
    register();
  } catch {
    process.stderr.write(
      existsSync(built)
        ? 'chardev: src/ is newer than dist/ and tsx is not installed: run npm run build\n'
        : 'chardev: dist/ is missing: run npm run build (npm ci does it)\n',
    );
    process.exit(1);
  }
  return import(pathToFileURL(join(src, 'cli', 'main.ts')).href);
}

const { main } = await load();
process.exitCode = await main(process.argv.slice(2));
