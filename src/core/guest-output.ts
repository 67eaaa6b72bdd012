/**
 * The guest's output read from an fd by chardev itself (`Chardev.pipeFrom`, `chardev run`'s
 * piped guest): the data plane of issue 16.
 *
 * Two paths, one set of rules (SPEC §4.1, the flow control of issue 14):
 *
 * - **Kernel path.** When the fd is a pipe and the device's only consumer is its writer on a
 *   plain tcp or unix socket (no viewers, no history, no `<log>`, no stall limit — see
 *   `Chardev.kernelPathFd`), bytes move pipe → socket by splice(2), never entering V8. The
 *   guest is held exactly as on the JavaScript path: while the client's socket is full,
 *   nothing is spliced, the pipe fills, and the guest blocks in its own write(2). chardev
 *   holds nothing in flight (the bytes are in the guest's pipe or the client's socket).
 * - **JavaScript path** (everything else): read(2) into fresh buffers handed to the devices
 *   through an `OutputPump` — `writeOwned` takes what the device can take; while one is
 *   behind the fd is not read.
 *
 * Switching is safe at any point between two transfers, because both paths are driven from
 * here on the main thread and nothing is in flight in between: the kernel path gives way as
 * soon as the conditions stop holding (checked before every splice, and at once on a client
 * change); it is entered only when the JavaScript path holds nothing (the pump is empty) and
 * Node's writable queue for the socket is empty, so spliced bytes always follow every byte
 * Node was given — no byte is lost, repeated or reordered.
 *
 * Waiting (the pipe is empty, the socket is full) is one poll on koffi's worker, shared by
 * every GuestOutput in the process (platform/splice.ts FdPoller).
 */
import * as fs from 'node:fs';
import type { Chardev } from './chardev.ts';
import { OutputPump } from './output-pump.ts';
import { POLLIN, POLLOUT, fdPoller, isPipe, makePipe, pipeSize, readOnce, readableBytes, spliceOnce, type PipeEnds, type Watch } from '../platform/splice.ts';

export interface GuestOutputOptions {
  /** Called after bytes were taken from the fd, with the total so far (progress, benchmarks). */
  readonly onMoved?: (total: number) => void;
  /** Use the kernel path where the conditions allow (default true). False: always the JavaScript path. */
  readonly kernelPath?: boolean;
}

/**
 * The size `guestPipe` asks for. The pipe is the guest's own buffer (its bytes, held by the
 * kernel while the client is behind, as a socket's buffer would hold QEMU's): larger means
 * fewer wake-ups per byte. Measured pipe → loopback TCP by splice: 64 KiB (the default)
 * 0.58 GB/s with ~3,000 polls per 256 MiB; 1 MiB 1.06 GB/s with ~550.
 */
export const GUEST_PIPE_BYTES = 1024 * 1024;

/**
 * A pipe for a guest's output: hand `writeFd` to the guest (a child's stdout and stderr —
 * one pipe keeps their order — then close it here) and `readFd` to `Chardev.pipeFrom` or
 * `GuestOutput`. Both ends are close-on-exec; only the read end is non-blocking, so the
 * guest blocks in write(2) while the device holds it. Made with pipe2 rather than
 * child_process's 'pipe' (a socketpair Node starts reading at once), so no byte is read
 * by Node before the device decides how to move it. Throws `NativeUnavailableError`
 * without koffi.
 */
export function guestPipe(size: number = GUEST_PIPE_BYTES): PipeEnds {
  return makePipe({ nonBlockingRead: true, size });
}

/** Which path moves the bytes now. */
export type GuestOutputPath = 'kernel' | 'js';

/** Bytes read per read(2) on the JavaScript path: Node's own chunk size for streams. */
const READ_CHUNK = 64 * 1024;
/** A read this small is copied out, so a 64 KiB buffer is not kept alive for a few bytes. */
const SMALL_READ = 4 * 1024;
/** Most bytes asked of one splice; the kernel moves what the pipe holds and the socket takes. */
const SPLICE_CHUNK = 16 * 1024 * 1024;
/**
 * Transfers per turn of the event loop before yielding: a guest that never stops writing
 * (to a client that keeps up, or to nobody) must not starve timers, other devices and input.
 */
const TRANSFERS_PER_TURN = 64;
/** While waiting for Node's queue to empty before the kernel path takes over. */
const IDLE_RECHECK_MS = 2;
/** After a client's socket failed under splice, how long to wait for the hub to see it go. */
const BROKEN_RECHECK_MS = 50;

export class GuestOutput {
  readonly #fd: number;
  readonly #devices: readonly Chardev[];
  readonly #pump: OutputPump;
  readonly #options: GuestOutputOptions;
  /** The kernel path is possible at all: one device, a pipe, native calls available. */
  #kernelCapable: boolean;
  #path: GuestOutputPath = 'js';
  /** The pump paused us: a device is behind. Its resume runs the next step. */
  #held = false;
  #watch: Watch | undefined;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  /** A splice to this socket fd failed: wait for the hub to let the client go before moving on. */
  #brokenFd: number | undefined;
  #eof = false;
  #closed = false;
  #moved = 0;
  #spliced = 0;
  #switches = 0;
  #waits = 0;
  readonly #onClient = (): void => this.#reconsider();
  #endedResolve: () => void = () => {};
  /** Resolves once the fd reached end of file and every byte was taken by the devices (or on close). */
  readonly ended: Promise<void>;

  /**
   * Read the guest's output from `fd` (taken over: closed by `close()`) into `devices`.
   * The fd is made non-blocking if it is not already (for a pipe, only chardev's end is
   * touched: O_NONBLOCK is per open file description, and the guest's end stays blocking).
   */
  constructor(fd: number, devices: readonly Chardev[], options: GuestOutputOptions = {}) {
    this.#fd = fd;
    this.#devices = devices;
    this.#options = options;
    this.ended = new Promise((resolve) => (this.#endedResolve = resolve));
    this.#pump = new OutputPump(devices, {
      pause: () => {
        this.#held = true;
        this.#waits++;
        this.#cancelWait();
      },
      resume: () => {
        this.#held = false;
        if (this.#eof) this.#finish();
        else this.#schedule();
      },
    });
    this.#kernelCapable = options.kernelPath !== false && devices.length === 1 && isPipe(fd);
    for (const d of devices) {
      d.addOutput(this);
      d.on('client', this.#onClient);
    }
    this.#schedule();
  }

  /** The path bytes take now. */
  get path(): GuestOutputPath {
    return this.#path;
  }

  /** Bytes taken from the fd so far. */
  get bytesMoved(): number {
    return this.#moved;
  }

  /**
   * Of those, bytes the kernel moved (splice); how often the path changed; how often the
   * guest was held for a client (a full socket under splice, a device refusing output).
   */
  get stats(): { readonly spliced: number; readonly switches: number; readonly waits: number; readonly pipeSize: number | undefined } {
    return { spliced: this.#spliced, switches: this.#switches, waits: this.#waits, pipeSize: this.#closed ? undefined : pipeSize(this.#fd) };
  }

  /** Bytes read but not yet taken by some device (the JavaScript path's pump). */
  get pendingBytes(): number {
    return this.#pump.pendingBytes;
  }

  /**
   * Stop reading and close the fd. What a device has not taken yet is given up (counted in
   * its `dropped`); the guest then sees EPIPE when it writes. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelWait();
    this.#pump.close();
    for (const d of this.#devices) {
      d.off('client', this.#onClient);
      d.removeOutput(this);
    }
    try {
      fs.closeSync(this.#fd);
    } catch {
      // Already gone.
    }
    this.#endedResolve();
  }

  #cancelWait(): void {
    fdPoller().cancel(this.#watch);
    this.#watch = undefined;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#immediate = undefined;
  }

  /** Run the next step on a later turn (yield to the event loop). */
  #schedule(): void {
    if (this.#closed || this.#immediate !== undefined) return;
    this.#cancelWait();
    this.#immediate = setImmediate(() => {
      this.#immediate = undefined;
      this.#step();
    });
  }

  #waitFor(fd: number, events: number): void {
    this.#watch = fdPoller().watch(fd, events, () => {
      this.#watch = undefined;
      this.#step();
    });
  }

  #waitMs(ms: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#step();
    }, ms);
  }

  /**
   * A client came, left or changed role: the path may change before the next transfer
   * rather than after it. Never a step from here: clients change inside a device's `write`
   * (a pty backend attaches its reader there), and a step then would hand the device the
   * next chunk before the one it is taking — so the step runs on the next turn.
   */
  #reconsider(): void {
    if (this.#closed || this.#held || this.#eof) return;
    this.#brokenFd = undefined;
    this.#schedule();
  }

  #setPath(path: GuestOutputPath): void {
    if (this.#path === path) return;
    this.#path = path;
    this.#switches++;
  }

  #moved_(n: number): void {
    this.#moved += n;
    this.#options.onMoved?.(this.#moved);
  }

  #step(): void {
    if (this.#closed || this.#held || this.#eof || this.#watch !== undefined || this.#timer !== undefined) return;
    if (this.#brokenFd !== undefined) {
      // The last splice found the client's socket broken; until the hub lets it go nothing
      // is read (the guest waits), so its bytes are not counted as sent to a dead client.
      if (this.#kernelFd() === this.#brokenFd) {
        this.#waitMs(BROKEN_RECHECK_MS);
        return;
      }
      this.#brokenFd = undefined;
    }
    const fd = this.#kernelFd();
    if (fd !== undefined) {
      this.#setPath('kernel');
      this.#spliceStep(fd);
      return;
    }
    if (this.#kernelCapable && this.#pump.pendingBytes === 0 && (this.#devices[0] as Chardev).kernelPathAfterNode()) {
      // Everything but Node's queue allows the kernel path: let Node finish sending what it
      // has (the guest waits meanwhile), then splice after it.
      this.#waitMs(IDLE_RECHECK_MS);
      return;
    }
    this.#setPath('js');
    this.#readStep();
  }

  #kernelFd(): number | undefined {
    if (!this.#kernelCapable || this.#pump.pendingBytes > 0) return undefined;
    return (this.#devices[0] as Chardev).kernelPathFd();
  }

  #spliceStep(first: number): void {
    const device = this.#devices[0] as Chardev;
    let out: number | undefined = first;
    for (let i = 0; i < TRANSFERS_PER_TURN; i++) {
      if (i > 0) out = device.kernelPathFd();
      if (out === undefined) {
        // The conditions changed between two transfers: the JavaScript path takes over here.
        this.#step();
        return;
      }
      const r = spliceOnce(this.#fd, out, SPLICE_CHUNK);
      if (typeof r === 'number') {
        this.#spliced += r;
        device.countKernelOutput(r);
        this.#moved_(r);
        continue;
      }
      if (r === 'eof') {
        this.#eof = true;
        this.#finish();
        return;
      }
      if (r === 'again') {
        // Which side is not ready: bytes in the pipe mean the socket is full.
        if (readableBytes(this.#fd) > 0) {
          this.#waits++;
          this.#waitFor(out, POLLOUT);
        } else {
          this.#waitFor(this.#fd, POLLIN);
        }
        return;
      }
      if (r.error === 'EPIPE' || r.error === 'ECONNRESET' || r.error === 'ENOTCONN' || r.error === 'ESHUTDOWN') {
        // The client is gone (its socket says so before Node does): nothing moved.
        this.#brokenFd = out;
        this.#waitMs(BROKEN_RECHECK_MS);
        return;
      }
      // Anything else (EINVAL: this pair cannot be spliced) ends the kernel path for this
      // source; the JavaScript path moves the bytes from here on.
      this.#kernelCapable = false;
      this.#step();
      return;
    }
    this.#schedule();
  }

  #readStep(): void {
    for (let i = 0; i < TRANSFERS_PER_TURN; i++) {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      const r = readOnce(this.#fd, buf);
      if (typeof r === 'number') {
        // A fresh buffer, never reused: the devices may keep it (writeOwned).
        const chunk = r < SMALL_READ ? Buffer.from(buf.subarray(0, r)) : buf.subarray(0, r);
        this.#moved_(r);
        this.#pump.push(chunk);
        if (this.#held || this.#closed) return;
        // The JavaScript path gives way to the kernel path as soon as it can.
        if (this.#kernelCapable && this.#kernelFd() !== undefined) {
          this.#step();
          return;
        }
        continue;
      }
      if (r === 'again') {
        this.#waitFor(this.#fd, POLLIN);
        return;
      }
      // End of file, or a read error (EIO: nothing more will come): deliver what is pending.
      this.#eof = true;
      if (!this.#held) this.#finish();
      return;
    }
    this.#schedule();
  }

  /** End of file: once the pump is empty (or at once), `ended` resolves; the fd is closed. */
  #finish(): void {
    if (this.#closed) return;
    if (this.#pump.pendingBytes > 0) return;
    this.close();
  }
}
