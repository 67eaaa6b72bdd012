/**
 * Ordered, non-blocking writer for fds that libuv cannot wrap as sockets — chiefly pty
 * masters (net.Socket refuses them with ERR_INVALID_FD_TYPE).
 *
 * Why not tty.WriteStream: libuv treats a pty master as a tty it cannot reopen and falls
 * back to blocking writes; with a full pty buffer that busy-spins the whole process, and
 * WriteStream also clears O_NONBLOCK on the shared open file description (npm-probe.md §1).
 *
 * Instead: write(2) on the O_NONBLOCK fd straight from the event loop (fs.writeSync, which
 * never blocks here: a full buffer is EAGAIN, not a wait), as libuv does for sockets. Node
 * exposes no readiness notification for such an fd, so on EAGAIN a poll(POLLOUT) runs on
 * one of koffi's worker threads (`waitWritable`) and the pump resumes when it returns — the
 * moment the reader has made room, as socat's select() loop would. A poll that times out
 * (the reader stalled) is retried after a pause that grows to MAX_IDLE_POLL_DELAY_MS, so a
 * stalled reader keeps a worker thread busy for a small fraction of the time only. Without
 * `waitWritable` (or when poll reports a hang-up) the writer falls back to retrying on
 * timers.
 *
 * Drop policy: at most `maxQueuedBytes` wait in user space. A write that does not fit is
 * cut at the limit; the tail is dropped, counted in `droppedBytes`, and the return value
 * says how much was taken (like a partial write(2)), so the caller can apply QEMU's
 * frontend policy (retry later, or discard). Bytes already accepted are never dropped
 * unless close() is called or a hard write error occurs.
 */
import * as fs from 'node:fs';
import { PlatformError, errnoName, type ByteWriter, type ByteWriterOptions } from './platform.ts';
import { ByteQueue } from './byte-queue.ts';

/** What a writability wait ended with. */
export type WritableWait = 'writable' | 'timeout' | 'unavailable';
/** Blocks off the main thread until `fd` is writable or `timeoutMs` passed; reports on the loop. */
export type WaitWritable = (fd: number, timeoutMs: number, done: (result: WritableWait) => void) => void;

/** One poll's worth of waiting: short, so close() is never held up for long by a worker. */
const POLL_TIMEOUT_MS = 20;
/** Pause between polls once the reader has stalled (doubling from 1 ms). */
const MAX_IDLE_POLL_DELAY_MS = 250;
/** Timer retries when no poll is possible (fake fds, a hung-up pty). */
const MAX_RETRY_DELAY_MS = 4;

export class FdWriter implements ByteWriter {
  readonly #fd: number;
  readonly #onDrain: (() => void) | undefined;
  readonly #onError: ((err: PlatformError) => void) | undefined;
  readonly #queue: ByteQueue;
  readonly #waitWritable: WaitWritable | undefined;
  /** A poll is running on a worker thread; its result resumes the pump. */
  #waiting = false;
  /** Polls or timer retries since the last successful write. */
  #retries = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  /** Set when EAGAIN or a drop happened since the queue was last empty: onDrain is due. */
  #backpressured = false;
  #closed = false;
  #drainWaiters: Array<() => void> = [];

  constructor(fd: number, options: ByteWriterOptions = {}, waitWritable?: WaitWritable) {
    this.#queue = new ByteQueue(options.maxQueuedBytes);
    this.#waitWritable = waitWritable;
    this.#fd = fd;
    this.#onDrain = options.onDrain;
    this.#onError = options.onError;
  }

  get queuedBytes(): number {
    return this.#queue.queuedBytes;
  }

  get droppedBytes(): number {
    return this.#queue.droppedBytes;
  }

  get closed(): boolean {
    return this.#closed;
  }

  write(data: Uint8Array): number {
    if (this.#closed) return 0;
    const take = this.#queue.accept(data);
    if (take < data.length) this.#backpressured = true;
    if (take === 0) return 0;
    this.#pump();
    return take;
  }

  drained(): Promise<void> {
    if (this.#closed || this.#queue.queuedBytes === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelRetry();
    this.#queue.clear();
    this.#settleWaiters();
  }

  #pump(): void {
    if (this.#closed || this.#waiting || this.#retryTimer !== undefined) return;
    for (;;) {
      const head = this.#queue.head();
      if (head === undefined) {
        this.#emptied();
        return;
      }
      let written: number;
      try {
        written = fs.writeSync(this.#fd, head, 0, head.length);
      } catch (e) {
        this.#onWriteError(e as NodeJS.ErrnoException);
        return;
      }
      this.#retries = 0;
      this.#queue.consumeHead(written);
      if (written < head.length) {
        // A short write means the buffer is full: wait for room rather than collect an
        // EAGAIN (an exception, in Node) on the next try.
        this.#backpressured = true;
        this.#scheduleRetry();
        return;
      }
    }
  }

  #onWriteError(err: NodeJS.ErrnoException): void {
    if (err.code === 'EAGAIN' || err.code === 'EWOULDBLOCK' || err.code === 'EINTR') {
      this.#backpressured = true;
      this.#scheduleRetry();
      return;
    }
    const code = err.code ?? errnoName(-(err.errno ?? 0));
    const failure = new PlatformError({
      code,
      syscall: 'write',
      path: `fd ${this.#fd}`,
      description: err.message,
    });
    this.close();
    this.#onError?.(failure);
  }

  #emptied(): void {
    const due = this.#backpressured;
    this.#backpressured = false;
    this.#settleWaiters();
    if (due) this.#onDrain?.();
  }

  #settleWaiters(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const resolve of waiters) resolve();
  }

  #scheduleRetry(): void {
    const attempt = this.#retries++;
    const wait = this.#waitWritable;
    if (wait === undefined) {
      this.#retryAfter(Math.min(MAX_RETRY_DELAY_MS, 2 ** Math.max(0, attempt - 1)));
      return;
    }
    this.#waiting = true;
    wait(this.#fd, POLL_TIMEOUT_MS, (result) => {
      this.#waiting = false;
      if (this.#closed) return;
      switch (result) {
        case 'writable':
          this.#pump();
          return;
        case 'timeout':
          // The reader stalled: pause before the next poll so it does not hold a worker.
          this.#retryAfter(Math.min(MAX_IDLE_POLL_DELAY_MS, 2 ** Math.min(attempt, 8)));
          return;
        case 'unavailable':
          this.#retryAfter(Math.min(MAX_RETRY_DELAY_MS, 2 ** Math.min(attempt, 8)));
          return;
      }
    });
  }

  #retryAfter(delayMs: number): void {
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#pump();
    }, delayMs);
  }

  #cancelRetry(): void {
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }
}
