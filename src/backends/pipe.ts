/**
 * `pipe`: FIFOs `PATH.in` (host → guest) and `PATH.out` (guest → host) when both can be
 * opened, else `PATH` for both directions (QEMU char-pipe.c; it never creates them).
 *
 * Both are opened O_RDWR|O_NONBLOCK: opening never blocks, external writers may come and
 * go without an EOF, and output with no reader fills the FIFO instead of failing. Each fd
 * is wrapped in a net.Socket, which libuv accepts for FIFOs and drives with epoll, so no
 * threadpool thread is ever parked on a FIFO (npm-probe.md §3).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Backend, BackendContext } from '../core/backend.ts';
import { closeQuietly, describeErrno } from '../core/files.ts';
import { ChardevError } from '../errors.ts';
import { DEFAULT_MAX_QUEUED_BYTES, type PlatformError } from '../platform/index.ts';

/** Bytes held in user space while the FIFO is full; beyond this writes are partial. */
export const PIPE_MAX_QUEUED_BYTES = DEFAULT_MAX_QUEUED_BYTES;

function openFifo(ctx: BackendContext, file: string): number {
  // A regular file would "work" O_RDWR but spin libuv at EOF; QEMU expects FIFOs here.
  try {
    return ctx.platform.openDevice(file);
  } catch (e) {
    const reason = describeErrno(e as PlatformError);
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: pipe: Could not open '${file}': ${reason}`, { cause: e });
  }
}

function isFifo(fd: number): boolean {
  return fs.fstatSync(fd).isFIFO();
}

export function createPipeBackend(ctx: BackendContext, path: string | undefined): Backend {
  if (path === undefined) throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: pipe: no device path given`);
  let inFd: number | undefined;
  let outFd: number | undefined;
  try {
    inFd = ctx.platform.openDevice(`${path}.in`);
    outFd = ctx.platform.openDevice(`${path}.out`);
  } catch {
    if (inFd !== undefined) closeQuietly(inFd);
    inFd = outFd = undefined;
  }
  const pair = inFd !== undefined && outFd !== undefined;
  if (!pair) inFd = outFd = openFifo(ctx, path);
  const fds = pair ? [inFd as number, outFd as number] : [inFd as number];
  for (const [i, fd] of fds.entries()) {
    if (!isFifo(fd)) {
      for (const f of fds) closeQuietly(f);
      const name = pair ? `${path}${i === 0 ? '.in' : '.out'}` : path;
      throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: pipe: '${name}' is not a FIFO (create it with mkfifo)`);
    }
  }

  const sockets: net.Socket[] = [];
  let input: net.Socket;
  let output: net.Socket;
  let failed = false;
  /** write() refused bytes since the last drain: 'writable' is due. */
  let refused = false;
  const onError = (err: Error): void => {
    if (failed) return;
    failed = true;
    ctx.events.error(new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: pipe ${path}: ${err.message}`, { cause: err }));
  };
  try {
    if (pair) {
      input = new net.Socket({ fd: inFd as number, readable: true, writable: false });
      sockets.push(input);
      output = new net.Socket({ fd: outFd as number, readable: false, writable: true });
      sockets.push(output);
    } else {
      input = output = new net.Socket({ fd: inFd as number, readable: true, writable: true });
      sockets.push(input);
    }
  } catch (e) {
    for (const s of sockets) s.destroy();
    for (const f of fds.slice(sockets.length)) closeQuietly(f);
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: pipe ${path}: ${(e as Error).message}`, { cause: e });
  }
  for (const s of sockets) s.on('error', onError);
  input.pause();
  input.on('data', (chunk: Buffer) => ctx.events.receive(chunk));
  // A refusal means the socket's queue is past its high-water mark, so 'drain' follows.
  output.on('drain', () => {
    if (!refused) return;
    refused = false;
    ctx.events.writable?.();
  });

  return {
    filename: 'pipe',
    where: pair ? `${ctx.id}: pipe ${path}.in (to guest), ${path}.out (from guest)` : `${ctx.id}: pipe ${path}`,
    openAtStart: true,
    // Refused bytes are the frontend's to retry or discard (Chardev.discard).
    droppedBytes: 0,
    write(data) {
      if (failed || output.destroyed) return 0;
      // net.Socket queues without limit; cap it so a stalled reader cannot grow memory.
      const room = PIPE_MAX_QUEUED_BYTES - output.writableLength;
      const take = Math.max(0, Math.min(room, data.length));
      if (take < data.length) refused = true;
      if (take > 0) output.write(Buffer.from(data.subarray(0, take)));
      return take;
    },
    get pendingBytes() {
      return output.destroyed ? 0 : output.writableLength;
    },
    drained() {
      if (output.destroyed || output.writableLength === 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        output.once('drain', () => resolve());
        output.once('close', () => resolve());
      });
    },
    setReading(on) {
      if (on) input.resume();
      else input.pause();
    },
    async stop() {
      await Promise.all(
        sockets.map(
          (s) =>
            new Promise<void>((resolve) => {
              if (s.closed) return resolve();
              s.once('close', () => resolve());
              s.destroy();
            }),
        ),
      );
    },
  };
}
