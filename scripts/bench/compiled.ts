/**
 * The bench's compiled floors (scripts/bench/c/relay.c, the same modes and argv as peers.ts
 * RELAY_PY): built once at the start of a run with the machine's C compiler (`cc -O2`, or
 * `$CC`) into the run's scratch directory, before any clock starts. A floor in Python pays
 * the interpreter's cost on every call; one in C pays only the kernel's, so a C floor below a
 * target shows the machine's limit for that work.
 *
 * Bench-only: nothing here is installed or built at install (chardev keeps koffi, no
 * compiler). Without a compiler, or if the build fails, the C floor rows say why and decide
 * nothing; the run goes on.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The compiled relay and the compiler that built it, or why there is none. */
export type CFloor = { readonly relay: string; readonly compiler: string } | { readonly skipped: string };

/** The C source, relative to the repository's root. */
export const C_RELAY_SOURCE = 'scripts/bench/c/relay.c';

/** The compiler's first line of `--version` (e.g. `cc (Debian 12.2.0-14+deb12u1) 12.2.0`), or undefined when there is none to run. */
function compilerVersion(cc: string): string | undefined {
  try {
    return (execFileSync(cc, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0] ?? '').trim() || cc;
  } catch {
    return undefined;
  }
}

/**
 * Builds `source` with `cc` into `dir`. Never throws: a missing compiler or a failed build
 * comes back as `skipped` with the reason, which the C floor rows then print.
 */
export function buildCFloor(source: string, dir: string, cc = process.env.CC?.trim() || 'cc'): CFloor {
  const compiler = compilerVersion(cc);
  if (compiler === undefined) return { skipped: `no C compiler (${cc}) found` };
  if (!fs.existsSync(source)) return { skipped: `${source} is missing` };
  const relay = path.join(dir, 'relay-c');
  try {
    execFileSync(cc, ['-O2', '-o', relay, source], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: unknown }).stderr;
    const first = typeof stderr === 'string' ? (stderr.trim().split('\n')[0] ?? '') : '';
    return { skipped: `${cc} could not build ${path.basename(source)}${first !== '' ? `: ${first}` : ''}` };
  }
  return { relay, compiler };
}

/** What the bench records with the versions: the compiler's version line, or why there are no C floors. */
export function compilerVersions(c: CFloor): { cc: string } | { cFloorsSkipped: string } {
  return 'relay' in c ? { cc: c.compiler } : { cFloorsSkipped: c.skipped };
}
