/**
 * Ordered, non-blocking writer for fds that libuv cannot wrap as sockets — chiefly pty
 * masters (net.Socket refuses them with ERR_INVALID_FD_TYPE).
 *
 * Why not tty.WriteStream: libuv treats a pty master as a tty it cannot reopen and falls
 * back to blocking writes; with a full pty buffer that busy-spins the whole process, and
 * WriteStream also clears O_NONBLOCK on the shared open file description (npm-probe.md §1).
 *
 * Instead: fs.write on the O_NONBLOCK fd, one write in flight at a time. EAGAIN means the
 * kernel buffer is full; we retry later. There is no readiness notification Node exposes
 * for such an fd, so retries back off: a few setImmediate turns (a reader draining the pty
 * usually frees room within microseconds), then timers doubling from 1 ms up to
 * MAX_RETRY_DELAY_MS, reset on every successful write.
 *
 * Drop policy: at most `maxQueuedBytes` wait in user space. A write that does not fit is
 * cut at the limit; the tail is dropped, counted in `droppedBytes`, and the return value
 * says how much was taken (like a partial write(2)), so the caller can apply QEMU's
 * frontend policy (retry later, or discard). Bytes already accepted are never dropped
 * unless close() is called or a hard write error occurs.
 */
import * as fs from 'node:fs';
import {
  PlatformError,
  errnoName,
  type ByteWriter,
  type ByteWriterOptions,
} from './platform.ts';
import { ByteQueue } from './byte-queue.ts';
// A pty's ~64 KiB buffer drains in well under a millisecond when its reader is busy, so
// retry on the next turns for a while before falling back to (≥ 1 ms) timers; measured
// with `npm run bench -- --only pty`.
const IMMEDIATE_RETRIES = 64;
const MAX_RETRY_DELAY_MS = 4;

export class FdWriter implements ByteWriter {
  readonly #fd: number;
  readonly #onDrain: (() => void) | undefined;
  readonly #onError: ((err: PlatformError) => void) | undefined;
  readonly #queue: ByteQueue;
  #inFlight = false;
  #retries = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryImmediate: NodeJS.Immediate | undefined;
  /** Set when EAGAIN or a drop happened since the queue was last empty: onDrain is due. */
  #backpressured = false;
  #closed = false;
  #drainWaiters: Array<() => void> = [];

  constructor(fd: number, options: ByteWriterOptions = {}) {
    this.#queue = new ByteQueue(options.maxQueuedBytes);
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
    if (this.#closed || this.#inFlight || this.#retryPending()) return;
    const head = this.#queue.head();
    if (head === undefined) return;
    this.#inFlight = true;
    fs.write(this.#fd, head, 0, head.length, null, (err, written) => {
      this.#inFlight = false;
      if (this.#closed) return;
      if (err !== null) {
        this.#onWriteError(err);
        return;
      }
      this.#retries = 0;
      this.#queue.consumeHead(written);
      if (this.#queue.queuedBytes === 0) {
        this.#emptied();
      } else {
        this.#pump();
      }
    });
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

  #retryPending(): boolean {
    return this.#retryTimer !== undefined || this.#retryImmediate !== undefined;
  }

  #scheduleRetry(): void {
    const attempt = this.#retries++;
    const fire = (): void => {
      this.#retryTimer = undefined;
      this.#retryImmediate = undefined;
      this.#pump();
    };
    if (attempt < IMMEDIATE_RETRIES) {
      this.#retryImmediate = setImmediate(fire);
    } else {
      const delay = Math.min(MAX_RETRY_DELAY_MS, 2 ** (attempt - IMMEDIATE_RETRIES));
      this.#retryTimer = setTimeout(fire, delay);
    }
  }

  #cancelRetry(): void {
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    if (this.#retryImmediate !== undefined) clearImmediate(this.#retryImmediate);
    this.#retryTimer = undefined;
    this.#retryImmediate = undefined;
  }
}
