/**
 * Shared test plumbing for the real-pty tests: external processes stand in for the
 * clients that open /dev/pts/N, so the tests exercise the kernel, not our own code on both ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Poll `cond` every 10 ms; reject after `timeoutMs` with `what` in the message. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Poll an async condition (a page, a socket) every 25 ms; reject after `timeoutMs` with `what` in the message. */
export async function eventually(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

export interface Ran {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Run a command to completion, killing it after `timeoutMs`. */
export function run(cmd: string, args: readonly string[], timeoutMs = 5000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

/** A child process holding `slavePath` open (as its stdin) without reading it. */
export class SlaveHolder {
  readonly child: ChildProcess;
  readonly #exited: Promise<void>;
  constructor(slavePath: string) {
    // `<>` opens read-write, so the slave stays open with nobody consuming its input.
    this.child = spawn('bash', ['-c', 'exec sleep 30 <>"$1"', 'holder', slavePath], { stdio: 'ignore' });
    this.#exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }
  /** Kill and wait for exit, so the slave is closed when this resolves. */
  async release(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.#exited;
  }
}

/** Open fds of this process that point at ptys, /dev/null, /dev/full or under `dir`. */
export function trackedFds(dir?: string): string[] {
  const result: string[] = [];
  for (const name of fs.readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${name}`);
    } catch {
      continue; // the directory fd readdir itself used
    }
    if (/^\/dev\/(pts\/|ptmx|null|full)/.test(target) || (dir !== undefined && target.startsWith(dir))) {
      result.push(`${name} -> ${target}`);
    }
  }
  return result.sort();
}

/** Every byte value, then `extra` pseudo-random bytes (deterministic, so failures reproduce). */
export function payload(extra: number): Buffer {
  const buf = Buffer.alloc(256 + extra);
  for (let i = 0; i < 256; i++) buf[i] = i;
  let x = 0x12345678;
  for (let i = 256; i < buf.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 0xff;
  }
  return buf;
}

/** `stty -F path -a` output; note that opening the slave briefly counts as a client. */
export async function sttyAll(path: string): Promise<string> {
  const r = await run('stty', ['-F', path, '-a']);
  if (r.code !== 0) throw new Error(`stty -F ${path} -a failed: ${r.stderr}`);
  return r.stdout.toString();
}

/** True if `flag` (e.g. '-icanon', 'cs8') appears as a whole word in stty output. */
export function hasFlag(stty: string, flag: string): boolean {
  const escaped = flag.replace(/[-]/g, '\\-');
  return new RegExp(`(^|[\\s;])${escaped}(?=[\\s;]|$)`, 'm').test(stty);
}
