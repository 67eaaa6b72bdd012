/** Output files shared by the file backend, the `<log>` tee and the domain log. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChardevError } from '../errors.ts';

/** Owner-only, like libvirt's log files, not QEMU's 0666 minus umask. */
export const OUTPUT_FILE_MODE = 0o600;

export interface OpenedOutput {
  readonly fd: number;
  /** True when the file did not exist before: an aborted start removes it again. */
  readonly created: boolean;
}

/**
 * Open an output file for writing: truncated unless `append`. Errors are ChardevErrors
 * naming the device and the path, with a plain reason for the common cases.
 */
export function openOutputFile(id: string, what: string, file: string, append: boolean): OpenedOutput {
  const existed = fs.existsSync(file);
  const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | (append ? fs.constants.O_APPEND : fs.constants.O_TRUNC);
  try {
    return { fd: fs.openSync(file, flags, OUTPUT_FILE_MODE), created: !existed };
  } catch (e) {
    throw openError(id, what, file, e);
  }
}

export function openError(id: string, what: string, file: string, e: unknown): ChardevError {
  const err = e as NodeJS.ErrnoException;
  let reason: string;
  if (err.code === 'ENOENT' && !fs.existsSync(path.dirname(file))) {
    reason = `directory '${path.dirname(file)}' does not exist`;
  } else {
    reason = describeErrno(err);
  }
  return new ChardevError('ERR_BACKEND_OPEN', `${id}: ${what}: Could not open '${file}': ${reason}`, { cause: e });
}

/** strerror-style text for a Node or Platform error: QEMU's capitalised wording for the common errnos. */
export function describeErrno(err: { code?: string | undefined; message: string; description?: string }): string {
  switch (err.code) {
    case 'ENOENT':
      return 'No such file or directory';
    case 'EACCES':
      return 'Permission denied';
    case 'EISDIR':
      return 'Is a directory';
    case 'ENXIO':
      return 'No such device or address';
    case 'ENOTDIR':
      return 'Not a directory';
    case 'ECONNREFUSED':
      return 'Connection refused';
    case 'ECONNRESET':
      return 'Connection reset by peer';
    case 'ETIMEDOUT':
      return 'Connection timed out';
    case 'EHOSTUNREACH':
      return 'No route to host';
    case 'ENETUNREACH':
      return 'Network is unreachable';
    case 'EADDRINUSE':
      return 'Address already in use';
    case 'EADDRNOTAVAIL':
      return 'Cannot assign requested address';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'Name or service not known';
    case 'ENOTSOCK':
      return 'Socket operation on non-socket';
    case 'ENOSPC':
      return 'No space left on device';
    case 'EDQUOT':
      return 'Disk quota exceeded';
    case 'EFBIG':
      return 'File too large';
    case 'EMFILE':
      return 'Too many open files';
    case 'ENFILE':
      return 'Too many open files in system';
    case 'EIO':
      return 'Input/output error';
    default:
      return err.description ?? err.message;
  }
}

/**
 * Write all of `data` to a regular file. Synchronous on purpose: a regular-file write
 * does not block on a reader, QEMU writes its files the same way, and it keeps the
 * order of bytes across devices and rotation trivially exact.
 */
export function writeAllSync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
}

/** Fill `into` from `fd` at `position` on, as far as the file goes; returns the bytes read. */
export function readAllAt(fd: number, into: Buffer, position: number): number {
  let got = 0;
  while (got < into.length) {
    const k = fs.readSync(fd, into, got, into.length - got, position + got);
    if (k <= 0) break;
    got += k;
  }
  return got;
}

/** Close an fd we own, ignoring EBADF-style failures during teardown. */
export function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed: teardown must not throw halfway and leak the rest.
  }
}

export function unlinkQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // Gone already: nothing left behind, which is the point.
  }
}

/**
 * Whether `fd` is a regular file: not a FIFO or a device, whose write(2) may wait and which
 * gives nothing back when read.
 */
export function isRegularFile(fd: number): boolean {
  try {
    return fs.fstatSync(fd).isFile();
  } catch {
    return false;
  }
}
