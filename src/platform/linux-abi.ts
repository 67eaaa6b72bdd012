/**
 * Linux x86-64/aarch64 numbers (poll events, ioctl requests, splice flags, errno values,
 * lseek whence, pipe fcntls), one copy for every platform file that passes them to libc.
 */
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;
/** asm-generic/ioctls.h: bytes waiting to be read. */
export const FIONREAD = 0x541b;
export const SPLICE_F_MOVE = 1;
export const SPLICE_F_NONBLOCK = 2;
export const EINTR = 4;
export const EIO = 5;
export const EAGAIN = 11;
export const EINVAL = 22;
export const SEEK_SET = 0;
export const SEEK_END = 2;
/** fcntl(2): a pipe's capacity, set (rounded up to a power of two pages) and read. */
export const F_SETPIPE_SZ = 1031;
export const F_GETPIPE_SZ = 1032;
/** fcntl(2): the open file description's status flags (O_NONBLOCK lives there, shared by every dup). */
export const F_GETFL = 3;
export const F_SETFL = 4;
export const O_NONBLOCK = 0o4000;
/** termios ioctl: suspend (TCOOFF) or restart (TCOON) a terminal's output; restarting wakes its blocked writers. */
export const TCXONC = 0x540a;
export const TCOOFF = 0;
export const TCOON = 1;
