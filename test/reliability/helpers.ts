/**
 * Plumbing for the fault, churn and soak tests: `chardev run` as a real child process
 * (through bin/chardev.js, optionally under `prlimit`), its output, its /proc figures,
 * and the deterministic guest streams whose checksums the tests compare.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';

export const BIN = path.join(ROOT, 'bin', 'chardev.js');

/** The interpreter itself, not a version-manager shim in front of it (a shim costs ~300 ms a start). */
export const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim() || 'python3';

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** One line for the README's figures: on stderr, prefixed, so a CI log can be grepped for them. */
export function figure(text: string): void {
  process.stderr.write(`reliability: ${text}\n`);
}

export interface RunOptions {
  readonly xmlFile: string;
  readonly logDir: string;
  readonly runDir: string;
  /** Guest command (after `--`). */
  readonly guest: readonly string[];
  readonly attach?: readonly string[];
  /** More `chardev run` options before FILE (e.g. `--tty`, `--tls-dir DIR`). */
  readonly flags?: readonly string[];
  /** `prlimit` options (e.g. `--fsize=262144`) the process starts under. */
  readonly prlimit?: readonly string[];
}

/** A running `chardev run`, its stdout and stderr collected. */
export class ChardevProcess {
  readonly child: ChildProcessWithoutNullStreams;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #done = false;

  constructor(o: RunOptions) {
    const args = [
      BIN,
      'run',
      '--run-dir',
      o.runDir,
      '--log-dir',
      o.logDir,
      ...(o.attach ?? []).flatMap((a) => ['--attach', a]),
      ...(o.flags ?? []),
      o.xmlFile,
      '--',
      ...o.guest,
    ];
    // prlimit sets the limit and execs: the pid is chardev's own.
    this.child =
      o.prlimit === undefined
        ? spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] })
        : spawn('prlimit', [...o.prlimit, process.execPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (s: string) => (this.stdout += s));
    this.child.stderr.on('data', (s: string) => (this.stderr += s));
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        this.#done = true;
        resolve({ code, signal });
      }),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return !this.#done;
  }

  /** Resolves with the first match of `re` in stdout (waiting for it). */
  async out(re: RegExp, timeoutMs = 20000): Promise<RegExpExecArray> {
    let m: RegExpExecArray | null = null;
    await waitFor(
      () => (m = re.exec(this.stdout)) !== null || !this.alive,
      `chardev to print ${re}; stdout so far: ${this.stdout}; stderr: ${this.stderr}`,
      timeoutMs,
    );
    if (m === null) throw new Error(`chardev exited before printing ${re}; stderr: ${this.stderr}`);
    return m;
  }

  /** Started: every host interface and the control socket are up. */
  async ready(): Promise<void> {
    await this.out(/^control: (.*) \(QMP/m);
  }

  get qmpPath(): string {
    return /^control: (.*) \(QMP/m.exec(this.stdout)?.[1] ?? '';
  }

  /** stderr lines matching `re`. */
  errors(re: RegExp): string[] {
    return this.stderr.split('\n').filter((l) => re.test(l));
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.alive) this.child.kill(signal);
    await this.exited;
  }
}

/** Open fds of a process. */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident set size of a process, bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) * 1024;
}

export function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `chardev-${prefix}-`));
}

/** Rotated files oldest first (`.N` … `.1`, then the active one) and their bytes joined. */
export function readRotated(file: string): { files: string[]; bytes: Buffer } {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const numbers = fs
    .readdirSync(dir)
    .map((f) => (f.startsWith(`${base}.`) ? /^\d+$/.exec(f.slice(base.length + 1))?.[0] : undefined))
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => b - a);
  const files = [...numbers.map((n) => `${file}.${n}`), ...(fs.existsSync(file) ? [file] : [])];
  return { files, bytes: Buffer.concat(files.map((f) => fs.readFileSync(f))) };
}

/**
 * The guest's stream: fixed-size records `NNNNNNNNNN ` + filler + `\n`, record i's filler
 * derived from i, so any prefix can be regenerated here and every record checked in place.
 */
export const RECORD = 256;

/**
 * Python source of a guest writing records 0.. (`count` of them, `per` per write, `sleepMs`
 * between writes; count 0: until its input says `quit`). With `countFile`, it writes there
 * how many records it wrote, at the end.
 */
export function recordGuest(count: number, per: number, sleepMs: number, countFile?: string): string {
  return String.raw`
import os, select, sys, time
R = ${RECORD}
def rec(i):
    head = b'%010d ' % i
    fill = bytes((i * 7 + k) % 26 + 97 for k in range(R - len(head) - 1))
    return head + fill + b'\n'
count, per, pause = ${count}, ${per}, ${sleepMs} / 1000.0
i = 0
out = sys.stdout.buffer
while count == 0 or i < count:
    n = per if count == 0 else min(per, count - i)
    data = b''.join(rec(j) for j in range(i, i + n))
    view = memoryview(data)
    while view:
        w = os.write(1, view)
        view = view[w:]
    i += n
    if count == 0:
        r, _, _ = select.select([0], [], [], pause)
        if r and b'quit' in os.read(0, 4096):
            break
    elif pause > 0:
        time.sleep(pause)
count_file = ${JSON.stringify(countFile ?? '')}
if count_file:
    with open(count_file, 'w') as f:
        f.write(str(i))
`;
}

/** Record i, as the guest writes it. */
export function record(i: number): Buffer {
  const head = Buffer.from(`${String(i).padStart(10, '0')} `);
  const fill = Buffer.alloc(RECORD - head.length - 1);
  for (let k = 0; k < fill.length; k++) fill[k] = ((i * 7 + k) % 26) + 97;
  return Buffer.concat([head, fill, Buffer.from('\n')]);
}

/** Records first … first+count-1 joined. */
export function records(first: number, count: number): Buffer {
  const out = Buffer.alloc(count * RECORD);
  for (let i = 0; i < count; i++) record(first + i).copy(out, i * RECORD);
  return out;
}

/**
 * Check that `bytes` is a run of whole consecutive records; returns the first record's
 * number and the count, or throws saying where it broke.
 */
export function checkRecords(bytes: Buffer, what: string): { first: number; count: number } {
  if (bytes.length % RECORD !== 0) throw new Error(`${what}: ${bytes.length} bytes is not a whole number of ${RECORD}-byte records`);
  const count = bytes.length / RECORD;
  if (count === 0) return { first: 0, count: 0 };
  const first = Number(bytes.subarray(0, 10).toString('latin1'));
  const want = records(first, count);
  if (!want.equals(bytes)) {
    let at = 0;
    while (want[at] === bytes[at]) at++;
    throw new Error(`${what}: record ${first + Math.floor(at / RECORD)} differs at byte ${at}`);
  }
  return { first, count };
}
