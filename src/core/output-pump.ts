/**
 * A frontend's side of QEMU's output flow control, for frontends that read the guest's
 * output from a stream (a child's stdout, QEMU's socket for one port): every chunk reaches
 * every device whole and in order, and while any device has not taken all of it the
 * source is paused — the guest then blocks in its own write(), as a guest whose UART holds
 * its transmitter would. A device that took part of a chunk gets the rest when it says it
 * is writable again; the others are not written twice. What the pump holds is bounded by
 * what a paused source can still deliver (a chunk or two per source).
 */
import type { PumpDevice } from './guest-side.ts';

/** Where the guest's output comes from: paused while a device is behind. */
export interface OutputSource {
  pause(): void;
  resume(): void;
}

/**
 * A safety net, not the signal: devices say when they are writable again, but one that is
 * stopped while the pump waits for it never will.
 */
const RECHECK_MS = 1000;

export class OutputPump {
  readonly #devices: readonly PumpDevice[];
  readonly #source: OutputSource;
  /** Per device, what it has not taken yet (each chunk shared by reference). */
  readonly #pending = new Map<PumpDevice, Buffer[]>();
  readonly #listeners = new Map<PumpDevice, () => void>();
  #paused = false;
  #recheck: NodeJS.Timeout | undefined;
  #closed = false;
  #flushWaiters: Array<() => void> = [];

  constructor(devices: readonly PumpDevice[], source: OutputSource) {
    this.#devices = devices;
    this.#source = source;
    for (const d of devices) {
      const listener = (): void => this.#flush(d);
      this.#listeners.set(d, listener);
      d.on('writable', listener);
    }
  }

  /** Bytes some device has not taken yet (summed per device). */
  get pendingBytes(): number {
    let n = 0;
    for (const q of this.#pending.values()) for (const b of q) n += b.length;
    return n;
  }

  /** Whether the source is paused because a device is behind. */
  get waiting(): boolean {
    return this.#paused;
  }

  /**
   * Resolves once every device has taken all that was pushed (or the pump is closed): a
   * source that ended may still have output pending for a slow client.
   */
  flushed(): Promise<void> {
    if (this.#closed || this.#pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }

  /** Guest output. `chunk` is handed over: never reused by the caller, shared by the devices. */
  push(chunk: Buffer): void {
    if (this.#closed || chunk.length === 0) return;
    for (const d of this.#devices) {
      if (d.stopped) continue;
      const queue = this.#pending.get(d);
      if (queue !== undefined) {
        queue.push(chunk);
        continue;
      }
      const n = d.writeOwned(chunk);
      if (n < chunk.length) this.#pending.set(d, [n === 0 ? chunk : chunk.subarray(n)]);
    }
    if (this.#pending.size > 0 && !this.#paused) {
      this.#paused = true;
      this.#source.pause();
      this.#recheck = setInterval(() => {
        for (const d of [...this.#pending.keys()]) this.#flush(d);
      }, RECHECK_MS);
      this.#recheck.unref();
    }
  }

  /** Stop listening to the devices; what they have not taken is given up (counted as theirs). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const [d, l] of this.#listeners) d.off('writable', l);
    for (const [d, q] of this.#pending) d.discard(q.reduce((n, b) => n + b.length, 0));
    this.#pending.clear();
    this.#resume();
  }

  #flush(d: PumpDevice): void {
    const queue = this.#pending.get(d);
    if (queue === undefined) return;
    if (d.stopped) {
      this.#pending.delete(d);
    } else {
      while (queue.length > 0) {
        const head = queue[0] as Buffer;
        const n = d.writeOwned(head);
        if (n < head.length) {
          queue[0] = head.subarray(n);
          return;
        }
        queue.shift();
      }
      this.#pending.delete(d);
    }
    if (this.#pending.size === 0) this.#resume();
  }

  #resume(): void {
    if (this.#recheck !== undefined) clearInterval(this.#recheck);
    this.#recheck = undefined;
    const waiters = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const w of waiters) w();
    if (!this.#paused) return;
    this.#paused = false;
    this.#source.resume();
  }
}
