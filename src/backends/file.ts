/**
 * `file`: guest output written to a file, truncated at start unless append='on'. Opens at
 * creation. Rotated by size under `<cd:rotate>`.
 *
 * Input: libvirt never passes QEMU's input-path, so a file device of the XML has none. QMP's
 * chardev-add may give one (`in`), as QEMU's file chardev takes it: a file or FIFO opened
 * read-only, whose bytes go to the guest while it reads; at its end the device is CLOSED
 * (output goes on), as in QEMU. It is opened without blocking: a FIFO nobody holds open
 * for writing ends at once (QEMU would wait in open() for a writer).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Readable } from 'node:stream';
import type { FileSourceDef } from '../config/types.ts';
import type { Backend, BackendContext } from '../core/backend.ts';
import { closeQuietly, describeErrno } from '../core/files.ts';
import { RotatingLog } from '../core/rotating-log.ts';
import { ChardevError } from '../errors.ts';

const { O_RDONLY, O_NONBLOCK, O_NOCTTY } = fs.constants;

/** The input file or FIFO as a paused stream, or the error naming it. */
function openInput(ctx: BackendContext, file: string): Readable {
  let fd: number;
  try {
    fd = fs.openSync(file, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  } catch (e) {
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: file: Could not open '${file}': ${describeErrno(e as NodeJS.ErrnoException)}`, { cause: e });
  }
  try {
    // A FIFO through libuv's pipe handling (epoll, no threadpool thread parked on it).
    const stream: Readable = fs.fstatSync(fd).isFIFO()
      ? new net.Socket({ fd, readable: true, writable: false })
      : fs.createReadStream('', { fd, autoClose: true });
    stream.pause();
    return stream;
  } catch (e) {
    closeQuietly(fd);
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: file: ${file}: ${(e as Error).message}`, { cause: e });
  }
}

export function createFileBackend(ctx: BackendContext, source: FileSourceDef): Backend {
  const file = source.path;
  if (file === undefined) throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: file: no filename given`);
  // The input first: a failure then leaves no output file behind.
  const input = source.input === undefined ? undefined : openInput(ctx, source.input);
  const rotate = ctx.dev.ext.rotate;
  let out: RotatingLog;
  try {
    out = new RotatingLog(ctx.id, file, rotate, {
      append: source.append === 'on',
      what: 'file',
      onError: (err) => ctx.events.error(err),
    });
  } catch (e) {
    input?.destroy();
    throw e;
  }
  if (input !== undefined) {
    input.on('data', (chunk: Buffer | string) => ctx.events.receive(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
    // QEMU: at the input's end the read watch goes and CLOSED is sent; output goes on.
    input.on('end', () => ctx.events.closed());
    input.on('error', (err: Error) =>
      ctx.events.error(new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: file: ${source.input ?? ''}: ${err.message}`, { cause: err })),
    );
  }
  let failed = false;
  let dropped = 0;
  return {
    filename: 'file',
    where: `${ctx.id}: file ${file}${source.input === undefined ? '' : ` (input from ${source.input})`}`,
    openAtStart: true,
    get droppedBytes() {
      return dropped;
    },
    write(data) {
      if (failed) {
        dropped += data.length;
        return data.length;
      }
      try {
        out.write(data);
      } catch (e) {
        // A full disk must not stop the guest: report once, then discard like a dead file.
        failed = true;
        dropped += data.length;
        ctx.events.error(
          new ChardevError('ERR_BACKEND_WRITE', `${ctx.id}: file ${file}: ${describeErrno(e as NodeJS.ErrnoException)}; further output discarded`, {
            cause: e,
          }),
        );
      }
      return data.length;
    },
    kernelFile() {
      return failed ? undefined : out.kernelFile();
    },
    setReading(on) {
      if (input === undefined || input.destroyed) return;
      if (on) input.resume();
      else input.pause();
    },
    async stop(abort) {
      if (input !== undefined && !input.destroyed) {
        await new Promise<void>((resolve) => {
          input.once('close', () => resolve());
          input.destroy();
        });
      }
      out.close(abort);
    },
  };
}
