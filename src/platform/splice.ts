/**
 * Pipes for the kernel's byte path: made, sized and inspected here on the main thread; the
 * bytes themselves are spliced by the data-plane thread (data-plane.ts).
 *
 * The C calls come from native.ts (the only file that talks to libc).
 */
import * as fs from 'node:fs';
import { libc } from './native.ts';
import { errnoName } from './platform.ts';
import { FIONREAD, F_GETFL, F_GETPIPE_SZ, F_SETFL, F_SETPIPE_SZ, O_NONBLOCK } from './linux-abi.ts';

const O_CLOEXEC = 0o2000000;

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

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = O_CLOEXEC;

/**
 * A close-on-exec AF_UNIX stream socketpair, both ends blocking (O_NONBLOCK is per end: a
 * caller sets it on its own). `readFd`, `writeFd` name the ends by the use a caller makes
 * of them; the kernel makes no difference. Throws (NativeUnavailable or an errno).
 */
export function makeSocketPair(): PipeEnds {
  const c = libc();
  const fds = Buffer.alloc(8);
  if (c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) !== 0) throw new Error(`socketpair: ${errnoName(c.errno())}`);
  return { readFd: fds.readInt32LE(0), writeFd: fds.readInt32LE(4) };
}

/** memfd_create(2)'s close-on-exec flag. */
const MFD_CLOEXEC = 1;

/**
 * An anonymous close-on-exec file in memory (memfd_create(2)), for bytes a data-plane run
 * keeps beside its client without a disk behind them. Throws (NativeUnavailable or an errno).
 */
export function makeMemoryFile(name: string): number {
  const c = libc();
  const fd = c.memfdCreate(name, MFD_CLOEXEC);
  if (fd < 0) throw new Error(`memfd_create: ${errnoName(c.errno())}`);
  return fd;
}

/** Whether `fd` is a socket. */
export function isSocket(fd: number): boolean {
  try {
    return fs.fstatSync(fd).isSocket();
  } catch {
    return false;
  }
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
  return Math.max(n, 0);
}
