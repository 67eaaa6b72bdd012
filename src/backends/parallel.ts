/**
 * `<parallel type='dev'>`: a host parallel port through Linux's ppdev (`/dev/parportN`).
 *
 * The port is opened read-write non-blocking and claimed (PPCLAIM), as QEMU's parallel
 * chardev does; anything that refuses PPCLAIM is refused with QEMU's `not a parallel port`.
 *
 * Guest output goes to the port with write(2): ppdev runs the IEEE 1284 compatibility-mode
 * handshake (data, strobe, wait for BUSY) for every byte, so a printer gets the bytes the
 * guest wrote, in order. (QEMU itself drives a host port with data/control ioctls from its
 * parallel-port model; a guest under `chardev qemu`, or any library frontend, hands plain
 * bytes instead, and this is where they go.) A peripheral that is busy — printing, out of
 * paper, offline — takes nothing for a while: bytes wait in a small fixed queue, then
 * `write` returns short and `writable` follows once the port has taken them. Nothing is
 * dropped while the port is merely slow. A hard error (the port vanished) is reported once;
 * output after it is discarded and counted, as for a full disk under `file`.
 *
 * ppdev has no readiness notification for output (its poll reports interrupts only), so a
 * busy port is retried on a timer that backs off to RETRY_MAX_MS. Each write(2) carries at
 * most CHUNK bytes: the handshake runs in the kernel on the calling thread, so the event
 * loop is never held for more than one chunk's handshake at a time.
 *
 * Input: ppdev reads by negotiating a reverse mode (byte or nibble) with the peripheral.
 * While the frontend reads, the port is polled for input every INPUT_POLL_MS when no
 * output is waiting (a read between two writes would switch modes back and forth). A
 * peripheral that refuses the negotiation (EIO: it has no reverse channel, like most
 * printers) gives no input; that is said once, and output goes on.
 */
import type { Backend, BackendContext } from '../core/backend.ts';
import { describeErrno } from '../core/files.ts';
import { ChardevError } from '../errors.ts';
import { ByteQueue, type PlatformError } from '../platform/index.ts';

/** Bytes held while the peripheral is busy; beyond this `write` returns short. */
export const PARALLEL_MAX_QUEUED_BYTES = 64 * 1024;
/** Most bytes per write(2) (ppdev's own limit is 1024). */
const CHUNK = 256;
/** Longest pause between two tries at a busy port. */
const RETRY_MAX_MS = 100;
/** Pause between two reads that found nothing. */
const INPUT_POLL_MS = 100;
/** Most bytes per read(2) (QEMU's CHR_READ_BUF_LEN). */
const READ_MAX = 4096;

function describe(err: unknown): string {
  return describeErrno(err as PlatformError);
}

export function createParallelBackend(ctx: BackendContext, path: string): Backend {
  const { platform, events, id } = ctx;
  let fd: number;
  try {
    fd = platform.openDevice(path);
  } catch (e) {
    throw new ChardevError('ERR_BACKEND_OPEN', `${id}: Could not open '${path}': ${describe(e)}`, { cause: e });
  }
  try {
    platform.claimParallel(fd);
  } catch (e) {
    platform.close(fd);
    throw new ChardevError('ERR_BACKEND_OPEN', `${id}: ${path}: ${(e as Error).message}`, { cause: e });
  }

  const queue = new ByteQueue(PARALLEL_MAX_QUEUED_BYTES);
  let stopped = false;
  /** A hard write error happened: output is discarded from now on. */
  let failed = false;
  let dropped = 0;
  /** write() returned short since the queue last emptied: 'writable' is due. */
  let refused = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryDelay = 1;
  let pumpQueued: NodeJS.Immediate | undefined;
  let drainWaiters: Array<() => void> = [];

  let reading = false;
  /** The peripheral refused reverse-mode negotiation: no input, for the life of the device. */
  let noInput = false;
  let readTimer: NodeJS.Timeout | undefined;

  const settleDrain = (): void => {
    const waiters = drainWaiters;
    drainWaiters = [];
    for (const resolve of waiters) resolve();
  };

  const fail = (e: unknown): void => {
    failed = true;
    dropped += queue.queuedBytes;
    queue.clear();
    settleDrain();
    events.error(new ChardevError('ERR_BACKEND_WRITE', `${id}: parallel port ${path}: ${describe(e)}; further output discarded`, { cause: e }));
    // The frontend may be waiting for room: there is "room" now (everything is discarded).
    if (refused) {
      refused = false;
      events.writable?.();
    }
  };

  const pump = (): void => {
    pumpQueued = undefined;
    if (stopped || failed || retryTimer !== undefined) return;
    const head = queue.head();
    if (head === undefined) {
      settleDrain();
      if (refused) {
        refused = false;
        events.writable?.();
      }
      if (reading) scheduleRead(0);
      return;
    }
    const chunk = head.subarray(0, CHUNK);
    let n: number;
    try {
      n = platform.writeParallel(fd, chunk);
    } catch (e) {
      fail(e);
      return;
    }
    queue.consumeHead(n);
    if (n < chunk.length) {
      // Busy: try again later, backing off while it stays busy.
      const delay = retryDelay;
      retryDelay = Math.min(RETRY_MAX_MS, retryDelay * 2);
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        pump();
      }, delay);
      return;
    }
    retryDelay = 1;
    // One chunk per turn of the event loop: the handshake runs on this thread.
    pumpQueued = setImmediate(pump);
  };

  const readOnce = (): void => {
    readTimer = undefined;
    if (stopped || !reading || noInput) return;
    if (queue.queuedBytes > 0) return; // the pump reschedules the read once output is out
    let chunk: Buffer;
    try {
      chunk = platform.readParallel(fd, READ_MAX);
    } catch (e) {
      noInput = true;
      const code = (e as PlatformError).code;
      const why = code === 'EIO' ? 'the peripheral has no IEEE 1284 reverse channel' : describe(e);
      events.error(new ChardevError('ERR_BACKEND_OPEN', `${id}: parallel port ${path}: no input from it: ${why}; output goes on`, { cause: e }));
      return;
    }
    if (chunk.length > 0) {
      events.receive(Buffer.from(chunk));
      scheduleRead(0);
    } else {
      scheduleRead(INPUT_POLL_MS);
    }
  };

  const scheduleRead = (delay: number): void => {
    if (readTimer !== undefined || stopped || !reading || noInput) return;
    readTimer = setTimeout(readOnce, delay);
  };

  return {
    filename: 'parallel',
    where: `${id}: parallel port ${path}`,
    openAtStart: true,
    get droppedBytes() {
      return dropped;
    },
    write(data) {
      if (stopped) return 0;
      if (failed) {
        dropped += data.length;
        return data.length;
      }
      const take = queue.accept(data);
      if (take < data.length) refused = true;
      if (take > 0 && pumpQueued === undefined && retryTimer === undefined) pump();
      return take;
    },
    get pendingBytes() {
      return queue.queuedBytes;
    },
    drained() {
      if (stopped || failed || queue.queuedBytes === 0) return Promise.resolve();
      return new Promise<void>((resolve) => drainWaiters.push(resolve));
    },
    setReading(on) {
      reading = on;
      if (on) scheduleRead(0);
      else if (readTimer !== undefined) {
        clearTimeout(readTimer);
        readTimer = undefined;
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (retryTimer !== undefined) clearTimeout(retryTimer);
      if (pumpQueued !== undefined) clearImmediate(pumpQueued);
      if (readTimer !== undefined) clearTimeout(readTimer);
      queue.clear();
      settleDrain();
      try {
        platform.releaseParallel(fd);
      } finally {
        platform.close(fd);
      }
    },
  };
}
