/**
 * `dev`: host device passthrough.
 *
 * - `<serial>`: QEMU's serial chardev. Opened read-write non-blocking, set raw 115200 8N1.
 *   A tty is read with the platform's pty/tty reader and written through its queueing
 *   writer. A character device that is not a tty (QEMU's own test uses /dev/null) is
 *   accepted as QEMU does — termios failures are ignored there — and carries output only.
 *   Anything else (a regular file, a directory) is refused before any I/O.
 * - `<parallel>`: a claimed ppdev port that gets the guest's bytes (parallel.ts).
 */
import * as fs from 'node:fs';
import type { DevSourceDef } from '../config/types.ts';
import type { Backend, BackendContext } from '../core/backend.ts';
import { ChardevError } from '../errors.ts';
import type { ByteReader, ByteWriter, PlatformError } from '../platform/index.ts';
import { describeErrno } from '../core/files.ts';
import { createParallelBackend } from './parallel.ts';

function openDev(ctx: BackendContext, path: string): number {
  try {
    return ctx.platform.openDevice(path);
  } catch (e) {
    const reason = describeErrno(e as PlatformError);
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: Could not open '${path}': ${reason}`, { cause: e });
  }
}

export function createDevBackend(ctx: BackendContext, source: DevSourceDef): Backend {
  const path = source.path;
  const kind = ctx.dev.kind;
  if (path === undefined) {
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: ${kind === 'parallel' ? 'parallel' : 'serial/tty'}: no device path given`);
  }
  if (kind === 'parallel') return createParallelBackend(ctx, path);
  return createSerial(ctx, path);
}

function createSerial(ctx: BackendContext, path: string): Backend {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: Could not open '${path}': ${describeErrno(e as NodeJS.ErrnoException)}`, { cause: e });
  }
  if (!st.isCharacterDevice()) {
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: '${path}' is not a character device (a <serial type='dev'> needs a host tty)`);
  }
  const fd = openDev(ctx, path);
  const { platform, events, id } = ctx;
  const tty = platform.isatty(fd);
  let writer: ByteWriter;
  /** write() refused bytes since the writer last emptied: 'writable' is due. */
  let refused = false;
  let reader: ByteReader | undefined;
  try {
    if (tty) platform.setSerialRaw(fd, 115200);
    writer = platform.openWriter(fd, {
      onDrain: () => {
        if (!refused) return;
        refused = false;
        events.writable?.();
      },
      onError: (err) => events.error(new ChardevError('ERR_BACKEND_OPEN', `${id}: ${path}: ${err.message}`, { cause: err })),
    });
    if (tty) {
      reader = platform.openPtyReader(fd, {
        onData: (chunk) => events.receive(chunk),
        // EOF/hang-up on the input fd: QEMU removes the read watch and sends CLOSED.
        onHangup: () => events.closed(),
        onError: (err) => events.error(new ChardevError('ERR_BACKEND_OPEN', `${id}: ${path}: ${err.message}`, { cause: err })),
      });
      reader.pause();
    }
  } catch (e) {
    platform.close(fd);
    throw new ChardevError('ERR_BACKEND_OPEN', `${id}: ${path}: ${(e as Error).message}`, { cause: e });
  }
  let stopped = false;
  return {
    filename: 'serial',
    where: `${id}: serial device ${path}${tty ? '' : ' (not a tty: output only)'}`,
    openAtStart: true,
    // The writer's refusals come back as short writes: the frontend's to retry or discard.
    droppedBytes: 0,
    write: (data) => {
      if (stopped) return 0;
      const n = writer.write(data);
      if (n < data.length) refused = true;
      return n;
    },
    // What the far end has not read yet leaves before a stop closes the writer (which drops its queue).
    drained: () => writer.drained(),
    get pendingBytes() {
      return writer.queuedBytes;
    },
    setReading(on) {
      if (on) reader?.resume();
      else reader?.pause();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      reader?.close();
      writer.close();
      platform.close(fd);
    },
  };
}
