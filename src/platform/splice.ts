/**
 * The kernel's byte path: pipes, splice(2) and a readiness poller, for moving guest output
 * without it entering V8 (issue 16).
 *
 * Everything here runs on the main thread and never blocks: fds are non-blocking, splice is
 * called with SPLICE_F_NONBLOCK, and waiting is done by one `poll()` at a time on one of
 * koffi's worker threads (`FdPoller`). koffi's async calls run on libuv's threadpool, so a
 * poller per device would take a pool thread per waiting device and starve fs and dns once
 * four wait; one shared poll over every watched fd takes one thread, whatever the count.
 *
 * The C calls come from native.ts (the only file that talks to libc); this file turns their
 * results into what callers need: bytes moved, "again", end of file, or an errno name.
 */
import * as fs from 'node:fs';
import { libc } from './native.ts';
import { errnoName } from './platform.ts';

/** poll(2) event bits. */
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const F_GETFL = 3;
const F_SETFL = 4;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const FIONREAD = 0x541b;
const SPLICE_F_MOVE = 1;
const SPLICE_F_NONBLOCK = 2;
const EAGAIN = 11;
const EINTR = 4;

/** What one non-blocking transfer did. */
export type Transfer =
  /** Bytes moved (> 0). */
  | number
  /** Nothing to move now: the source is empty or the destination full. */
  | 'again'
  /** The source's writers are all gone. */
  | 'eof'
  /** Any other failure, by errno name (EPIPE, ECONNRESET, EINVAL, …). */
  | { readonly error: string };

function failure(): { readonly error: string } {
  return { error: errnoName(libc().errno()) };
}

export interface PipeEnds {
  readonly readFd: number;
  readonly writeFd: number;
}

export interface PipeOptions {
  /**
   * Make the read end non-blocking (for us) and leave the write end blocking (for a guest
   * process that must wait in write(2) while nobody reads, as QEMU's flow control wants).
   * O_NONBLOCK lives on the open file description, so it is set on one end only, after pipe2.
   */
  readonly nonBlockingRead?: boolean;
  /** Both ends non-blocking (a pipe only we use). */
  readonly nonBlocking?: boolean;
  /** F_SETPIPE_SZ; the kernel rounds up to a power of two pages. Failure (the per-user limit) leaves the default. */
  readonly size?: number;
}

/** A close-on-exec pipe. Throws (NativeUnavailable or an errno) when it cannot be made. */
export function makePipe(options: PipeOptions = {}): PipeEnds {
  const c = libc();
  const fds = Buffer.alloc(8);
  const flags = O_CLOEXEC | (options.nonBlocking === true ? O_NONBLOCK : 0);
  if (c.pipe2(fds, flags) !== 0) throw new Error(`pipe2: ${errnoName(c.errno())}`);
  const ends = { readFd: fds.readInt32LE(0), writeFd: fds.readInt32LE(4) };
  try {
    if (options.nonBlockingRead === true && options.nonBlocking !== true) setNonBlocking(ends.readFd);
    if (options.size !== undefined) c.fcntlInt(ends.readFd, F_SETPIPE_SZ, options.size);
  } catch (e) {
    fs.closeSync(ends.readFd);
    fs.closeSync(ends.writeFd);
    throw e;
  }
  return ends;
}

/** Set O_NONBLOCK on an fd's open file description. */
export function setNonBlocking(fd: number): void {
  const c = libc();
  const flags = c.fcntlInt(fd, F_GETFL, 0);
  if (flags < 0 || c.fcntlInt(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw new Error(`fcntl(O_NONBLOCK) fd ${fd}: ${errnoName(c.errno())}`);
}

/** A pipe's capacity (F_GETPIPE_SZ), or undefined if `fd` is not a pipe. */
export function pipeSize(fd: number): number | undefined {
  const n = libc().fcntlInt(fd, F_GETPIPE_SZ, 0);
  return n > 0 ? n : undefined;
}

/** Whether `fd` is a pipe or FIFO (splice needs one on one side). */
export function isPipe(fd: number): boolean {
  try {
    return fs.fstatSync(fd).isFIFO();
  } catch {
    return false;
  }
}

/** Bytes waiting to be read in a pipe or socket (FIONREAD); 0 if it cannot tell. */
export function readableBytes(fd: number): number {
  const n = libc().ioctlIntOut(fd, FIONREAD);
  return n > 0 ? n : 0;
}

/** Move up to `len` bytes from `from` to `to` (one a pipe) in the kernel, without blocking. */
export function spliceOnce(from: number, to: number, len: number): Transfer {
  for (;;) {
    const n = libc().splice(from, to, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) return n;
    if (n === 0) return 'eof';
    const errno = libc().errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) return 'again';
    return { error: errnoName(errno) };
  }
}

/** read(2) into `buf` without blocking (and without the exception fs.readSync throws on EAGAIN). */
export function readOnce(fd: number, buf: Buffer): Transfer {
  for (;;) {
    const n = libc().read(fd, buf);
    if (n > 0) return n;
    if (n === 0) return 'eof';
    const errno = libc().errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) return 'again';
    return failure();
  }
}

/** One registration with the poller: fires once, then it is gone. */
export interface Watch {
  readonly fd: number;
  readonly events: number;
  /** False once it fired or was cancelled. */
  readonly active: boolean;
}

interface WatchEntry extends Watch {
  active: boolean;
  readonly onReady: (revents: number) => void;
}

/** After a failed poll, wait this long before the next, so a persistent failure cannot spin. */
const POLL_RETRY_MS = 10;

/**
 * One poll(2) at a time on a koffi worker, over every fd someone is waiting for plus a wake
 * pipe. A watch is one-shot: it fires once with the revents (POLLHUP/POLLERR/POLLNVAL
 * included — the owner's next call sees why) and is removed. Watching a new fd, or
 * cancelling one, while a poll runs writes a byte to the wake pipe so the poll returns and
 * is re-armed with the new set; with nothing left to watch no poll is outstanding, so the
 * poller never keeps the process alive on its own.
 */
export class FdPoller {
  readonly #watches = new Set<WatchEntry>();
  #wake: PipeEnds | undefined;
  #inFlight = false;
  /** A wake byte was written and not read back yet. */
  #woken = false;
  #dispatching = false;
  #retry: NodeJS.Timeout | undefined;
  readonly #wakeByte = Buffer.from([1]);
  readonly #drainBuf = Buffer.alloc(64);
  /** Polls completed, for tests and profiles (each is one hop from the worker to the main thread). */
  polls = 0;

  watch(fd: number, events: number, onReady: (revents: number) => void): Watch {
    const w: WatchEntry = { fd, events, active: true, onReady };
    this.#watches.add(w);
    this.#arm();
    return w;
  }

  cancel(watch: Watch | undefined): void {
    if (watch === undefined || !watch.active) return;
    const w = watch as WatchEntry;
    w.active = false;
    this.#watches.delete(w);
    // The running poll still has the fd: make it return, so nothing stays armed on an fd
    // its owner may close, and an empty set leaves no call outstanding.
    if (this.#inFlight) this.#wakeUp();
  }

  /** Fds being waited for now. */
  get size(): number {
    return this.#watches.size;
  }

  #wakePipe(): PipeEnds {
    this.#wake ??= makePipe({ nonBlocking: true });
    return this.#wake;
  }

  #wakeUp(): void {
    if (this.#woken) return;
    this.#woken = true;
    try {
      fs.writeSync(this.#wakePipe().writeFd, this.#wakeByte);
    } catch {
      // A full wake pipe already wakes the poll.
    }
  }

  #arm(): void {
    if (this.#dispatching || this.#retry !== undefined) return;
    if (this.#inFlight) {
      this.#wakeUp();
      return;
    }
    if (this.#watches.size === 0) return;
    const wake = this.#wakePipe();
    const list = [...this.#watches];
    const fds = Buffer.alloc(8 * (list.length + 1));
    fds.writeInt32LE(wake.readFd, 0);
    fds.writeInt16LE(POLLIN, 4);
    list.forEach((w, i) => {
      fds.writeInt32LE(w.fd, 8 * (i + 1));
      fds.writeInt16LE(w.events, 8 * (i + 1) + 4);
    });
    this.#inFlight = true;
    try {
      libc().pollAsync(fds, list.length + 1, -1, (err, rc) => this.#done(list, fds, err, rc));
    } catch {
      // koffi's queue of async calls is full (or koffi failed): try again shortly.
      this.#inFlight = false;
      this.#retryLater();
    }
  }

  #retryLater(): void {
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#arm();
    }, POLL_RETRY_MS);
  }

  #done(list: readonly WatchEntry[], fds: Buffer, err: unknown, rc: number): void {
    this.#inFlight = false;
    this.polls++;
    const ready: Array<[WatchEntry, number]> = [];
    if (rc > 0) {
      if (fds.readUInt16LE(6) !== 0) this.#drainWake();
      list.forEach((w, i) => {
        const revents = fds.readUInt16LE(8 * (i + 1) + 6);
        if (revents === 0 || !w.active) return;
        w.active = false;
        this.#watches.delete(w);
        ready.push([w, revents]);
      });
    } else if ((err !== null && err !== undefined) || rc < 0) {
      // EINTR (a signal reached the worker) or a koffi failure: poll again, not at once.
      this.#drainWake();
      this.#retryLater();
    }
    this.#dispatching = true;
    try {
      for (const [w, revents] of ready) w.onReady(revents);
    } finally {
      this.#dispatching = false;
    }
    this.#arm();
  }

  #drainWake(): void {
    this.#woken = false;
    const fd = this.#wake?.readFd;
    if (fd === undefined) return;
    while (readOnce(fd, this.#drainBuf) === this.#drainBuf.length) {
      // More wake bytes than the buffer: keep reading until the pipe is empty.
    }
  }
}

let shared: FdPoller | undefined;

/** The process's poller (one poll outstanding at most, whatever the number of devices). */
export function fdPoller(): FdPoller {
  shared ??= new FdPoller();
  return shared;
}
