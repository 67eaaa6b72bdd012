/**
 * The only file that talks to libc through koffi.
 *
 * Everything is bound on first use, one symbol at a time: importing the platform layer
 * loads no native addon, a machine without koffi's prebuilt binary still runs every device
 * that needs none (null, file, stdio, tcp, unix, udp, vc), and a symbol one C library lacks
 * (musl has no `mallopt`) fails only the call that needs it, with a line saying so.
 *
 * The C library is chosen at run time, the way koffi picks its own binary: the program
 * interpreter of the running Node (its ELF `PT_INTERP`) says which libc this process has —
 * `/lib64/ld-linux-x86-64.so.2` is glibc (`libc.so.6`), `/lib/ld-musl-x86_64.so.1` is musl,
 * whose dynamic loader is also its libc.
 *
 * Every wrapper returns the raw C result plus errno; turning that into a PlatformError is
 * linux.ts's job, because only it knows the path and the QEMU wording.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type * as KoffiModule from 'koffi';

type Koffi = typeof KoffiModule;
type Library = ReturnType<Koffi['load']>;
type Bound = ReturnType<Library['func']>;

/** The libc functions we use, typed for TypeScript. `errno` must be read right after a call. */
export interface Libc {
  unlockpt(fd: number): number;
  /** Returns 0 or an errno value (not -1): ptsname_r reports errors through its return. */
  ptsname_r(fd: number, buf: Buffer, len: number): number;
  tcgetattr(fd: number, termios: Buffer): number;
  tcsetattr(fd: number, optionalActions: number, termios: Buffer): number;
  cfmakeraw(termios: Buffer): void;
  cfsetispeed(termios: Buffer, speed: number): number;
  cfsetospeed(termios: Buffer, speed: number): number;
  /** `fds` is an array of `struct pollfd` (8 bytes each: int fd, short events, short revents). */
  poll(fds: Buffer, nfds: number, timeoutMs: number): number;
  /**
   * poll() on one of koffi's worker threads; `done` runs on the main thread with the
   * result (or the error koffi reports). Blocks that worker for up to `timeoutMs`.
   */
  pollAsync(fds: Buffer, nfds: number, timeoutMs: number, done: (err: unknown, rc: number) => void): void;
  /** fcntl(fd, F_DUPFD_CLOEXEC, 0): dup(2) would drop FD_CLOEXEC and leak into children. */
  dupCloexec(fd: number): number;
  mkfifo(path: string, mode: number): number;
  /** ioctl with no third argument (`_IO` requests such as PPCLAIM / PPRELEASE). */
  ioctlNoArg(fd: number, request: number): number;
  /** ioctl whose third argument is an `int *` it fills in (FIONREAD); -1 on error. */
  ioctlIntOut(fd: number, request: number): number;
  /** ioctl whose third argument is an int passed by value (TIOCSIG); -1 on error. */
  ioctlIntIn(fd: number, request: number, value: number): number;
  /** ioctl whose third argument points at a struct it reads or fills in (TIOCSWINSZ, TIOCGWINSZ); -1 on error. */
  ioctlBuffer(fd: number, request: number, buf: Buffer): number;
  /** tcflush(3); -1 on error. */
  tcflush(fd: number, queue: number): number;
  /** glibc's mallopt(3): 1 on success, 0 on error. Not in musl. */
  mallopt(param: number, value: number): number;
  /** glibc's malloc_trim(3): give freed heap back to the kernel; 1 if some was. Not in musl. */
  malloc_trim(pad: number): number;
  /** socket(2); -1 on error. */
  socket(domain: number, type: number, protocol: number): number;
  /** socketpair(2): fills `fds` (8 bytes: two int32 ends); -1 on error. */
  socketpair(domain: number, type: number, protocol: number, fds: Buffer): number;
  /** sendto(2) with a raw `struct sockaddr` buffer; -1 on error. */
  sendto(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrLen: number): number;
  /** close(2) of an fd Node does not know about (one socket() made). */
  closeFd(fd: number): number;
  /** pipe2(2): fills `fds` (8 bytes: read end, write end as int32); -1 on error. */
  pipe2(fds: Buffer, flags: number): number;
  /** splice(2) between two fds with no offsets (one of them a pipe); bytes moved, 0 at EOF, -1 on error. */
  splice(fdIn: number, fdOut: number, len: number, flags: number): number;
  /** tee(2): duplicates up to `len` bytes of pipe `fdIn` into pipe `fdOut` without consuming them. */
  tee(fdIn: number, fdOut: number, len: number, flags: number): number;
  /** fcntl(2) with an int argument (F_GETFL, F_SETFL, F_SETPIPE_SZ, F_GETPIPE_SZ); -1 on error. */
  fcntlInt(fd: number, cmd: number, arg: number): number;
  /** read(2) into `buf` (up to its length); -1 on error (EAGAIN without an exception, unlike fs.readSync). */
  read(fd: number, buf: Buffer): number;
  /** write(2) of all of `buf` (a subarray for part of one); bytes written, -1 on error. */
  write(fd: number, buf: Buffer): number;
  /** lseek(2); the new offset, or -1 on error. */
  lseek(fd: number, offset: number, whence: number): number;
  /** isatty(3): 1 if `fd` is a terminal (a pty master too), else 0. */
  isatty(fd: number): number;
  /** memfd_create(2): an anonymous file in memory (MFD_CLOEXEC and the like in `flags`); -1 on error. */
  memfdCreate(name: string, flags: number): number;
  strerror(errnum: number): string;
  errno(): number;
  /**
   * The address of `buf`'s first byte, for the calls below that take one. Only for a buffer
   * with memory of its own outside V8's heap (`Buffer.allocUnsafeSlow`, or `allocUnsafe` of
   * more than half Node's pool), which never moves, and only while that buffer is referenced;
   * the caller stays within its length.
   */
  addressOf(buf: Buffer): number;
  /**
   * read(2), write(2), send(2) and poll(2) on memory given by address (`addressOf` plus an
   * offset), not by Buffer: koffi converts numbers instead of checking and unwrapping a
   * Buffer, and no subarray is made per call. For loops that make tens of thousands of calls
   * (the data-plane thread's pty and fan-out runs); -1 on error.
   */
  readAt(fd: number, addr: number, count: number): number;
  writeAt(fd: number, addr: number, count: number): number;
  /** pwrite(2) of memory given by address, at `offset` in the file. */
  pwriteAt(fd: number, addr: number, count: number, offset: number): number;
  sendAt(fd: number, addr: number, count: number, flags: number): number;
  pollAt(fds: number, nfds: number, timeoutMs: number): number;
  /**
   * getrusage(2) RUSAGE_THREAD's ru_nvcsw: how many times the calling thread has slept in
   * the kernel (a blocking write waiting for room counts each wait); -1 on error.
   */
  threadSleeps(): number;
}

/** Size we allocate for an opaque `struct termios` (glibc's is 60 bytes on Linux). */
export const TERMIOS_SIZE = 64;

const F_DUPFD_CLOEXEC = 1030;

export type LibcFamily = 'glibc' | 'musl' | 'unknown';

/** Which C library this process runs on, and what we dlopen for it. */
export interface LibcInfo {
  readonly family: LibcFamily;
  /** The ELF program interpreter of the running executable, if it has one. */
  readonly interpreter: string | undefined;
  /** What koffi.load() is given. */
  readonly library: string;
}

/**
 * A native call that cannot be made here: koffi's native module is missing for this
 * platform, the C library cannot be loaded, or it lacks the symbol. The message is one
 * line saying what is missing and what still works.
 */
export class NativeUnavailableError extends Error {
  readonly code = 'ERR_NATIVE_UNAVAILABLE';
  /** What is missing: koffi's module, the library, or one symbol. */
  readonly missing: 'koffi' | 'libc' | 'symbol';
  constructor(missing: 'koffi' | 'libc' | 'symbol', message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeUnavailableError';
    this.missing = missing;
  }
}

const PT_INTERP = 3;

/**
 * The program interpreter (`PT_INTERP`) of an ELF executable, or undefined for a static
 * one or a file that is not ELF. Reads the headers only (both classes, both byte orders).
 */
export function elfInterpreter(file: string): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const read = (pos: number, len: number): Buffer => {
      const b = Buffer.alloc(len);
      const n = fs.readSync(fd, b, 0, len, pos);
      return b.subarray(0, n);
    };
    const ident = read(0, 64);
    if (ident.length < 52 || ident.readUInt32BE(0) !== 0x7f454c46) return undefined;
    const is64 = ident[4] === 2;
    const le = ident[5] === 1;
    const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const u64 = (b: Buffer, o: number): number => Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
    const phoff = is64 ? u64(ident, 32) : u32(ident, 28);
    const phentsize = u16(ident, is64 ? 54 : 42);
    const phnum = u16(ident, is64 ? 56 : 44);
    if (phoff === 0 || phentsize === 0 || phnum > 4096) return undefined;
    const table = read(phoff, phentsize * phnum);
    for (let i = 0; i + 1 <= phnum && (i + 1) * phentsize <= table.length; i++) {
      const h = table.subarray(i * phentsize, (i + 1) * phentsize);
      if (u32(h, 0) !== PT_INTERP) continue;
      const offset = is64 ? u64(h, 8) : u32(h, 4);
      const size = is64 ? u64(h, 32) : u32(h, 16);
      if (size === 0 || size > 4096) return undefined;
      const s = read(offset, size);
      const end = s.indexOf(0);
      return s.subarray(0, end < 0 ? s.length : end).toString('utf8');
    }
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/** The C library of the executable `exe` (default: this Node), from its program interpreter. */
export function detectLibc(exe: string = process.execPath): LibcInfo {
  const interpreter = elfInterpreter(exe);
  const base = interpreter === undefined ? '' : path.basename(interpreter);
  // musl's dynamic loader is its libc: dlopen() of that path returns the loaded library.
  if (base.startsWith('ld-musl-')) return { family: 'musl', interpreter, library: interpreter as string };
  if (base.startsWith('ld-linux') || base.startsWith('ld64.so') || base === 'ld.so.1') return { family: 'glibc', interpreter, library: 'libc.so.6' };
  return { family: 'unknown', interpreter, library: 'libc.so.6' };
}

let libcInfo: LibcInfo | undefined;

/** This process's C library (detected once). */
export function currentLibc(): LibcInfo {
  libcInfo ??= detectLibc();
  return libcInfo;
}

/** `linux-x64 (glibc)`: the platform as koffi's prebuilt packages name it, plus the libc. */
export function platformName(): string {
  return `${process.platform}-${process.arch} (${currentLibc().family})`;
}

/** What works without koffi: the host interfaces that need nothing native. */
export const WORKS_WITHOUT_NATIVE = 'null, file, stdio, tcp, unix, udp and vc devices work without it';

let loaded: { koffi: Koffi; lib: Library } | undefined;
let loadError: NativeUnavailableError | undefined;

/** koffi and the C library, loaded on the first native call; a failure is remembered and thrown again. */
function load(): { koffi: Koffi; lib: Library } {
  if (loaded !== undefined) return loaded;
  if (loadError !== undefined) throw loadError;
  const require = createRequire(import.meta.url);
  let koffi: Koffi;
  try {
    // The CommonJS entry has the same shape as the ESM one; require keeps the load synchronous.
    koffi = require('koffi') as Koffi;
  } catch (e) {
    loadError = new NativeUnavailableError('koffi', `needs koffi's native module, which is missing for ${platformName()}; ${WORKS_WITHOUT_NATIVE}`, {
      cause: e,
    });
    throw loadError;
  }
  const info = currentLibc();
  const candidates = info.family === 'unknown' ? [info.library, 'libc.so'] : [info.library];
  let lastError: unknown;
  for (const candidate of candidates) {
    try {
      loaded = { koffi, lib: koffi.load(candidate) };
      return loaded;
    } catch (e) {
      lastError = e;
    }
  }
  const reason = lastError instanceof Error ? lastError.message : String(lastError);
  loadError = new NativeUnavailableError(
    'libc',
    `cannot load the C library ${candidates.join(' or ')} on ${platformName()} (${reason}); ${WORKS_WITHOUT_NATIVE}`,
    { cause: lastError },
  );
  throw loadError;
}

const bound = new Map<string, Bound>();

/** One C function, declared in C syntax, bound on its first call. */
function fn(declaration: string): Bound {
  const known = bound.get(declaration);
  if (known !== undefined) return known;
  const { lib } = load();
  let f: Bound;
  try {
    f = lib.func(declaration);
  } catch (e) {
    const name = /(\w+)\s*\(/.exec(declaration)?.[1] ?? declaration;
    const info = currentLibc();
    throw new NativeUnavailableError('symbol', `${name} is not in this C library (${info.family}, ${info.library})`, { cause: e });
  }
  bound.set(declaration, f);
  return f;
}

/** True once koffi and the C library are loaded, without loading them. */
export function nativeLoaded(): boolean {
  return loaded !== undefined;
}

/**
 * Load koffi and the C library now (they load by themselves on the first native call):
 * undefined when they are there, else the one line saying what is missing.
 */
export function nativeProblem(): string | undefined {
  try {
    load();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

// koffi functions are typed `(...args: any[]) => any`; each is wrapped with a precise
// signature right here so no `any` escapes this file. Declarations are bound on first call.
const UNLOCKPT = 'int unlockpt(int fd)';
const PTSNAME_R = 'int ptsname_r(int fd, _Out_ uint8_t *buf, size_t buflen)';
const TCGETATTR = 'int tcgetattr(int fd, _Out_ uint8_t *termios)';
const TCSETATTR = 'int tcsetattr(int fd, int optional_actions, const uint8_t *termios)';
const CFMAKERAW = 'void cfmakeraw(_Inout_ uint8_t *termios)';
const CFSETISPEED = 'int cfsetispeed(_Inout_ uint8_t *termios, uint32_t speed)';
const CFSETOSPEED = 'int cfsetospeed(_Inout_ uint8_t *termios, uint32_t speed)';
const POLL = 'int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)';
const FCNTL = 'int fcntl(int fd, int cmd, ...)';
const MKFIFO = 'int mkfifo(const char *path, uint32_t mode)';
// ioctl is variadic; declaring it variadic keeps the ABI right (e.g. %al on x86-64).
const IOCTL = 'int ioctl(int fd, unsigned long request, ...)';
const TCFLUSH = 'int tcflush(int fd, int queue_selector)';
const STRERROR = 'const char *strerror(int errnum)';
const MALLOPT = 'int mallopt(int param, int value)';
const MALLOC_TRIM = 'int malloc_trim(size_t pad)';
const SOCKET = 'int socket(int domain, int type, int protocol)';
const SOCKETPAIR = 'int socketpair(int domain, int type, int protocol, _Out_ uint8_t *sv)';
const SENDTO = 'long sendto(int fd, const uint8_t *buf, size_t len, int flags, const uint8_t *addr, uint32_t addrlen)';
const CLOSE = 'int close(int fd)';
const PIPE2 = 'int pipe2(_Out_ uint8_t *fds, int flags)';
const SPLICE = 'long splice(int fd_in, void *off_in, int fd_out, void *off_out, size_t len, unsigned int flags)';
const TEE = 'long tee(int fd_in, int fd_out, size_t len, unsigned int flags)';
const READ = 'long read(int fd, _Out_ uint8_t *buf, size_t count)';
const WRITE = 'long write(int fd, const void *buf, size_t count)';
const LSEEK = 'long lseek(int fd, long offset, int whence)';
const ISATTY = 'int isatty(int fd)';
const MEMFD_CREATE = 'int memfd_create(const char *name, unsigned int flags)';
const READ_AT = 'long read(int fd, intptr_t buf, size_t count)';
const WRITE_AT = 'long write(int fd, intptr_t buf, size_t count)';
const PWRITE_AT = 'long pwrite(int fd, intptr_t buf, size_t count, long offset)';
const SEND_AT = 'long send(int fd, intptr_t buf, size_t len, int flags)';
const POLL_AT = 'int poll(intptr_t fds, unsigned long nfds, int timeout)';
const GETRUSAGE = 'int getrusage(int who, _Out_ uint8_t *usage)';
/** sys/resource.h: the calling thread only. */
const RUSAGE_THREAD = 1;
/** struct rusage on 64-bit Linux: two timevals (32 bytes), then 14 longs; ru_nvcsw is the 13th. */
const RUSAGE_BYTES = 144;
const RU_NVCSW_OFFSET = 128;

/** The address-taking calls, bound once: they are called per pty refill or per fan-out send, so not even the map lookup `fn` makes. */
let readAt: Bound | undefined;
let writeAt: Bound | undefined;
let pwriteAt: Bound | undefined;
let sendAt: Bound | undefined;
let pollAt: Bound | undefined;

/** `ioctlIntOut`'s int, filled by the kernel. */
const INT_OUT = Buffer.alloc(4);
/** `threadSleeps`'s struct rusage. */
const RUSAGE = Buffer.alloc(RUSAGE_BYTES);

const LIBC: Libc = {
  unlockpt: (fd) => fn(UNLOCKPT)(fd) as number,
  ptsname_r: (fd, buf, len) => fn(PTSNAME_R)(fd, buf, len) as number,
  tcgetattr: (fd, t) => fn(TCGETATTR)(fd, t) as number,
  tcsetattr: (fd, a, t) => fn(TCSETATTR)(fd, a, t) as number,
  cfmakeraw: (t) => {
    fn(CFMAKERAW)(t);
  },
  cfsetispeed: (t, s) => fn(CFSETISPEED)(t, s) as number,
  cfsetospeed: (t, s) => fn(CFSETOSPEED)(t, s) as number,
  poll: (fds, n, timeout) => fn(POLL)(fds, n, timeout) as number,
  pollAsync: (fds, n, timeout, done) => {
    fn(POLL).async(fds, n, timeout, (err: unknown, rc: unknown) => done(err, typeof rc === 'number' ? rc : -1));
  },
  dupCloexec: (fd) => fn(FCNTL)(fd, F_DUPFD_CLOEXEC, 'int', 0) as number,
  mkfifo: (p, m) => fn(MKFIFO)(p, m) as number,
  ioctlNoArg: (fd, req) => fn(IOCTL)(fd, req) as number,
  ioctlIntOut: (fd, req) => {
    // One buffer for every call (the call is synchronous): the data-plane thread asks FIONREAD per hop of an interactive byte.
    const out = INT_OUT;
    out.writeInt32LE(0, 0);
    return (fn(IOCTL)(fd, req, 'uint8_t *', out) as number) === 0 ? out.readInt32LE(0) : -1;
  },
  ioctlIntIn: (fd, req, value) => fn(IOCTL)(fd, req, 'int', value) as number,
  ioctlBuffer: (fd, req, buf) => fn(IOCTL)(fd, req, 'uint8_t *', buf) as number,
  tcflush: (fd, queue) => fn(TCFLUSH)(fd, queue) as number,
  mallopt: (param, value) => fn(MALLOPT)(param, value) as number,
  malloc_trim: (pad) => fn(MALLOC_TRIM)(pad) as number,
  socket: (d, t, p) => fn(SOCKET)(d, t, p) as number,
  socketpair: (d, t, p, fds) => fn(SOCKETPAIR)(d, t, p, fds) as number,
  sendto: (fd, buf, len, flags, addr, addrLen) => Number(fn(SENDTO)(fd, buf, len, flags, addr, addrLen) as number | bigint),
  closeFd: (fd) => fn(CLOSE)(fd) as number,
  pipe2: (fds, flags) => fn(PIPE2)(fds, flags) as number,
  splice: (fdIn, fdOut, len, flags) => Number(fn(SPLICE)(fdIn, null, fdOut, null, len, flags) as number | bigint),
  tee: (fdIn, fdOut, len, flags) => Number(fn(TEE)(fdIn, fdOut, len, flags) as number | bigint),
  fcntlInt: (fd, cmd, arg) => fn(FCNTL)(fd, cmd, 'int', arg) as number,
  read: (fd, buf) => Number(fn(READ)(fd, buf, buf.length) as number | bigint),
  write: (fd, buf) => Number(fn(WRITE)(fd, buf, buf.length) as number | bigint),
  lseek: (fd, offset, whence) => Number(fn(LSEEK)(fd, offset, whence) as number | bigint),
  isatty: (fd) => fn(ISATTY)(fd) as number,
  memfdCreate: (name, flags) => fn(MEMFD_CREATE)(name, flags) as number,
  strerror: (e) => (fn(STRERROR)(e) as string | null) ?? `errno ${e}`,
  errno: () => load().koffi.errno(),
  addressOf: (buf) => {
    const addr = Number(load().koffi.address(buf));
    // User-space addresses fit 2^53 on every 64-bit Linux (47–57 bits); a rounded one must never be used.
    if (!Number.isSafeInteger(addr) || addr === 0) throw new NativeUnavailableError('symbol', `koffi gave no usable address for a buffer (${addr})`);
    return addr;
  },
  readAt: (fd, addr, count) => (readAt ??= fn(READ_AT))(fd, addr, count) as number,
  writeAt: (fd, addr, count) => (writeAt ??= fn(WRITE_AT))(fd, addr, count) as number,
  pwriteAt: (fd, addr, count, offset) => (pwriteAt ??= fn(PWRITE_AT))(fd, addr, count, offset) as number,
  sendAt: (fd, addr, count, flags) => (sendAt ??= fn(SEND_AT))(fd, addr, count, flags) as number,
  pollAt: (fds, n, timeout) => (pollAt ??= fn(POLL_AT))(fds, n, timeout) as number,
  threadSleeps: () => ((fn(GETRUSAGE)(RUSAGE_THREAD, RUSAGE) as number) === 0 ? Number(RUSAGE.readBigInt64LE(RU_NVCSW_OFFSET)) : -1),
};

/** The libc bindings; nothing is loaded until a function is called. */
export function libc(): Libc {
  return LIBC;
}
