/**
 * A real `chardev` process as a user or systemd starts it (bin/chardev.js, which runs
 * dist/), its output collected, plus what the issue-15 tests look at from outside: its
 * listening TCP sockets and its children.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';

export const BIN = path.join(ROOT, 'bin', 'chardev.js');

export class Daemon {
  readonly child: ChildProcessWithoutNullStreams;
  #stdout = '';
  #stderr = '';
  exitCode: number | null | undefined;
  signal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;

  constructor(args: readonly string[], env: NodeJS.ProcessEnv = process.env) {
    this.child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env });
    this.child.stdout.on('data', (b: Buffer) => (this.#stdout += b.toString()));
    this.child.stderr.on('data', (b: Buffer) => (this.#stderr += b.toString()));
    this.child.stdin.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exitCode = code;
        this.signal = signal;
        resolve(code);
      });
    });
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error('chardev did not start');
    return pid;
  }
  get stdout(): string {
    return this.#stdout;
  }
  get stderr(): string {
    return this.#stderr;
  }

  /** Wait until stdout matches (failing early, with the output, if it exits first). */
  async match(re: RegExp, what: string, timeoutMs = 15000): Promise<RegExpExecArray> {
    try {
      await waitFor(() => re.test(this.#stdout) || this.exitCode !== undefined, what, timeoutMs);
    } catch (e) {
      throw new Error(`${(e as Error).message}\nstdout: ${JSON.stringify(this.#stdout)}\nstderr: ${JSON.stringify(this.#stderr)}`);
    }
    const m = re.exec(this.#stdout);
    if (m === null)
      throw new Error(
        `chardev exited (${String(this.exitCode)}) before ${what}\nstdout: ${JSON.stringify(this.#stdout)}\nstderr: ${JSON.stringify(this.#stderr)}`,
      );
    return m;
  }

  /** The exit status if it exits within `timeoutMs`, else 'running'. */
  async exitWithin(timeoutMs: number): Promise<number | null | 'running'> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.exited, new Promise<'running'>((resolve) => (timer = setTimeout(() => resolve('running'), timeoutMs)))]);
    clearTimeout(timer);
    return r;
  }

  /** Make sure it is gone (a failing test must not leave it). */
  async kill(): Promise<void> {
    if (this.exitCode === undefined) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** Direct children of a process (from /proc). */
export function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `ADDR:PORT` of every TCP socket the process listens on (from /proc/net/tcp{,6}, by inode). */
export function tcpListeners(pid: number): string[] {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m !== null) inodes.add(m[1] as string);
    } catch {
      // closed meanwhile
    }
  }
  const out: string[] = [];
  for (const proto of ['tcp', 'tcp6']) {
    for (const line of fs.readFileSync(`/proc/net/${proto}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // st 0A is LISTEN; field 9 the inode.
      if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9] ?? '')) continue;
      const [hex, port] = (f[1] ?? ':').split(':');
      const addr =
        proto === 'tcp'
          ? Buffer.from(hex ?? '', 'hex')
              .reverse()
              .join('.')
          : `[${
              (hex ?? '')
                .match(/.{8}/g)
                ?.map((w) => Buffer.from(w, 'hex').reverse().toString('hex'))
                .join('')
                .match(/.{4}/g)
                ?.join(':') ?? hex
            }]`;
      out.push(`${addr}:${parseInt(port ?? '0', 16)}`);
    }
  }
  return out.sort();
}
