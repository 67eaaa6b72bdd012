/**
 * The only file that talks to libc through koffi.
 *
 * koffi is loaded lazily (synchronously, through createRequire) on the first call, so that
 * importing the platform layer — e.g. to use the fake in unit tests, or on a machine where
 * the prebuilt koffi binary is missing — never loads a native addon.
 *
 * Every wrapper returns the raw C result plus errno; turning that into a PlatformError is
 * linux.ts's job, because only it knows the path and the QEMU wording.
 */
import { createRequire } from 'node:module';
import type * as KoffiModule from 'koffi';

type Koffi = typeof KoffiModule;

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
  /** glibc's mallopt(3): 1 on success, 0 on error. */
  mallopt(param: number, value: number): number;
  strerror(errnum: number): string;
  errno(): number;
}

/** Size we allocate for an opaque `struct termios` (glibc's is 60 bytes on Linux). */
export const TERMIOS_SIZE = 64;

const F_DUPFD_CLOEXEC = 1030;

let cached: Libc | undefined;

/** Loads koffi and libc on first use; later calls return the same bindings. */
export function libc(): Libc {
  if (cached !== undefined) return cached;
  const require = createRequire(import.meta.url);
  // The CommonJS entry has the same shape as the ESM one; require keeps the load synchronous.
  const koffi = require('koffi') as Koffi;
  const lib = koffi.load('libc.so.6');

  // koffi functions are typed `(...args: any[]) => any`; each is wrapped with a precise
  // signature right here so no `any` escapes this file.
  const unlockpt = lib.func('int unlockpt(int fd)');
  const ptsname_r = lib.func('int ptsname_r(int fd, _Out_ uint8_t *buf, size_t buflen)');
  const tcgetattr = lib.func('int tcgetattr(int fd, _Out_ uint8_t *termios)');
  const tcsetattr = lib.func('int tcsetattr(int fd, int optional_actions, const uint8_t *termios)');
  const cfmakeraw = lib.func('void cfmakeraw(_Inout_ uint8_t *termios)');
  const cfsetispeed = lib.func('int cfsetispeed(_Inout_ uint8_t *termios, uint32_t speed)');
  const cfsetospeed = lib.func('int cfsetospeed(_Inout_ uint8_t *termios, uint32_t speed)');
  const poll = lib.func('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)');
  const fcntl = lib.func('int fcntl(int fd, int cmd, ...)');
  const mkfifo = lib.func('int mkfifo(const char *path, uint32_t mode)');
  // ioctl is variadic; declaring it variadic keeps the ABI right (e.g. %al on x86-64).
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, ...)');
  const strerror = lib.func('const char *strerror(int errnum)');
  const mallopt = lib.func('int mallopt(int param, int value)');

  cached = {
    unlockpt: (fd) => unlockpt(fd) as number,
    ptsname_r: (fd, buf, len) => ptsname_r(fd, buf, len) as number,
    tcgetattr: (fd, t) => tcgetattr(fd, t) as number,
    tcsetattr: (fd, a, t) => tcsetattr(fd, a, t) as number,
    cfmakeraw: (t) => {
      cfmakeraw(t);
    },
    cfsetispeed: (t, s) => cfsetispeed(t, s) as number,
    cfsetospeed: (t, s) => cfsetospeed(t, s) as number,
    poll: (fds, n, timeout) => poll(fds, n, timeout) as number,
    pollAsync: (fds, n, timeout, done) => {
      poll.async(fds, n, timeout, (err: unknown, rc: unknown) => done(err, typeof rc === 'number' ? rc : -1));
    },
    dupCloexec: (fd) => fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0) as number,
    mkfifo: (p, m) => mkfifo(p, m) as number,
    ioctlNoArg: (fd, req) => ioctl(fd, req) as number,
    ioctlIntOut: (fd, req) => {
      const out = Buffer.alloc(4);
      return (ioctl(fd, req, 'uint8_t *', out) as number) === 0 ? out.readInt32LE(0) : -1;
    },
    mallopt: (param, value) => mallopt(param, value) as number,
    strerror: (e) => (strerror(e) as string | null) ?? `errno ${e}`,
    errno: () => koffi.errno(),
  };
  return cached;
}
