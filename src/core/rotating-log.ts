/**
 * The domain log (`LOGDIR/DOMAIN.log`), rotated like virtlogd: before the active file
 * would grow past `maxBytes`, `.log.N-1` → `.log.N` … `.log` → `.log.1`, and a fresh
 * `.log` is started; the oldest backup beyond `backups` is deleted.
 *
 * A write that straddles the limit is split: what fits goes to the old file, the rest to
 * the new one, so across `.log`, `.log.1`, … every byte appears exactly once, in order.
 */
import * as fs from 'node:fs';
import type { RotationOptions } from './backend.ts';
import { OUTPUT_FILE_MODE, closeQuietly, describeErrno, openOutputFile, unlinkQuietly, writeAllSync } from './files.ts';
import { ChardevError } from '../errors.ts';

export const DEFAULT_ROTATION: RotationOptions = { maxBytes: 2 * 1024 * 1024, backups: 3 };

export class RotatingLog {
  readonly path: string;
  readonly #rotation: RotationOptions;
  #fd: number;
  #size: number;
  readonly #created: boolean;
  #closed = false;

  /** Opens (appending, like virtlogd across domain restarts) and creates it 0600. */
  constructor(id: string, file: string, rotation: RotationOptions = DEFAULT_ROTATION) {
    if (!Number.isInteger(rotation.maxBytes) || rotation.maxBytes < 1) {
      throw new ChardevError('ERR_USAGE', `${id}: log rotation maxBytes must be a positive integer, got ${rotation.maxBytes}`);
    }
    if (!Number.isInteger(rotation.backups) || rotation.backups < 0) {
      throw new ChardevError('ERR_USAGE', `${id}: log rotation backups must be a non-negative integer, got ${rotation.backups}`);
    }
    this.path = file;
    this.#rotation = rotation;
    const opened = openOutputFile(id, 'domain log', file, true);
    this.#fd = opened.fd;
    this.#created = opened.created;
    this.#size = fs.fstatSync(this.#fd).size;
  }

  /** Append `data`, rotating as often as needed. Throws a Node errno error on I/O failure. */
  write(data: Uint8Array): void {
    if (this.#closed) return;
    let rest = data;
    while (rest.length > 0) {
      const room = this.#rotation.maxBytes - this.#size;
      if (room <= 0) {
        this.#rotate();
        continue;
      }
      const part = rest.subarray(0, Math.min(room, rest.length));
      writeAllSync(this.#fd, part);
      this.#size += part.length;
      rest = rest.subarray(part.length);
    }
  }

  #rotate(): void {
    const { backups } = this.#rotation;
    closeQuietly(this.#fd);
    if (backups === 0) {
      unlinkQuietly(this.path);
    } else {
      unlinkQuietly(`${this.path}.${backups}`);
      for (let n = backups - 1; n >= 1; n--) {
        if (fs.existsSync(`${this.path}.${n}`)) fs.renameSync(`${this.path}.${n}`, `${this.path}.${n + 1}`);
      }
      fs.renameSync(this.path, `${this.path}.1`);
    }
    try {
      this.#fd = fs.openSync(this.path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND, OUTPUT_FILE_MODE);
    } catch (e) {
      this.#closed = true;
      throw new Error(`cannot reopen ${this.path} after rotation: ${describeErrno(e as NodeJS.ErrnoException)}`, { cause: e });
    }
    this.#size = 0;
  }

  close(abort: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#fd);
    if (abort && this.#created) unlinkQuietly(this.path);
  }
}
