/**
 * Linux x86-64/aarch64 numbers the data-plane thread's loops use (poll events, ioctl
 * requests, splice flags, errno values, lseek whence), shared by data-plane-worker.ts and
 * data-plane-fanout.ts.
 */
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const FIONREAD = 0x541b;
export const SPLICE_F_MOVE = 1;
export const SPLICE_F_NONBLOCK = 2;
export const EINTR = 4;
export const EIO = 5;
export const EAGAIN = 11;
export const SEEK_END = 2;
