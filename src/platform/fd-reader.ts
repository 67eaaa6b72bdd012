/**
 * Reader for a pty master that survives the client going away.
 *
 * tty.ReadStream is the only epoll-driven, threadpool-free way Node reads a pty master
 * (net.Socket refuses the fd; fs streams either fail with EAGAIN or park a threadpool
 * thread in read()). But when the last slave fd closes, read(master) fails with EIO and
 * the stream closes *its* fd — which would destroy the pty if it were the master itself.
 * So the stream reads a dup: on EIO only the dup dies, the master and /dev/pts/N stay, and
 * the caller makes a fresh reader when the next client connects (npm-probe.md §1).
 *
 * The stream is never written to: writes through a tty stream on a master are blocking
 * (see fd-writer.ts).
 *
 * Its end is not trusted: libuv reports end-of-file as soon as poll says POLLHUP after a read
 * shorter than its buffer, and a master hands out a slave's output a few KiB per read, so
 * that "end" comes while KiBs the slave wrote before closing are still in the kernel. At the
 * hang-up the master is read out directly until the kernel itself says EIO (it does so only
 * once nothing is left), before the caller hears of it.
 */
import * as fs from 'node:fs';
import * as tty from 'node:tty';
import { PlatformError, errnoName, type ByteReader, type ByteReaderHandlers } from './platform.ts';
import { libc } from './native.ts';
import { POLLIN } from './linux-abi.ts';

const REST_CAP_BYTES = 1024 * 1024;

export class PtyReader implements ByteReader {
  readonly #stream: tty.ReadStream;
  readonly #handlers: ByteReaderHandlers;
  #closed = false;

  /** `dup` is injected so the fd plumbing stays in the Platform implementation. */
  constructor(masterFd: number, handlers: ByteReaderHandlers, dup: (fd: number) => number) {
    this.#handlers = handlers;
    const fd = dup(masterFd);
    try {
      this.#stream = new tty.ReadStream(fd);
    } catch (err) {
      fs.closeSync(fd);
      throw toPlatformError(err, masterFd);
    }
    // Binary data: no setEncoding, chunks arrive as Buffers.
    this.#stream.on('data', (chunk: Buffer) => {
      if (!this.#closed) this.#handlers.onData(chunk);
    });
    this.#stream.on('error', (err: Error) => {
      if (this.#closed) return;
      this.#finish();
      if ((err as NodeJS.ErrnoException).code === 'EIO') {
        this.#readRest(masterFd);
        this.#handlers.onHangup?.();
      } else {
        this.#handlers.onError?.(toPlatformError(err, masterFd));
      }
    });
    // A master does not normally see EOF (hang-up is EIO), but treat one as a hang-up too.
    this.#stream.on('end', () => {
      if (this.#closed) return;
      this.#finish();
      this.#readRest(masterFd);
      this.#handlers.onHangup?.();
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  pause(): void {
    if (!this.#closed) this.#stream.pause();
  }

  resume(): void {
    if (!this.#closed) this.#stream.resume();
  }

  close(): void {
    if (this.#closed) return;
    this.#finish();
  }

  /**
   * What the slave wrote before it closed and the stream did not read. Bounded by the pty's
   * own buffers (tens of KiB); the cap only guards against a slave reopened and written to
   * as fast as this loop reads. The master is non-blocking, so EAGAIN ends it too.
   */
  #readRest(masterFd: number): void {
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (let total = 0; total < REST_CAP_BYTES; ) {
      if (!readable(masterFd)) return;
      let n: number;
      try {
        n = fs.readSync(masterFd, buf, 0, buf.length, null);
      } catch {
        return; // EIO: nothing left; EAGAIN: the slave is open again; anything else: gone.
      }
      if (n <= 0) return;
      total += n;
      // A copy: the devices may keep the chunk.
      this.#handlers.onData(Buffer.from(buf.subarray(0, n)));
    }
  }

  /** Marks the reader done and closes the dup (destroy is idempotent after an error). */
  #finish(): void {
    this.#closed = true;
    this.#stream.destroy();
  }
}

/**
 * Whether a read of the master returns at once (bytes, or EIO once the slave is gone). A
 * data-plane run alone on the thread clears O_NONBLOCK on the master's shared description
 * while it writes (data-plane-worker.ts `enterBlocking`); should a new reader open the slave
 * between the hang-up and this read, a read of the then blocking master with nothing in it
 * would wait for that reader to type. Without the native calls there is no such run, and
 * the master's O_NONBLOCK answers instead.
 */
function readable(masterFd: number): boolean {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(masterFd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  try {
    return libc().poll(pfd, 1, 0) !== 0;
  } catch {
    return true;
  }
}

function toPlatformError(err: unknown, masterFd: number): PlatformError {
  const e = err as NodeJS.ErrnoException;
  return new PlatformError({
    code: e.code ?? errnoName(-(e.errno ?? 0)),
    syscall: e.syscall ?? 'read',
    path: `pty master fd ${masterFd}`,
    description: e.message,
  });
}
