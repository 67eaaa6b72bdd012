/**
 * An output log that may rotate by size: the domain log (`LOGDIR/DOMAIN.log`, rotated like
 * virtlogd), a device's `<log>` and a `file` device's file under `<cd:rotate>`. Before the
 * active file would grow past `maxBytes`, `.log.N-1` → `.log.N` … `.log` → `.log.1`, and a
 * fresh `.log` is started; the oldest backup beyond `backups` is deleted.
 *
 * A write that straddles the limit is split: what fits goes to the old file, the rest to
 * the new one, so across `.log`, `.log.1`, … every byte appears exactly once, in order.
 *
 * The new file is opened (as `.log.new`) before anything is renamed. If it cannot be — no
 * file descriptor left, no room for a directory entry — nothing moves: output goes on into
 * the current file past the limit, the failure is reported once, and rotation is tried
 * again on later writes. No byte is lost to a failed rotation.
 */
import * as fs from 'node:fs';
import { OUTPUT_FILE_MODE, closeQuietly, describeErrno, openOutputFile, readAllAt, unlinkQuietly, writeAllSync } from './files.ts';
import { DEFAULT_ROTATE } from '../config/extensions.ts';
import type { RotateExtensionDef } from '../config/types.ts';
import { ChardevError } from '../errors.ts';
import { libc } from '../platform/native.ts';

const SEEK_END = 2;

/** How a log rotates: the device's `<cd:rotate>` (config's shape, one for both). */
export type RotationOptions = Readonly<RotateExtensionDef>;

export const DEFAULT_ROTATION: RotationOptions = DEFAULT_ROTATE;

/** An output file as a splice(2) destination. */
export interface KernelFile {
  /** Opened without O_APPEND (splice refuses append mode); the caller seeks to the end before each transfer. */
  readonly fd: number;
  /** Bytes before the file must rotate; Infinity when it never does. */
  readonly roomBytes: number;
  /** `n` bytes were appended by the kernel. */
  commit(n: number): void;
  /** `roomBytes` were used up. */
  full(): void;
}

/** After a failed rotation, how much the kernel path appends before rotation is tried again. */
const UNROTATED_RETRY_BYTES = 64 * 1024;

export interface OutputLogOptions {
  /** Keep what is there (default true, like virtlogd across domain restarts); false truncates at open. */
  readonly append?: boolean;
  /** What the file is, for messages: `domain log`, `log`, `file`. */
  readonly what?: string;
  /** A failed rotation (the log carries on in the current file); reported once per run of failures. */
  readonly onError?: (err: ChardevError) => void;
}

export class RotatingLog {
  readonly path: string;
  readonly #id: string;
  readonly #what: string;
  readonly #rotation: RotationOptions | undefined;
  readonly #onError: ((err: ChardevError) => void) | undefined;
  #fd: number;
  #size: number;
  readonly #created: boolean;
  #closed = false;
  /** Rotation failed and has not succeeded since: later failures are not reported again. */
  #rotateFailing = false;
  /** A rename failed halfway: files are no longer where rotation expects them, so it stops. */
  #rotateBroken = false;
  /** Completed rotations, since open. */
  #rotations = 0;
  /** The active file opened again without O_APPEND, for splice (`kernelFile`). */
  #spliceFd: number | undefined;

  /**
   * Opens the file 0600 (created if missing). `rotation` undefined: never rotates (no
   * default on purpose: a default parameter would turn an explicit undefined into rotation,
   * and a plain `file` device or `<log>` must never rotate). Throws
   * a ChardevError naming the device and the path if the file cannot be opened.
   */
  constructor(id: string, file: string, rotation: RotationOptions | undefined, options: OutputLogOptions = {}) {
    if (rotation !== undefined) {
      if (!Number.isInteger(rotation.maxBytes) || rotation.maxBytes < 1) {
        throw new ChardevError('ERR_USAGE', `${id}: log rotation maxBytes must be a positive integer, got ${rotation.maxBytes}`);
      }
      if (!Number.isInteger(rotation.backups) || rotation.backups < 0) {
        throw new ChardevError('ERR_USAGE', `${id}: log rotation backups must be a non-negative integer, got ${rotation.backups}`);
      }
    }
    this.path = file;
    this.#id = id;
    this.#what = options.what ?? 'domain log';
    this.#rotation = rotation;
    this.#onError = options.onError;
    const opened = openOutputFile(id, this.#what, file, options.append ?? true);
    this.#fd = opened.fd;
    this.#created = opened.created;
    this.#size = fs.fstatSync(this.#fd).size;
  }

  /**
   * The active file as a splice(2) destination: a second open file description of it
   * without O_APPEND (splice refuses append mode; the kernel path seeks to the end before
   * each transfer), and the room before the next rotation, rotating first if there is none.
   * `commit` keeps the size — and so the rotation points — exact, byte for byte as `write`.
   */
  kernelFile(): KernelFile | undefined {
    if (this.#closed) return undefined;
    const rotation = this.#rotation;
    let room = rotation === undefined ? Infinity : rotation.maxBytes - this.#size;
    if (room <= 0) {
      // As `write`: a file that could not rotate grows on, and rotation is tried again later.
      room = this.#rotate() ? (rotation?.maxBytes ?? Infinity) : UNROTATED_RETRY_BYTES;
    }
    if (this.#spliceFd === undefined) {
      try {
        this.#spliceFd = fs.openSync(`/proc/self/fd/${this.#fd}`, fs.constants.O_WRONLY);
      } catch {
        return undefined;
      }
    }
    return {
      fd: this.#spliceFd,
      roomBytes: room,
      commit: (n) => {
        this.#size += n;
        // `write` goes on from this fd's position (it is O_APPEND only when appending), so it
        // must follow what the kernel appended through the other description.
        libc().lseek(this.#fd, 0, SEEK_END);
      },
      full: () => {},
    };
  }

  /**
   * The last `n` bytes of the active file (fewer if it holds fewer): what a kernel-path run
   * just appended, for the device's history (the run ends before any rotation, so its bytes
   * are all in this file).
   */
  readTail(n: number): Buffer {
    const want = Math.min(n, this.#size);
    if (this.#closed || want <= 0) return Buffer.alloc(0);
    let fd: number;
    try {
      // The active file's own inode, whatever its name is now; the log's fds are write-only.
      fd = fs.openSync(`/proc/self/fd/${this.#fd}`, fs.constants.O_RDONLY);
    } catch {
      return Buffer.alloc(0);
    }
    try {
      const out = Buffer.allocUnsafe(want);
      return out.subarray(0, readAllAt(fd, out, this.#size - want));
    } catch {
      return Buffer.alloc(0);
    } finally {
      closeQuietly(fd);
    }
  }

  /** How many times the file was rotated since it was opened. */
  get rotations(): number {
    return this.#rotations;
  }

  /** Append `data`, rotating as often as needed. Throws a Node errno error if the write itself fails (full disk). */
  write(data: Uint8Array): void {
    if (this.#closed) return;
    const rotation = this.#rotation;
    let rest = data;
    while (rest.length > 0) {
      let room = rotation === undefined ? rest.length : rotation.maxBytes - this.#size;
      if (room <= 0 && !this.#rotate()) room = rest.length; // could not rotate: carry on in this file
      if (room <= 0) continue;
      const part = room >= rest.length ? rest : rest.subarray(0, room);
      writeAllSync(this.#fd, part);
      this.#size += part.length;
      rest = rest.subarray(part.length);
    }
  }

  /** True when a fresh file is active. */
  #rotate(): boolean {
    const rotation = this.#rotation;
    if (rotation === undefined || this.#rotateBroken) return false;
    const next = `${this.path}.new`;
    let fd: number;
    try {
      fd = fs.openSync(next, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_APPEND, OUTPUT_FILE_MODE);
    } catch (e) {
      this.#failed(`cannot start a new file: ${describeErrno(e as NodeJS.ErrnoException)}; writing on past the limit`, e);
      return false;
    }
    try {
      const { backups } = rotation;
      if (backups === 0) {
        // The rename below replaces it.
      } else {
        unlinkQuietly(`${this.path}.${backups}`);
        for (let n = backups - 1; n >= 1; n--) {
          if (fs.existsSync(`${this.path}.${n}`)) fs.renameSync(`${this.path}.${n}`, `${this.path}.${n + 1}`);
        }
        fs.renameSync(this.path, `${this.path}.1`);
      }
      fs.renameSync(next, this.path);
    } catch (e) {
      closeQuietly(fd);
      unlinkQuietly(next);
      this.#rotateBroken = true;
      this.#rotateFailing = false;
      this.#failed(`rotation failed: ${describeErrno(e as NodeJS.ErrnoException)}; no longer rotating`, e);
      return false;
    }
    closeQuietly(this.#fd);
    this.#closeSpliceFd();
    this.#fd = fd;
    this.#size = 0;
    this.#rotations++;
    this.#rotateFailing = false;
    return true;
  }

  #failed(text: string, cause: unknown): void {
    if (this.#rotateFailing) return;
    this.#rotateFailing = true;
    this.#onError?.(new ChardevError('ERR_BACKEND_WRITE', `${this.#id}: ${this.#what} ${this.path}: ${text}`, { cause }));
  }

  #closeSpliceFd(): void {
    if (this.#spliceFd !== undefined) closeQuietly(this.#spliceFd);
    this.#spliceFd = undefined;
  }

  close(abort: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#fd);
    this.#closeSpliceFd();
    if (abort && this.#created) unlinkQuietly(this.path);
  }
}
