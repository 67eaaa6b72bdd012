/**
 * Shared plumbing for the security checks: a real `chardev run` (bin/chardev.js, as a user
 * starts it) watched from outside, and a tally of the checks made, printed as the figures
 * the README's "Security checks" quotes.
 */
import { domainXml } from '../helpers/domain-xml.ts';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';

export const BIN = path.join(ROOT, 'bin', 'chardev.js');

/** A long-running `chardev run`, its output collected. */
export class ChardevRun {
  readonly child: ChildProcessWithoutNullStreams;
  #stdout = '';
  #stderr = '';
  exitCode: number | null | undefined;
  readonly exited: Promise<number | null>;

  /**
   * `umask`: start it under this umask (through `sh -c 'umask N; exec node …'`), to show
   * modes come from chardev and not from the caller's umask.
   */
  constructor(args: readonly string[], options: { umask?: string; cwd?: string } = {}) {
    const argv = [process.execPath, BIN, 'run', ...args];
    this.child =
      options.umask === undefined
        ? spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], cwd: options.cwd ?? ROOT })
        : spawn('sh', ['-c', `umask ${options.umask}; exec "$@"`, 'sh', ...argv], { stdio: ['pipe', 'pipe', 'pipe'], cwd: options.cwd ?? ROOT });
    this.child.stdout.on('data', (b: Buffer) => (this.#stdout += b.toString()));
    this.child.stderr.on('data', (b: Buffer) => (this.#stderr += b.toString()));
    this.child.stdin.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code) => {
        this.exitCode = code;
        resolve(code);
      });
    });
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error('chardev run did not start');
    return pid;
  }

  stdout(): string {
    return this.#stdout;
  }

  stderr(): string {
    return this.#stderr;
  }

  /** Wait until stdout matches; returns the match. Fails early (with the output) if it exits. */
  async match(re: RegExp, what: string, timeoutMs = 15000): Promise<RegExpExecArray> {
    await this.until(() => re.test(this.#stdout), what, timeoutMs);
    return re.exec(this.#stdout)!;
  }

  /** waitFor, with the process's output in the failure message. */
  async until(cond: () => boolean, what: string, timeoutMs = 10000): Promise<void> {
    try {
      await waitFor(() => cond() || this.exitCode !== undefined, what, timeoutMs);
      if (!cond()) throw new Error(`chardev run exited (${this.exitCode}) before ${what}`);
    } catch (e) {
      throw new Error(`${(e as Error).message}\nstdout: ${JSON.stringify(this.#stdout)}\nstderr: ${JSON.stringify(this.#stderr)}`);
    }
  }

  /** SIGTERM, then wait for the exit (SIGKILL after 5 s). */
  async stop(): Promise<number | null> {
    if (this.exitCode === undefined) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(t);
    }
    return this.exitCode ?? null;
  }
}

/** A scratch directory, removed at process exit whatever happens. */
export function scratchDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `chardev-sec-${prefix}-`));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh run directory (0700) so test domains never meet a user's running ones. */
export function runDir(parent: string): string {
  const dir = path.join(parent, 'run');
  fs.mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** A domain document (the tests' one builder, with the names the other way round). */
export function secDomain(name: string, devices: string): string {
  return domainXml(devices, name);
}

/** Counts of checks made, by kind, for the figures line. */
export class Tally {
  readonly #counts = new Map<string, number>();
  add(kind: string, n = 1): void {
    this.#counts.set(kind, (this.#counts.get(kind) ?? 0) + n);
  }
  get total(): number {
    let t = 0;
    for (const n of this.#counts.values()) t += n;
    return t;
  }
  /** `security (TITLE): N checks — a 3, b 2`; also written to stdout so `npm test` shows it. */
  report(title: string, diagnostic: (s: string) => void): string {
    const parts = [...this.#counts].map(([k, n]) => `${k} ${n}`).join(', ');
    const line = `security (${title}): ${this.total} checks — ${parts}`;
    diagnostic(line);
    process.stdout.write(`${line}\n`);
    return line;
  }
}
