/** External processes in tests: output collected, stdin kept open, always killable. */
import { spawn, type ChildProcessWithoutNullStreams, type SpawnOptionsWithoutStdio } from 'node:child_process';
import { waitFor } from '../platform/helpers.ts';

/** Any child process: output collected, stdin kept open, always killable. */
export class Proc {
  readonly child: ChildProcessWithoutNullStreams;
  readonly #out: Buffer[] = [];
  stderr = '';
  exitCode: number | null | undefined;
  readonly #exit: Promise<void>;

  constructor(
    readonly label: string,
    cmd: string,
    args: readonly string[],
    options: SpawnOptionsWithoutStdio = {},
  ) {
    this.child = spawn(cmd, args, { ...options, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (b: Buffer) => this.#out.push(b));
    this.child.stderr.on('data', (b: Buffer) => {
      this.stderr += b.toString('latin1');
    });
    this.child.stdin.on('error', () => {});
    this.#exit = new Promise((resolve) => {
      this.child.once('close', (code) => {
        this.exitCode = code;
        resolve();
      });
      // spawn failure (ENOENT) also ends in 'close'; keep it from being an uncaught 'error'.
      this.child.once('error', (e) => {
        this.stderr += `spawn error: ${e.message}`;
      });
    });
  }

  get stdout(): Buffer {
    return Buffer.concat(this.#out);
  }

  get text(): string {
    return this.stdout.toString('latin1');
  }

  get exited(): boolean {
    return this.exitCode !== undefined;
  }

  /** waitFor, with this process's output in the failure message. */
  async until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    try {
      await waitFor(cond, what, timeoutMs);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${this.label} stdout: ${JSON.stringify(this.text)}\n${this.label} stderr: ${JSON.stringify(this.stderr)}`);
    }
  }

  /** True if it exited by itself within `timeoutMs`. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const r = await Promise.race([this.#exit.then(() => true), timedOut]);
    clearTimeout(timer);
    return r;
  }

  async kill(): Promise<void> {
    if (!this.exited) this.child.kill('SIGKILL');
    await this.#exit;
  }
}
