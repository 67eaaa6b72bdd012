/**
 * Processes the benchmark starts, and the cleanup that ends them however a measurement
 * ends. Every child gets a process group of its own (detached), so killing the group also
 * ends what it started (socat's EXEC child, chardev's guest). Only groups started here
 * are ever signalled, by their id.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { HostConfig, HostMessage } from './protocol.ts';

export class BenchError extends Error {}

const live = new Set<Proc>();
const scratch = new Set<string>();

/** Every process group started here (each Proc leads one), so load.ts can tell the bench's CPU from other work's. */
export const startedGroups = new Set<number>();

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  #stderr = '';
  #stdout = '';
  #lines: string[] = [];
  #waiters: Array<() => void> = [];
  #exit: Exit | undefined;

  constructor(name: string, cmd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; stdin?: boolean } = {}) {
    this.name = name;
    this.child = spawn(cmd, args, {
      detached: true,
      stdio: [options.stdin === true ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      ...(options.env !== undefined ? { env: options.env } : {}),
    });
    live.add(this);
    if (this.child.pid !== undefined) startedGroups.add(this.child.pid);
    this.child.stderr?.on('data', (b: Buffer) => {
      if (this.#stderr.length < 64 * 1024) this.#stderr += b.toString();
    });
    const out = this.child.stdout;
    if (out !== null) {
      readline.createInterface({ input: out }).on('line', (line) => {
        this.#stdout += `${line}\n`;
        this.#lines.push(line);
        this.#wake();
      });
    }
    this.exited = new Promise<Exit>((resolve) => {
      this.child.on('error', (e) => {
        this.#stderr += `${e.message}\n`;
        this.#exit = { code: 127, signal: null };
        live.delete(this);
        this.#wake();
        resolve(this.#exit);
      });
      this.child.on('close', (code, signal) => {
        this.#exit = { code, signal };
        live.delete(this);
        this.#wake();
        resolve(this.#exit);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
  get stderr(): string {
    return this.#stderr.trim();
  }
  get stdout(): string {
    return this.#stdout;
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** The next stdout line, or an error naming the process if it ends or the time runs out. */
  async nextLine(timeoutMs: number, what: string): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.#lines.shift();
      if (line !== undefined) return line;
      if (this.#exit !== undefined)
        throw new BenchError(`${this.name} ended (${this.#exit.code ?? this.#exit.signal}) before ${what}${this.stderr ? `: ${this.stderr}` : ''}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new BenchError(`${this.name}: no ${what} within ${timeoutMs / 1000} s${this.stderr ? ` (stderr: ${this.stderr})` : ''}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Wait for exit; kill it when the time runs out. */
  async wait(timeoutMs: number, what: string): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
    const r = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (r === 'timeout') {
      this.kill();
      throw new BenchError(`${this.name}: ${what} did not finish within ${timeoutMs / 1000} s`);
    }
    return r;
  }

  write(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  /** SIGKILL the whole process group. */
  kill(): void {
    const pid = this.child.pid;
    if (pid === undefined || this.#exit !== undefined) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }

  async stop(): Promise<void> {
    this.kill();
    await this.exited;
  }
}

/** The chardev host process (host.ts), speaking JSON lines. */
export class Host {
  readonly proc: Proc;

  constructor(config: HostConfig, options: { exposeGc?: boolean; profileDir?: string | undefined } = {}) {
    const flags = ['--import', 'tsx'];
    if (options.exposeGc === true) flags.push('--expose-gc');
    if (options.profileDir !== undefined) flags.push('--cpu-prof', '--cpu-prof-dir', options.profileDir);
    const host = fileURLToPath(new URL('./host.ts', import.meta.url));
    this.proc = new Proc('chardev host', process.execPath, [...flags, host, JSON.stringify(config)], { stdin: true });
  }

  async next<E extends HostMessage['event']>(event: E, timeoutMs: number): Promise<Extract<HostMessage, { event: E }>> {
    for (;;) {
      const line = await this.proc.nextLine(timeoutMs, `'${event}' from the chardev host`);
      let msg: HostMessage;
      try {
        msg = JSON.parse(line) as HostMessage;
      } catch {
        continue; // Not ours (a stray print); the protocol is JSON lines only.
      }
      if (msg.event === 'error') throw new BenchError(`chardev host: ${msg.message}`);
      if (msg.event === event) return msg as Extract<HostMessage, { event: E }>;
    }
  }

  /** Let it stop its domain and exit. */
  async close(timeoutMs = 20_000): Promise<void> {
    this.proc.write('stop');
    await this.proc.wait(timeoutMs, 'stopping');
  }

  /** Ask for the final figures, then let it stop its domain and exit (profile written on a clean exit). */
  async finish<E extends HostMessage['event']>(event: E, timeoutMs = 20_000): Promise<Extract<HostMessage, { event: E }>> {
    this.proc.write('stop');
    const msg = await this.next(event, timeoutMs);
    await this.proc.wait(timeoutMs, 'stopping');
    return msg;
  }
}

/** Directories that live for the whole run (the scripts), removed by cleanup({ all: true }). */
const runScratch = new Set<string>();

/** A scratch directory removed by cleanup(); with `wholeRun`, only by the final one. */
export function makeScratch(prefix: string, wholeRun = false): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  (wholeRun ? runScratch : scratch).add(dir);
  return dir;
}

export function removeScratch(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  scratch.delete(dir);
  runScratch.delete(dir);
}

/**
 * Kill every process still running and remove every scratch directory of the measurement
 * (with `all`, the run's too). Idempotent.
 */
export async function cleanup(options: { all?: boolean } = {}): Promise<void> {
  const procs = [...live];
  for (const p of procs) p.kill();
  await Promise.race([Promise.all(procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 3000))]);
  for (const dir of [...scratch, ...(options.all === true ? runScratch : [])]) removeScratch(dir);
}

/** Synchronous last resort for 'exit' (an uncaught error, process.exit). */
export function cleanupSync(): void {
  for (const p of [...live]) p.kill();
  for (const dir of [...scratch, ...runScratch]) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort at exit.
    }
  }
}

/** The interpreter itself, not a version-manager shim in front of it (a shim costs ~300 ms a start). */
export function resolvePython(): string | undefined {
  try {
    return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export function commandOutput(cmd: string, args: readonly string[]): string | undefined {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return undefined;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** This process's open-files limit (soft, hard; null for unlimited or unreadable). */
export function fdLimits(): { soft: number | null; hard: number | null } {
  try {
    const m = /Max open files\s+(\S+)\s+(\S+)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    const num = (s: string | undefined): number | null => (s === undefined || s === 'unlimited' ? null : Number(s));
    return { soft: num(m?.[1]), hard: num(m?.[2]) };
  } catch {
    return { soft: null, hard: null };
  }
}
