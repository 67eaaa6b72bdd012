/**
 * `pty`: a pty pair from /dev/ptmx (raw), the slave path reported, the master kept.
 *
 * Client detection is QEMU's (char-pty.c): poll the master; no POLLHUP means some process
 * holds the slave. While nobody does, it is re-checked every `ptyPollMs` (QEMU: 1 s).
 * Connected → reader on the master, 'open'. The reader's EIO (last slave fd closed) →
 * 'close' and back to polling. Guest output while disconnected is discarded and reported
 * as written (QEMU returns len; it must not sit in the pty for a later client), except
 * that a write first re-polls, so output is not lost in the gap before the timer notices
 * a new client (QEMU ≥ 8.2).
 *
 * The reader is one of the device's hub clients: it gets the history first, its input
 * reaches the guest only while it is the writer, and its queue is bounded like any client's.
 */
import type { Backend, BackendContext } from '../core/backend.ts';
import { ChardevError } from '../errors.ts';
import type { ByteReader } from '../platform/index.ts';
import type { ClientSink, HubClient } from '../core/hub.ts';

/** How often a draining stop re-checks what the reader has left unread. */
const DRAIN_POLL_MS = 10;
/** How many empty readings in a row count as drained. */
const DRAIN_EMPTY_CHECKS = 5;

/**
 * Every client-less pty of a period re-checked on one timer: a process with hundreds of them
 * (the daemon) wakes once per period, not once per pty (each wake-up costs far more than
 * the poll(2) itself).
 */
interface Ticker {
  readonly timer: NodeJS.Timeout;
  readonly checks: Set<() => void>;
}
const tickers = new Map<number, Ticker>();

function joinTicker(periodMs: number, check: () => void): void {
  let ticker = tickers.get(periodMs);
  if (ticker === undefined) {
    const checks = new Set<() => void>();
    // A copy: a check that finds its reader leaves the set.
    const timer = setInterval(() => {
      for (const c of [...checks]) c();
    }, periodMs);
    // unref: a pty waiting for a client must not keep the process alive on its own.
    timer.unref();
    ticker = { timer, checks };
    tickers.set(periodMs, ticker);
  }
  ticker.checks.add(check);
}

function leaveTicker(periodMs: number, check: () => void): void {
  const ticker = tickers.get(periodMs);
  if (ticker === undefined) return;
  ticker.checks.delete(check);
  if (ticker.checks.size > 0) return;
  clearInterval(ticker.timer);
  tickers.delete(periodMs);
}

export function createPtyBackend(ctx: BackendContext): Backend {
  const { platform, events, id } = ctx;
  let pty;
  try {
    pty = platform.openPty();
  } catch (e) {
    throw new ChardevError('ERR_BACKEND_OPEN', `${id}: cannot allocate a pty: ${(e as Error).message}`, { cause: e });
  }
  const { masterFd, slavePath } = pty;
  /**
   * `starting` until the first check (a microtask after creation); `waiting` for a reader,
   * on the shared ticker; `connected` while a process holds the slave (our reader on the
   * master is a hub client); `stopped` for good.
   */
  let state: 'starting' | 'waiting' | 'connected' | 'stopped' = 'starting';
  let reading = false;
  let reader: ByteReader | undefined;
  /** The reader as one of the device's clients (history, writer role, bounded queue). */
  let client: HubClient | undefined;
  let discarded = 0;
  const writer = platform.openWriter(masterFd, {
    // The guest may be waiting for the reader to take more.
    onDrain: () => client?.drained(),
    onError: (err) => events.error(new ChardevError('ERR_BACKEND_OPEN', `${id}: pty ${slavePath}: ${err.message}`, { cause: err })),
  });

  const hasReader = (): boolean => {
    try {
      return platform.ptyHasReader(masterFd);
    } catch {
      return false;
    }
  };

  /** Every move of `state` but the first check's: the ticker is joined exactly while waiting. */
  const moveTo = (next: 'waiting' | 'connected' | 'stopped'): void => {
    if (state === next || state === 'stopped') return;
    if (state === 'waiting') leaveTicker(ctx.ptyPollMs, check);
    state = next;
    if (next === 'waiting') joinTicker(ctx.ptyPollMs, check);
  };

  const disconnect = (): void => {
    reader?.close();
    reader = undefined;
    if (state !== 'connected') return;
    client?.detach();
    client = undefined;
    moveTo('waiting');
  };

  const sink: ClientSink = {
    // The writer's own bound applies; what it refuses is counted in its droppedBytes.
    send: (data) => void writer.write(data),
    get queuedBytes() {
      return writer.queuedBytes;
    },
    notice: (text) => void writer.write(Buffer.from(`\r\n[chardev: ${text}]\r\n`)),
    // Nobody can be pushed off a pty; the reader just stops getting output until it reopens.
    close: () => {
      client = undefined;
    },
    pause: () => reader?.pause(),
    resume: () => {
      if (reading) reader?.resume();
    },
    // The master, for guest output spliced to it (`GuestOutput`) once the writer's queue is
    // empty, so spliced bytes follow everything written before.
    ...(platform.realFds === true ? { kernelPath: { fd: () => (state === 'connected' && writer.queuedBytes === 0 ? masterFd : undefined) } } : {}),
  };

  function check(): void {
    if ((state !== 'starting' && state !== 'waiting') || !hasReader()) return;
    moveTo('connected');
    try {
      // Attach before reading starts, so nothing the reader sends can arrive ahead of its client.
      // Attaching replays the history, and opens the device if nobody else was attached.
      client = ctx.hub.attach(sink, { kind: 'pty', label: slavePath });
    } catch (e) {
      events.error(new ChardevError('ERR_BACKEND_BUSY', `${id}: pty ${slavePath}: reader not served: ${(e as Error).message}`, { cause: e }));
    }
    try {
      reader = platform.openPtyReader(masterFd, {
        onData: (chunk) => client?.input(chunk),
        onHangup: disconnect,
        onError: (err) => {
          events.error(new ChardevError('ERR_BACKEND_OPEN', `${id}: pty ${slavePath}: ${err.message}`, { cause: err }));
          disconnect();
        },
      });
    } catch (e) {
      client?.detach();
      client = undefined;
      events.error(new ChardevError('ERR_BACKEND_OPEN', `${id}: pty ${slavePath}: ${(e as Error).message}`, { cause: e }));
      moveTo('waiting');
      return;
    }
    if (!reading) reader.pause();
  }

  // QEMU checks once when the frontend attaches, then polls; so do we.
  queueMicrotask(() => {
    check();
    if (state === 'starting') moveTo('waiting');
  });

  return {
    filename: `pty:${slavePath}`,
    where: `char device redirected to ${slavePath} (label ${id})`,
    ptyPath: slavePath,
    openAtStart: false,
    get droppedBytes() {
      return discarded + writer.droppedBytes;
    },
    write(data) {
      if (state === 'stopped') return 0;
      // Re-poll first (QEMU ≥ 8.2): output right after a reader appears is not lost.
      if (state !== 'connected') check();
      if (state !== 'connected') {
        discarded += data.length;
        return data.length;
      }
      // The chardev hands the bytes to every client, this reader included.
      return data.length;
    },
    async drained() {
      await writer.drained();
      // Then the kernel's copy: closing the master would discard what the reader has not read.
      // FIONREAD sees only the line discipline's buffer, not bytes still on their way to it
      // (a kernel worker moves them, late under load), so "empty" must hold a few times running.
      let emptyChecks = 0;
      while (state === 'connected' && emptyChecks < DRAIN_EMPTY_CHECKS) {
        let unread: number;
        try {
          unread = platform.ptyUnreadBytes(slavePath);
        } catch {
          return;
        }
        emptyChecks = unread === 0 ? emptyChecks + 1 : 0;
        await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
      }
    },
    setReading(on) {
      reading = on;
      if (on) reader?.resume();
      else reader?.pause();
    },
    async stop() {
      if (state === 'stopped') return;
      moveTo('stopped');
      reader?.close();
      reader = undefined;
      writer.close();
      platform.close(masterFd);
    },
  };
}
