/**
 * The package as a user gets it: `npm pack`, installed from the tarball into a
 * fresh project (dependencies from npm's cache, which `npm ci` filled, else the registry),
 * then used the four ways people use it — the `chardev` command through npx, an ESM script,
 * a CommonJS script (require of an ES module, Node ≥ 20.19) and a TypeScript project
 * (nodenext, strict, noUnusedLocals) compiled and run — and without koffi's native module,
 * where a pty device says in one line what is missing and the rest works.
 *
 * dist/ must be built (npm ci and npm test do it); the pack skips `prepare` so a build never
 * runs under the other test files using dist/.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';
import { alive } from '../cli/daemon.ts';

const T = { timeout: 120_000 };
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

function sh(cmd: string, args: readonly string[], cwd: string, timeoutMs = 90_000): SpawnSyncReturns<string> {
  // Not npm's own variables of the outer `npm test`: the consumer is a project of its own.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('npm_package_') && k !== 'npm_lifecycle_event' && k !== 'npm_lifecycle_script'),
  );
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: timeoutMs });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${String(r.status)}${r.error !== undefined ? `, ${r.error.message}` : ''}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const DOMAIN = (name: string, devices: string): string =>
  `<domain type='kvm'><name>${name}</name><os><type arch='x86_64'>hvm</type></os><devices>${devices}</devices></domain>`;

describe('the npm package, installed from its tarball into a fresh project', () => {
  let dir = '';
  let project = '';
  let tarball = '';
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-consumer-'));
    project = path.join(dir, 'project');
    fs.mkdirSync(project);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('npm pack: dist/ with .d.ts, the command, LICENSE and README; no sources, tests or fixtures', T, (t) => {
    assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'index.js')), 'dist/ is built (npm ci runs `prepare`)');
    const out = ok(sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], ROOT), 'npm pack');
    const [info] = JSON.parse(out) as Array<{ filename: string; entryCount: number; size: number; unpackedSize: number; files: Array<{ path: string }> }>;
    assert.ok(info !== undefined);
    tarball = path.join(dir, info.filename);
    const files = info.files.map((f) => f.path);
    for (const f of [
      'package.json',
      'LICENSE',
      'README.md',
      'bin/chardev.js',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/cli/main.js',
      'dist/web/static/console.js',
      'examples/chardev@.service',
    ]) {
      assert.ok(files.includes(f), `${f} is in the tarball`);
    }
    assert.deepEqual(
      files.filter((f) => /^(src|test|scripts)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts'))),
      [],
      'no sources, tests or scripts',
    );
    assert.ok(info.unpackedSize < 2_000_000, `${info.unpackedSize} bytes unpacked`);
    t.diagnostic(`package: ${info.filename}, ${info.entryCount} files, ${info.size} bytes packed, ${info.unpackedSize} unpacked`);
  });

  it('installs (dependencies from the cache npm ci filled); npx chardev --help and --version work', T, (t) => {
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    const t0 = performance.now();
    ok(
      sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball, '@types/node@20'], project),
      'npm install of the tarball',
    );
    t.diagnostic(`npm install took ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const deps = fs.readdirSync(path.join(project, 'node_modules'));
    assert.ok(!deps.includes('tsx') && !deps.includes('esbuild') && !deps.includes('typescript'), `no development tools installed: ${deps.join(' ')}`);
    const help = ok(sh('npx', ['--no-install', 'chardev', '--help'], project), 'npx chardev --help');
    assert.match(help, /^Usage: chardev \[options\] \[command\]/);
    for (const c of ['validate', 'dumpxml', 'qemu-args', 'run', 'qemu', 'console', 'list', 'status']) assert.match(help, new RegExp(`^  ${c}\\b`, 'm'));
    assert.equal(ok(sh('npx', ['--no-install', 'chardev', '--version'], project), 'chardev --version'), `${pkg.version}\n`);
  });

  it('an ES module imports the library and opens a domain (a file device gets the bytes)', T, () => {
    const out = path.join(dir, 'esm.out');
    fs.writeFileSync(
      path.join(project, 'esm.mjs'),
      `import { open } from 'chardev';
import { readFileSync } from 'node:fs';
const domain = await open(${JSON.stringify(DOMAIN('esm', `<serial type='file'><source path='${out}'/></serial>`))});
domain.device('serial0').write(Buffer.from('hello from ESM\\n'));
await domain.stop();
process.stdout.write(readFileSync(${JSON.stringify(out)}, 'utf8'));
`,
    );
    const r = sh(process.execPath, ['esm.mjs'], project);
    assert.equal(ok(r, 'node esm.mjs'), 'hello from ESM\n');
    assert.equal(r.stderr, '');
  });

  it('a CommonJS script requires it (Node ≥ 20.19 loads the ES module synchronously)', T, () => {
    fs.writeFileSync(
      path.join(project, 'cjs.cjs'),
      `const { loadDomain, formatDomain, ChardevError } = require('chardev');
const loaded = loadDomain(${JSON.stringify(DOMAIN('cjs', `<serial type='pty'/>`))});
process.stdout.write(formatDomain(loaded).includes("<console type='pty'>") + ' ' + typeof ChardevError + '\\n');
`,
    );
    const r = sh(process.execPath, ['cjs.cjs'], project);
    assert.equal(ok(r, 'node cjs.cjs'), 'true function\n');
    assert.equal(r.stderr, '', 'no warning either');
  });

  it('a TypeScript project (nodenext, strict, noUnusedLocals) type-checks against the .d.ts, emits and runs', T, () => {
    fs.mkdirSync(path.join(project, 'ts'), { recursive: true });
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noUnusedLocals: true,
          types: ['node'],
          outDir: 'out',
          rootDir: 'ts',
        },
        include: ['ts'],
      }),
    );
    fs.writeFileSync(
      path.join(project, 'ts', 'main.ts'),
      `import { open, ChardevError, type Chardev, type DomainOptions } from 'chardev';

const options: DomainOptions = {};
const domain = await open(${JSON.stringify(DOMAIN('ts', `<serial type='null'/>`))}, options);
const serial: Chardev = domain.device('serial0');
const accepted: number = serial.write(Buffer.from('x'));
await domain.stop();
process.stdout.write(\`accepted \${accepted} \${ChardevError.name}\\n\`);
`,
    );
    // chardev/testing: a pty domain on the fake platform, no terminal needed.
    fs.writeFileSync(
      path.join(project, 'ts', 'fake.ts'),
      `import { open } from 'chardev';
import { FakePlatform } from 'chardev/testing';

const platform = new FakePlatform();
const domain = await open(${JSON.stringify(DOMAIN('fake', `<serial type='pty'/>`))}, { platform });
const serial = domain.device('serial0');
const pty = platform.pty(serial.ptyPath ?? '');
pty.connect();
serial.write(Buffer.from('to the pty'));
await new Promise((resolve) => setTimeout(resolve, 50));
process.stdout.write(pty.takeOutput().toString() + '\\n');
await domain.stop();
`,
    );
    // The project's own tsc (TypeScript 7); the consumer has none of its own.
    ok(sh(process.execPath, [TSC, '-p', '.'], project), 'tsc on the consumer');
    assert.equal(ok(sh(process.execPath, ['out/main.js'], project), 'node out/main.js'), 'accepted 1 ChardevError\n');
    assert.equal(ok(sh(process.execPath, ['out/fake.js'], project), 'node out/fake.js'), 'to the pty\n', 'chardev/testing: the fake platform');
  });

  it('npx chardev run killed with SIGTERM (npm and its sh -c in between): chardev sees npm go and stops, guest and all', T, async () => {
    const rd = path.join(dir, 'run-npx');
    fs.mkdirSync(rd, { mode: 0o700 });
    fs.writeFileSync(path.join(project, 'npx.xml'), DOMAIN('npx', `<serial type='null'/>`));
    const npx = spawn('npx', ['--no-install', 'chardev', 'run', 'npx.xml', '--run-dir', rd, '--log-dir', 'logs', '--', 'sleep', '60'], {
      cwd: project,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    npx.stdout.on('data', (b: Buffer) => (out += b.toString()));
    npx.stderr.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitFor(() => /guest is sleep/.test(out), `npx chardev run to start: ${out}`, 20000);
      const { pid } = JSON.parse(fs.readFileSync(path.join(rd, 'npx.json'), 'utf8')) as { pid: number };
      npx.kill('SIGTERM');
      await waitFor(() => !alive(pid), 'chardev to stop after npm went', 8000);
      assert.deepEqual(fs.readdirSync(rd), []);
    } finally {
      npx.kill('SIGKILL');
    }
  });

  it("without koffi's native module: a pty device fails in one line saying what is missing; tcp, null and file work", T, () => {
    // As on a platform koffi ships no binary for: its prebuilt packages are gone.
    fs.rmSync(path.join(project, 'node_modules', '@koromix'), { recursive: true, force: true });
    const rd = path.join(dir, 'run');
    fs.mkdirSync(rd, { mode: 0o700 });
    fs.writeFileSync(path.join(project, 'pty.xml'), DOMAIN('p', `<serial type='pty'/>`));
    const pty = sh('npx', ['--no-install', 'chardev', 'run', 'pty.xml', '--run-dir', rd, '--log-dir', 'logs', '--', 'true'], project);
    assert.equal(pty.status, 125);
    assert.equal(
      pty.stderr,
      `charserial0: cannot allocate a pty: needs koffi's native module, which is missing for ${process.platform}-${process.arch} (glibc); null, file, stdio, tcp, unix, udp and vc devices work without it\n`,
    );
    const out = path.join(dir, 'nokoffi.out');
    fs.writeFileSync(
      path.join(project, 'rest.xml'),
      DOMAIN(
        'r',
        `<serial type='file'><source path='${out}'/></serial><serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/></serial><serial type='null'/>`,
      ),
    );
    const rest = sh('npx', ['--no-install', 'chardev', 'run', 'rest.xml', '--run-dir', rd, '--log-dir', 'logs', '--', 'sh', '-c', 'echo works'], project);
    assert.equal(rest.status, 0, rest.stderr);
    assert.equal(rest.stderr, '');
    assert.equal(fs.readFileSync(out, 'utf8'), 'works\n');
    assert.match(rest.stdout, /charserial1: listening on tcp:127\.0\.0\.1:\d+/);
  });
});
