/**
 * The platform seam: everything chardev needs from the OS that Node does not offer
 * (ptys, termios, ioctls, FIFOs) goes through this interface, so the runtime core can be
 * unit-tested against the in-memory fake and only linux.ts touches the real kernel.
 *
 * All calls are synchronous because the underlying syscalls are: none of them can block
 * (fds are opened O_NONBLOCK, poll uses a zero timeout).
 */
import { constants } from 'node:os';

const errnoNumbers: Readonly<Record<string, number>> = constants.errno;

/** A pty master we hold for the lifetime of a chardev, plus the slave path clients open. */
export interface PtyHandle {
  /** Non-blocking, close-on-exec master fd. Close with `Platform.close`. */
  readonly masterFd: number;
  /** `/dev/pts/N` on Linux. */
  readonly slavePath: string;
}

export type Parity = 'none' | 'even' | 'odd';

/** Line settings for `setSerialRaw`; defaults are QEMU's 115200 8N1. */
export interface SerialLine {
  readonly dataBits?: 5 | 6 | 7 | 8;
  readonly parity?: Parity;
  readonly stopBits?: 1 | 2;
}

/** A terminal's size in character cells (struct winsize without the pixel fields). */
export interface WindowSize {
  readonly cols: number;
  readonly rows: number;
}

/**
 * What a terminal's line discipline does when a BREAK arrives (termios(3)): its input flags
 * IGNBRK, BRKINT, PARMRK and its local flag NOFLSH.
 */
export interface BreakFlags {
  /** Ignore the BREAK. */
  readonly ignbrk: boolean;
  /** Flush the queues (unless `noflsh`) and send SIGINT to the foreground process group. */
  readonly brkint: boolean;
  /** Neither of those: the BREAK reads as `\377 \0 \0` with PARMRK, else as one NUL byte. */
  readonly parmrk: boolean;
  readonly noflsh: boolean;
}

/** Called with each chunk a reader receives; the Buffer is owned by the callee. */
export interface ByteReaderHandlers {
  readonly onData: (chunk: Buffer) => void;
  /**
   * The peer went away (pty: the last slave fd closed, read gave EIO). The reader is finished;
   * the fd it was created from is still open, so a new reader can be made on reconnect.
   */
  readonly onHangup?: () => void;
  /** Any other read error. The reader is finished. */
  readonly onError?: (err: PlatformError) => void;
}

/** An active reader on an fd. One-shot: after hangup/error/close make a new one. */
export interface ByteReader {
  /** Stop delivering data (for can_read-style backpressure); bytes wait in the kernel. */
  pause(): void;
  resume(): void;
  /** Stop reading and release the reader's own resources (never the caller's fd). */
  close(): void;
  readonly closed: boolean;
}

export interface ByteWriterOptions {
  /**
   * Most bytes held in user space while the fd says EAGAIN. Writes that would go past
   * this are cut at the limit and the rest dropped (see ByteWriter.write). Default 1 MiB.
   */
  readonly maxQueuedBytes?: number;
  /** Called once the queue empties after bytes had to wait. */
  readonly onDrain?: () => void;
  /** Called on a write error other than EAGAIN; the writer is closed afterwards. */
  readonly onError?: (err: PlatformError) => void;
}

/** A non-blocking, ordered writer on an fd it does not own. */
export interface ByteWriter {
  /**
   * Queue `data` for writing; returns how many of its bytes were accepted (all, unless the
   * queue limit was hit, in which case the tail beyond the limit is dropped — like a
   * partial write(2), the caller decides whether to retry or discard). Returns 0 once closed.
   */
  write(data: Uint8Array): number;
  /** Bytes accepted but not yet handed to the kernel. */
  readonly queuedBytes: number;
  /** Bytes refused because the queue was full, since creation. */
  readonly droppedBytes: number;
  /** Resolves when the queue is empty (immediately if it already is, or once closed). */
  drained(): Promise<void>;
  /** Discard the queue and stop retrying. Does not close the fd. */
  close(): void;
  readonly closed: boolean;
}

export interface Platform {
  /** Its fds are the kernel's (not a test double's numbers): guest output may be spliced to them. */
  readonly realFds?: boolean;
  /**
   * Allocate a pty: master opened O_RDWR|O_NOCTTY|O_NONBLOCK, unlocked, termios raw
   * (like QEMU), and the slave opened and closed once so that "no client" reads as POLLHUP.
   */
  openPty(): PtyHandle;
  /** True when some process has the slave open (QEMU's pty_chr_state: poll, no POLLHUP). */
  ptyHasReader(masterFd: number): boolean;
  /**
   * Bytes written to the master that the slave's reader has not read yet (FIONREAD on
   * the slave). Closing the master discards them, so a graceful stop waits for 0.
   */
  ptyUnreadBytes(slavePath: string): number;
  /**
   * Set a terminal's size (TIOCSWINSZ). On a pty master it is the slave's size, and the
   * kernel sends SIGWINCH to the slave's foreground process group when it changes.
   */
  setWindowSize(fd: number, size: WindowSize): void;
  /** A terminal's size (TIOCGWINSZ); 0×0 when nobody set one. */
  windowSize(fd: number): WindowSize;
  /**
   * The BREAK handling the program on a pty's slave asked for (tcgetattr on the master: the
   * kernel answers termios requests on a master with its slave's settings).
   */
  ptyBreakFlags(masterFd: number): BreakFlags;
  /**
   * Send SIGINT to the foreground process group of a pty's slave (TIOCSIG on the master), as
   * the slave's line discipline does for ^C or a BREAK with BRKINT.
   */
  signalPtyForeground(masterFd: number): void;
  /**
   * Discard what is queued in both directions of a pty (tcflush TCIOFLUSH on the master):
   * input its slave has not read, output the master has not read.
   */
  flushPty(masterFd: number): void;
  /**
   * Bytes a socket has sent that its peer has not read yet (TIOCOUTQ/SIOCOUTQ: TCP's unsent
   * and unacknowledged bytes, a UNIX socket's bytes still in the peer's queue).
   */
  socketUnreadBytes(fd: number): number;
  /**
   * Open a device or FIFO the way QEMU's serial/parallel/pipe backends do:
   * read-write, non-blocking, no controlling tty, close-on-exec.
   */
  openDevice(path: string): number;
  dup(fd: number): number;
  close(fd: number): void;
  /** Create a FIFO; `EEXIST` if the path exists. */
  mkfifo(path: string, mode: number): void;
  isatty(fd: number): boolean;
  /**
   * Raw 8N1 (by default) with CLOCAL|CREAD and no flow control, speed `baud` in both
   * directions. Throws ENOTTY on a non-tty and EINVAL on a speed with no B-constant.
   * QEMU ignores these failures for the serial backend; callers that mimic it must too.
   */
  setSerialRaw(fd: number, baud?: number, line?: SerialLine): void;
  /** PPCLAIM succeeds (it is released again at once). */
  isParallelPort(fd: number): boolean;
  /** PPCLAIM; throws `not a parallel port: <strerror>` (QEMU's words) on failure. */
  claimParallel(fd: number): void;
  /** PPRELEASE. */
  releaseParallel(fd: number): void;
  /**
   * write(2) to a claimed parallel port (ppdev): the kernel runs the IEEE 1284
   * compatibility-mode handshake for each byte, at most 1024 bytes per call. Returns how
   * many bytes the peripheral took; 0 while it is busy (BUSY held, paper out, offline) or
   * on EAGAIN. Throws PlatformError on any other failure (EIO, ENODEV: the port is gone).
   */
  writeParallel(fd: number, data: Uint8Array): number;
  /**
   * read(2) from a claimed parallel port: ppdev negotiates a reverse mode (byte or nibble)
   * with the peripheral and reads what it offers. An empty Buffer when it has nothing now
   * (EAGAIN); throws PlatformError, `EIO` when the peripheral refuses the IEEE 1284
   * negotiation (it has no reverse channel).
   */
  readParallel(fd: number, max: number): Buffer;
  /**
   * Reader over a pty master that survives slave hang-ups (reads a dup of it). Open it only
   * while ptyHasReader() is true: with no slave open, the first read fails with EIO at once
   * and the reader reports a hang-up.
   */
  openPtyReader(masterFd: number, handlers: ByteReaderHandlers): ByteReader;
  /** Queueing writer for an O_NONBLOCK fd that libuv cannot wrap as a socket. */
  openWriter(fd: number, options?: ByteWriterOptions): ByteWriter;
}

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(errnoNumbers)) {
  // os.constants.errno has a few aliases (EWOULDBLOCK = EAGAIN); keep the first, canonical one.
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** Errno number → name such as 'ENOTTY'; 'EUNKNOWN' when Node does not know it. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? 'EUNKNOWN';
}

/** Errno number for a name such as 'EAGAIN', or undefined. */
export function errnoNumber(code: string): number | undefined {
  return Object.hasOwn(errnoNumbers, code) ? errnoNumbers[code] : undefined;
}

export interface PlatformErrorInit {
  /** Errno name, e.g. 'ENOTTY'. Stable: tests and callers switch on it. */
  readonly code: string;
  /** The syscall (or libc call) that failed, e.g. 'ioctl(PPCLAIM)'. */
  readonly syscall: string;
  /** Path involved, when known. */
  readonly path?: string;
  /** Human text for the errno, e.g. 'Inappropriate ioctl for device'. */
  readonly description: string;
  /** Overrides the default message `<syscall> <path>: <description>`. */
  readonly message?: string;
}

/** An OS-level failure with a stable errno `code`, shaped like Node's own system errors. */
export class PlatformError extends Error {
  readonly code: string;
  /** Positive C errno value (Node's own errors use the negated value). */
  readonly errno: number;
  readonly syscall: string;
  readonly path: string | undefined;
  readonly description: string;

  constructor(init: PlatformErrorInit) {
    super(init.message ?? `${init.syscall}${init.path === undefined ? '' : ` ${init.path}`}: ${init.description}`);
    this.name = 'PlatformError';
    this.code = init.code;
    this.errno = errnoNumber(init.code) ?? 0;
    this.syscall = init.syscall;
    this.path = init.path;
    this.description = init.description;
  }
}
