/**
 * RLIMIT_FSIZE on this test process for a span, by prlimit(1): a write(2) or splice(2) into
 * a file past the limit then fails as on a full disk, after a partial write — the data-plane
 * thread's included, since the limit is the process's.
 */
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';

export interface FileSizeLimit {
  /** Run `fn` with the soft limit at `limitBytes`, and put the limit back after it, however it ends. */
  within<T>(limitBytes: number, fn: () => Promise<T>): Promise<T>;
}

/** The limiter, or why prlimit(1) is not usable here (a test then skips). */
export function fileSizeLimit(): FileSizeLimit | string {
  const limits = spawnSync('prlimit', ['--pid', String(process.pid), '--fsize', '--output=SOFT,HARD', '--noheadings', '--raw'], { encoding: 'utf8' });
  if (limits.status !== 0) return `prlimit(1) is not usable here: ${limits.stderr || limits.error?.message}`;
  const [soft, hard] = limits.stdout.trim().split(/\s+/);
  const set = (value: string): void => {
    const done = spawnSync('prlimit', ['--pid', String(process.pid), `--fsize=${value}`], { encoding: 'utf8' });
    assert.equal(done.status, 0, `prlimit --fsize=${value}: ${done.stderr}`);
  };
  return {
    async within<T>(limitBytes: number, fn: () => Promise<T>): Promise<T> {
      set(`${limitBytes}:${hard ?? 'unlimited'}`);
      try {
        return await fn();
      } finally {
        set(`${soft ?? 'unlimited'}:${hard ?? 'unlimited'}`);
      }
    },
  };
}
