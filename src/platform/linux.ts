/**
 * The real Platform for Linux: Node's fs for open/close, koffi (via native.ts) for what
 * Node lacks. Every failure becomes a PlatformError naming the call and the path.
 */
import * as fs from 'node:fs';
import * as tty from 'node:tty';
import { LINUX_BAUD_CONSTANTS } from './baud.ts';
import { FdWriter, type WaitWritable } from './fd-writer.ts';
import { PtyReader } from './fd-reader.ts';
import { TERMIOS_SIZE, libc } from './native.ts';
import { FIONREAD, POLLERR, POLLHUP, POLLNVAL, POLLOUT } from './linux-abi.ts';
import {
  PlatformError,
  errnoName,
  type BreakFlags,
  type ByteReader,
  type ByteReaderHandlers,
  type ByteWriter,
  type ByteWriterOptions,
  type Platform,
  type PtyHandle,
  type SerialLine,
  type WindowSize,
} from './platform.ts';

const { O_RDWR, O_NOCTTY, O_NONBLOCK } = fs.constants;
/** Node adds O_CLOEXEC itself, so none of these fds leak into child processes. */
const DEVICE_FLAGS = O_RDWR | O_NOCTTY | O_NONBLOCK;

const TCSANOW = 0;
/** TIOCOUTQ, which is SIOCOUTQ on a socket. */
const TIOCOUTQ = 0x5411;
// Terminal ioctls (asm-generic/ioctls.h).
const TIOCGWINSZ = 0x5413;
const TIOCSWINSZ = 0x5414;
/** _IOW('T', 0x36, int): the signal is the argument itself, not a pointer to it. */
const TIOCSIG = 0x40045436;
const SIGINT = 2;
/** tcflush's selector for both queues. */
const TCIOFLUSH = 2;
// ppdev ioctls: _IO('p', 0x8b) and _IO('p', 0x8c) from linux/ppdev.h.
const PPCLAIM = 0x708b;
const PPRELEASE = 0x708c;

// struct termios field offsets and c_cflag bits (asm-generic termbits, see baud.ts).
const C_CFLAG = 8;
const CSIZE = 0o60;
const CS5 = 0o0;
const CS6 = 0o20;
const CS7 = 0o40;
const CS8 = 0o60;
const CSTOPB = 0o100;
const CREAD = 0o200;
const PARENB = 0o400;
const PARODD = 0o1000;
const CLOCAL = 0o4000;
const CRTSCTS = 0o20000000000;
// c_iflag (offset 0) and c_lflag (offset 12) bits a BREAK depends on.
const C_IFLAG = 0;
const C_LFLAG = 12;
const IGNBRK = 0o1;
const BRKINT = 0o2;
const PARMRK = 0o10;
const NOFLSH = 0o200;
const CHAR_SIZE_BITS: Readonly<Record<5 | 6 | 7 | 8, number>> = { 5: CS5, 6: CS6, 7: CS7, 8: CS8 };

/** Architectures whose termbits differ from asm-generic; we refuse rather than guess. */
const FOREIGN_TERMBITS_ARCHS: ReadonlySet<string> = new Set(['ppc', 'ppc64', 'mips', 'mipsel', 's390', 's390x']);

/** FdWriter's wait for room: poll(POLLOUT) on a koffi worker thread. */
const waitWritable: WaitWritable = (fd, timeoutMs, done) => {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLOUT, 4);
  try {
    libc().pollAsync(pfd, 1, timeoutMs, (err, rc) => {
      if (err !== null && err !== undefined) return done('unavailable');
      if (rc === 0) return done('timeout');
      const revents = pfd.readUInt16LE(6);
      // A hung-up pty or a closed fd polls "ready" at once: waiting on it would spin.
      done(rc > 0 && (revents & POLLOUT) !== 0 && (revents & (POLLHUP | POLLERR | POLLNVAL)) === 0 ? 'writable' : 'unavailable');
    });
  } catch {
    done('unavailable');
  }
};

export class LinuxPlatform implements Platform {
  readonly realFds = true;
  openPty(): PtyHandle {
    const masterFd = this.#open('/dev/ptmx');
    try {
      const c = libc();
      if (c.unlockpt(masterFd) !== 0) throw this.#errno('unlockpt', '/dev/ptmx');
      const buf = Buffer.alloc(128);
      // ptsname_r returns the error number itself instead of setting errno.
      const rc = c.ptsname_r(masterFd, buf, buf.length);
      if (rc !== 0) throw this.#fromErrno(rc, 'ptsname_r', '/dev/ptmx');
      const end = buf.indexOf(0);
      const slavePath = buf.subarray(0, end < 0 ? buf.length : end).toString('utf8');
      // Setting termios on the master changes the shared line discipline, i.e. the
      // slave's settings too; QEMU puts its pty raw so bytes pass unchanged.
      this.#makeRaw(masterFd, slavePath);
      // Open and close the slave once, as QEMU does with the slave openpty() returns:
      // until a slave has been closed the kernel reports no POLLHUP, which would make
      // ptyHasReader say "client present" for a pty nobody ever opened.
      fs.closeSync(this.#open(slavePath));
      return { masterFd, slavePath };
    } catch (err) {
      fs.closeSync(masterFd);
      throw err;
    }
  }

  ptyUnreadBytes(slavePath: string): number {
    // O_NOCTTY: looking must not make it our controlling terminal; O_NONBLOCK: never wait.
    const fd = fs.openSync(slavePath, fs.constants.O_RDWR | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
    try {
      const n = libc().ioctlIntOut(fd, FIONREAD);
      if (n < 0) throw this.#errno('ioctl(FIONREAD)', slavePath);
      return n;
    } finally {
      fs.closeSync(fd);
    }
  }

  socketUnreadBytes(fd: number): number {
    const n = libc().ioctlIntOut(fd, TIOCOUTQ);
    if (n < 0) throw this.#errno('ioctl(SIOCOUTQ)', fdPath(fd));
    return n;
  }

  setWindowSize(fd: number, size: WindowSize): void {
    // struct winsize: unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel (native order).
    const ws = Buffer.alloc(8);
    const clamp = (n: number): number => Math.max(0, Math.min(0xffff, Math.trunc(n)));
    ws.writeUInt16LE(clamp(size.rows), 0);
    ws.writeUInt16LE(clamp(size.cols), 2);
    if (libc().ioctlBuffer(fd, TIOCSWINSZ, ws) !== 0) throw this.#errno('ioctl(TIOCSWINSZ)', fdPath(fd));
  }

  windowSize(fd: number): WindowSize {
    const ws = Buffer.alloc(8);
    if (libc().ioctlBuffer(fd, TIOCGWINSZ, ws) !== 0) throw this.#errno('ioctl(TIOCGWINSZ)', fdPath(fd));
    return { rows: ws.readUInt16LE(0), cols: ws.readUInt16LE(2) };
  }

  ptyBreakFlags(masterFd: number): BreakFlags {
    // No need to open the slave (which, closed again after its program has gone, would be a
    // hang-up for the master's reader): termios requests on a master are its slave's.
    const t = Buffer.alloc(TERMIOS_SIZE);
    if (libc().tcgetattr(masterFd, t) !== 0) throw this.#errno('tcgetattr', fdPath(masterFd));
    const iflag = t.readUInt32LE(C_IFLAG);
    const lflag = t.readUInt32LE(C_LFLAG);
    return { ignbrk: (iflag & IGNBRK) !== 0, brkint: (iflag & BRKINT) !== 0, parmrk: (iflag & PARMRK) !== 0, noflsh: (lflag & NOFLSH) !== 0 };
  }

  signalPtyForeground(masterFd: number): void {
    if (libc().ioctlIntIn(masterFd, TIOCSIG, SIGINT) !== 0) throw this.#errno('ioctl(TIOCSIG)', fdPath(masterFd));
  }

  flushPty(masterFd: number): void {
    if (libc().tcflush(masterFd, TCIOFLUSH) !== 0) throw this.#errno('tcflush', fdPath(masterFd));
  }

  ptyHasReader(masterFd: number): boolean {
    const pfd = Buffer.alloc(8);
    pfd.writeInt32LE(masterFd, 0);
    pfd.writeInt16LE(POLLOUT, 4);
    // QEMU's pty_chr_state check: zero timeout, so this never blocks.
    const rc = libc().poll(pfd, 1, 0);
    if (rc < 0) throw this.#errno('poll', fdPath(masterFd));
    const revents = pfd.readUInt16LE(6);
    if ((revents & POLLNVAL) !== 0) {
      throw new PlatformError({
        code: 'EBADF',
        syscall: 'poll',
        path: `fd ${masterFd}`,
        description: 'Bad file descriptor',
      });
    }
    return (revents & POLLHUP) === 0;
  }

  openDevice(path: string): number {
    return this.#open(path);
  }

  dup(fd: number): number {
    // Close-on-exec like every fd Node opens, so copies never leak into child processes.
    const copy = libc().dupCloexec(fd);
    if (copy < 0) throw this.#errno('fcntl(F_DUPFD_CLOEXEC)', fdPath(fd));
    return copy;
  }

  close(fd: number): void {
    try {
      fs.closeSync(fd);
    } catch (err) {
      throw fromNodeError(err, 'close', `fd ${fd}`);
    }
  }

  mkfifo(path: string, mode: number): void {
    if (libc().mkfifo(path, mode) !== 0) throw this.#errno('mkfifo', path);
  }

  isatty(fd: number): boolean {
    return tty.isatty(fd);
  }

  setSerialRaw(fd: number, baud = 115200, line: SerialLine = {}): void {
    const path = fdPath(fd);
    if (FOREIGN_TERMBITS_ARCHS.has(process.arch)) {
      throw new PlatformError({
        code: 'ENOSYS',
        syscall: 'tcsetattr',
        path,
        description: `termios layout of ${process.arch} is not supported`,
      });
    }
    const speed = LINUX_BAUD_CONSTANTS.get(baud);
    if (speed === undefined) {
      throw new PlatformError({
        code: 'EINVAL',
        syscall: 'cfsetspeed',
        path,
        description: `unsupported baud rate ${baud}`,
      });
    }
    const c = libc();
    const t = Buffer.alloc(TERMIOS_SIZE);
    if (c.tcgetattr(fd, t) !== 0) throw this.#errno('tcgetattr', path);
    // cfmakeraw clears exactly QEMU's tty_serial_init input/output/local flags
    // (IGNBRK..IXON, OPOST, ECHO|ECHONL|ICANON|ISIG|IEXTEN), sets CS8, VMIN=1, VTIME=0.
    c.cfmakeraw(t);
    t.writeUInt32LE(serialCflag(t.readUInt32LE(C_CFLAG), line), C_CFLAG);
    if (c.cfsetispeed(t, speed) !== 0) throw this.#errno('cfsetispeed', path);
    if (c.cfsetospeed(t, speed) !== 0) throw this.#errno('cfsetospeed', path);
    if (c.tcsetattr(fd, TCSANOW, t) !== 0) throw this.#errno('tcsetattr', path);
  }

  isParallelPort(fd: number): boolean {
    const c = libc();
    if (c.ioctlNoArg(fd, PPCLAIM) !== 0) return false;
    c.ioctlNoArg(fd, PPRELEASE);
    return true;
  }

  claimParallel(fd: number): void {
    if (libc().ioctlNoArg(fd, PPCLAIM) === 0) return;
    const err = libc().errno();
    const description = libc().strerror(err);
    throw new PlatformError({
      code: errnoName(err),
      syscall: 'ioctl(PPCLAIM)',
      path: fdPath(fd),
      description,
      // QEMU's exact words (qemu_chr_open_pp_fd), then where it happened.
      message: `not a parallel port: ${description} (ioctl PPCLAIM on ${fdPath(fd)})`,
    });
  }

  releaseParallel(fd: number): void {
    if (libc().ioctlNoArg(fd, PPRELEASE) !== 0) throw this.#errno('ioctl(PPRELEASE)', fdPath(fd));
  }

  writeParallel(fd: number, data: Uint8Array): number {
    try {
      return fs.writeSync(fd, data, 0, data.length);
    } catch (err) {
      if (isAgain(err)) return 0;
      throw fromNodeError(err, 'write', fdPath(fd));
    }
  }

  readParallel(fd: number, max: number): Buffer {
    const buf = Buffer.allocUnsafe(max);
    let n: number;
    try {
      n = fs.readSync(fd, buf, 0, max, null);
    } catch (err) {
      if (isAgain(err)) return Buffer.alloc(0);
      throw fromNodeError(err, 'read', fdPath(fd));
    }
    return buf.subarray(0, n);
  }

  openPtyReader(masterFd: number, handlers: ByteReaderHandlers): ByteReader {
    return new PtyReader(masterFd, handlers, (fd) => this.dup(fd));
  }

  openWriter(fd: number, options?: ByteWriterOptions): ByteWriter {
    return new FdWriter(fd, options, waitWritable);
  }

  #open(path: string): number {
    try {
      return fs.openSync(path, DEVICE_FLAGS);
    } catch (err) {
      throw fromNodeError(err, 'open', path);
    }
  }

  #makeRaw(fd: number, path: string): void {
    const c = libc();
    const t = Buffer.alloc(TERMIOS_SIZE);
    if (c.tcgetattr(fd, t) !== 0) throw this.#errno('tcgetattr', path);
    c.cfmakeraw(t);
    if (c.tcsetattr(fd, TCSANOW, t) !== 0) throw this.#errno('tcsetattr', path);
  }

  /** Builds the error from the errno of the libc call that just failed. */
  #errno(syscall: string, path: string): PlatformError {
    return this.#fromErrno(libc().errno(), syscall, path);
  }

  #fromErrno(err: number, syscall: string, path: string): PlatformError {
    return new PlatformError({ code: errnoName(err), syscall, path, description: libc().strerror(err) });
  }
}

/**
 * c_cflag for a raw serial line: QEMU's tty_serial_init clears CSIZE|PARENB|PARODD|CRTSCTS|
 * CSTOPB and sets the requested size, parity and stop bits; we also set CLOCAL|CREAD so a
 * passthrough without carrier still receives. Pure, so it is testable without hardware
 * (a pty's kernel driver forces CS8 and clears PARENB, hiding these bits from stty).
 */
export function serialCflag(cflag: number, line: SerialLine = {}): number {
  let c = cflag & ~(CSIZE | PARENB | PARODD | CRTSCTS | CSTOPB);
  c |= CHAR_SIZE_BITS[line.dataBits ?? 8];
  if (line.parity === 'even') c |= PARENB;
  if (line.parity === 'odd') c |= PARENB | PARODD;
  if (line.stopBits === 2) c |= CSTOPB;
  c |= CLOCAL | CREAD;
  return c >>> 0;
}

/** Best-effort path of an fd for error messages ('/dev/null', '/dev/pts/3'), else 'fd N'. */
function fdPath(fd: number): string {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return `fd ${fd}`;
  }
}

function isAgain(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EAGAIN' || code === 'EWOULDBLOCK';
}

function fromNodeError(err: unknown, syscall: string, path: string): PlatformError {
  const e = err as NodeJS.ErrnoException;
  const code = e.code ?? errnoName(-(e.errno ?? 0));
  // Node's message is "ENOENT: no such file or directory, open '/x'"; keep the middle part.
  const description = /^[A-Z0-9]+: ([^,]*)/.exec(e.message)?.[1] ?? e.message;
  return new PlatformError({ code, syscall, path, description });
}
