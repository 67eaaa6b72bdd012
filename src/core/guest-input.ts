/**
 * A device's input handed to a guest that reads it from an fd (`chardev run`'s child's
 * stdin): the data plane's way in.
 *
 * Two paths, one set of rules (lossless flow control, QEMU's):
 *
 * - **JavaScript path.** Every 'data' chunk is written to the guest's stdin (a Node stream
 *   over the pipe's write end). While that write says the pipe is full, the 'data' listener
 *   is removed, so the device stops reading its clients (a UART with a full receive FIFO):
 *   input waits in the clients and the kernel, not here; it comes back on 'drain'.
 * - **Kernel path.** When the guest's stdin is a socketpair (`guestInputSocket`, as socat's
 *   EXEC and child_process give it) or a pipe, there is one device, and
 *   `Chardev.kernelSource` hands out its writer's socket (the only client, a raw tcp or unix
 *   socket, this the only 'data' listener) and a chunk says the client is streaming (or
 *   small chunks come as a busy exchange whose output can go to the thread too:
 *   `ChunkRate`, `Chardev.duplexKernelPath`), the socket is claimed — libuv stops reading it, what Node had read ahead goes first through
 *   the JavaScript path — and once Node's queue to the guest is empty the data-plane thread
 *   (platform/data-plane.ts) splices in its poll loop, no byte entering V8: socket → an
 *   intermediate pipe of ours → the socketpair (splice(2) needs a pipe on one side of each
 *   transfer), or socket → the guest's pipe in one hop. The client is held exactly as on
 *   the JavaScript path: while the guest does not read, the socketpair and then the pipe
 *   fill, nothing more is spliced, the socket's buffers fill and TCP holds the client.
 *   A run ends when the client is quiet for GRACE_MS (libuv reads it again: interactive
 *   input is as quick as before), at end of file or an error (Node then sees it and the
 *   client goes as it always did), or synchronously, before anything else could reach the
 *   guest or anything about the clients changes: the device calls `settle()` before every
 *   client change, before any other input (`receive`, a BREAK) and before a new 'data'
 *   listener, so bytes spliced are counted and ahead of everything after them.
 *
 * Why a socketpair rather than a pipe for the guest's stdin: a reader woken on a pipe pays
 * more per wake-up than on a unix socket; measured on the bench's 1-byte round trip (2026-12,
 * 2 cores, the same code otherwise, runs alternated), p99 was 1.5–2.0× socat's with a pipe
 * and 1.2× with the socketpair (target ≤ 1.3×). Small input never takes the kernel path, so it pays nothing for
 * the second hop.
 *
 * Nothing is ever lost in between: when a run ends, every byte is at the guest (counted in
 * `bytesToGuest`), still in the socket (Node reads it next), or in the intermediate pipe —
 * read out here at once, in the same synchronous step, and queued to the guest ahead of
 * anything later. No byte is lost, repeated or reordered.
 */
import * as net from 'node:net';
import type { Writable } from 'node:stream';
import type { InputDevice, KernelSource } from './guest-side.ts';
import { GUEST_PIPE_BYTES } from './guest-output.ts';
import { ChunkRate } from './chunk-rate.ts';
import { libc, nativeProblem } from '../platform/native.ts';
import { isPipe, isSocket, makePipe, makeSocketPair, readableBytes, type PipeEnds } from '../platform/splice.ts';
import { dataPlane, type DataPlaneRun, type RunResult } from '../platform/data-plane.ts';

export interface GuestInputOptions {
  /** Use the kernel path where the conditions allow (default true). False: always the JavaScript path. */
  readonly kernelPath?: boolean;
}

/**
 * A pipe for a guest's input, the one-hop alternative to `guestInputSocket`: a client's
 * socket is spliced straight into it, but a guest woken on a pipe answers interactive
 * input later (see the header), so `chardev run` and the bench use the socketpair. Hand
 * `readFd` to the guest and `writeFd` to `GuestInput`. Sized like the output's
 * (`GUEST_PIPE_BYTES`). Throws `NativeUnavailableError` without koffi.
 */
export function guestInputPipe(size: number = GUEST_PIPE_BYTES): PipeEnds {
  return makePipe({ size });
}

/**
 * A socketpair for a guest's input: hand `readFd` to the guest (a child's stdin, then close
 * it here) and `writeFd` to `GuestInput`. Both ends close-on-exec; the guest's end blocks
 * (it waits in read(2) for input), ours is made non-blocking by libuv. What socat's EXEC
 * and child_process's 'pipe' give a child, so interactive input wakes the guest as quickly;
 * bulk input is still spliced, through a pipe of `GuestInput`'s. Throws
 * `NativeUnavailableError` without koffi; a caller then uses Node's own stdin stream.
 */
export function guestInputSocket(): PipeEnds {
  return makeSocketPair();
}

/** A chunk this large says the client is streaming: the kernel path takes over from the next byte, if allowed. */
const BURST_BYTES = 4 * 1024;
/** After the client's socket went empty, how long the data-plane thread waits for more before libuv reads it again. */
const GRACE_MS = 20;
/** Errors of a run that say this pair cannot be spliced at all: the JavaScript path for good. */
const CANNOT_SPLICE: ReadonlySet<string> = new Set(['EINVAL', 'EBADF', 'ENOSYS', 'EWORKER']);

export class GuestInput {
  readonly #devices: readonly InputDevice[];
  readonly #writer: Writable;
  /** The guest's stdin (our end), while the kernel path is possible. */
  readonly #fd: number | undefined;
  /** The guest's stdin is a socket: runs go through `#via`, made on the first run. */
  readonly #viaNeeded: boolean;
  #via: PipeEnds | undefined;
  #drainedBytes = 0;
  #kernelCapable: boolean;
  /** Our 'data' listener is on the devices (the JavaScript path takes input). */
  #listening = false;
  /** Inside `kernelSource`: the claim delivers read-ahead through the listener, which must not let go then. */
  #claiming = false;
  /** A claimed socket waiting for Node's queue to the pipe to empty before its run starts. */
  #pending: KernelSource | undefined;
  #run: DataPlaneRun | undefined;
  #runSource: KernelSource | undefined;
  #runCounted = 0;
  /** The current run's waits so far (its progress reports). */
  #runWaits = 0;
  #immediate: NodeJS.Immediate | undefined;
  /** Small chunks close together: a busy exchange, which may move to the kernel path with the output (`ChunkRate`). */
  readonly #rate = new ChunkRate();
  #closed = false;
  #spliced = 0;
  #runs = 0;
  #waits = 0;

  readonly #listener = (chunk: Buffer): void => this.#onData(chunk);

  /**
   * Hand the devices' input to `target`: the write end of a pipe the guest reads
   * (`guestInputSocket`, or `guestInputPipe`; taken over, closed by `close()`), or a stream (Node's own pipe to a
   * child: the JavaScript path only).
   */
  constructor(target: number | Writable, devices: readonly InputDevice[], options: GuestInputOptions = {}) {
    this.#devices = devices;
    if (typeof target === 'number') {
      this.#writer = new net.Socket({ fd: target, readable: false, writable: true });
      this.#fd = target;
      const pipe = isPipe(target);
      this.#viaNeeded = !pipe && isSocket(target);
      this.#kernelCapable =
        options.kernelPath !== false &&
        devices.length === 1 &&
        (pipe || this.#viaNeeded) &&
        process.versions['bun'] === undefined &&
        nativeProblem() === undefined;
    } else {
      this.#writer = target;
      this.#fd = undefined;
      this.#viaNeeded = false;
      this.#kernelCapable = false;
    }
    // The guest may exit without reading its input; EPIPE then is not an error of ours.
    this.#writer.on('error', () => {});
    this.#writer.on('drain', () => this.#drained());
    for (const d of devices) {
      d.addInput(this);
    }
    this.#listen();
  }

  /** Whether the kernel path is possible at all: a socketpair or pipe, one device, native calls available. */
  get kernelCapable(): boolean {
    return this.#kernelCapable;
  }

  /**
   * Bytes the kernel moved to the guest (splice), how many runs moved them, how often a run
   * waited for the guest to read, and bytes a run left in the intermediate pipe that were
   * read out and written to the guest when it ended.
   */
  get stats(): { readonly spliced: number; readonly runs: number; readonly waits: number; readonly drained: number } {
    return { spliced: this.#spliced, runs: this.#runs, waits: this.#waits + this.#runWaits, drained: this.#drainedBytes };
  }

  /**
   * Something else is about to reach the guest or a client changes: a run stops now
   * (synchronously: what it spliced is counted, ahead of what comes next), a claimed socket
   * goes back to its transport, and the next step decides the path again.
   */
  settle(): void {
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.release();
    this.#run?.stop();
  }

  /** Stop handing input to the guest and close its stdin (`target` too, when it was a stream). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.settle();
    this.#closed = true;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#immediate = undefined;
    this.#unlisten();
    for (const d of this.#devices) {
      d.removeInput(this);
    }
    this.#writer.destroy();
    const via = this.#via;
    this.#via = undefined;
    if (via !== undefined) {
      libc().closeFd(via.readFd);
      libc().closeFd(via.writeFd);
    }
  }

  #listen(): void {
    if (this.#listening || this.#closed) return;
    this.#listening = true;
    // Idempotent per device, so a listener is never attached twice.
    for (const d of this.#devices) {
      d.off('data', this.#listener);
      d.on('data', this.#listener);
    }
  }

  #unlisten(): void {
    if (!this.#listening) return;
    this.#listening = false;
    for (const d of this.#devices) d.off('data', this.#listener);
  }

  /**
   * A burst starts a run, or a busy exchange of small chunks that the guest's output can
   * join on the thread (`ChunkRate`); never a client's arrival, and never a client that
   * types: a run with only this direction on the thread costs an interactive round trip a
   * wake-up of each thread (measured on the bench's latency row, 2026-12: a run started on
   * connect cost ~25 µs p50).
   */
  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    // Input the guest does not read yet waits in the clients and the kernel, not here.
    if (!this.#writer.write(chunk) && !this.#claiming) this.#unlisten();
    if (!this.#kernelCapable) return;
    if (chunk.length >= BURST_BYTES || (this.#rate.busy(performance.now()) && this.#devices[0]?.duplexKernelPath?.() === true)) this.#schedule();
  }

  #drained(): void {
    if (this.#closed) return;
    const pending = this.#pending;
    if (pending !== undefined && this.#writer.writableLength === 0) {
      this.#pending = undefined;
      this.#startRun(pending);
      return;
    }
    this.#listen();
  }

  /** The next step on a later turn (never from inside a device's 'data' or a client change). */
  #schedule(): void {
    if (this.#closed || !this.#kernelCapable || this.#immediate !== undefined) return;
    this.#immediate = setImmediate(() => {
      this.#immediate = undefined;
      this.#step();
    });
  }

  /** Move to the kernel path if everything allows it now. */
  #step(): void {
    if (this.#closed || !this.#kernelCapable || this.#run !== undefined || this.#pending !== undefined) return;
    // The listener off means Node's queue to the pipe is full: 'drain' comes first.
    if (!this.#listening || this.#writer.writableLength > 0) return;
    const device = this.#devices[0];
    if (device === undefined || device.stopped) return;
    let source: KernelSource | undefined;
    this.#claiming = true;
    try {
      source = device.kernelSource(this.#listener);
    } finally {
      this.#claiming = false;
    }
    if (source === undefined) return;
    if (this.#writer.writableLength > 0) {
      // What Node had read ahead is queued to the pipe: it goes first; the run starts on 'drain'.
      this.#pending = source;
      return;
    }
    this.#startRun(source);
  }

  #startRun(source: KernelSource): void {
    const fd = this.#fd;
    if (fd === undefined || this.#closed) {
      source.release();
      return;
    }
    this.#runCounted = 0;
    this.#runSource = source;
    this.#runWaits = 0;
    const events = { progress: (moved: number, waits: number) => this.#runProgress(source, moved, waits), ended: (r: RunResult) => this.#runEnded(source, r) };
    try {
      if (this.#viaNeeded) {
        // Both ends non-blocking: the thread splices with SPLICE_F_NONBLOCK, and what a run
        // leaves is read out here without waiting. Sized like the output's pipe.
        this.#via ??= makePipe({ size: GUEST_PIPE_BYTES, nonBlocking: true });
        this.#run = dataPlane().startVia({ from: source.fd, via: this.#via, to: fd, graceMs: GRACE_MS }, events);
      } else {
        this.#run = dataPlane().start({ from: source.fd, to: fd, graceMs: GRACE_MS }, events);
      }
      this.#runs++;
    } catch {
      // No data-plane thread here (no koffi, no worker threads): the JavaScript path for good.
      this.#run = undefined;
      this.#runSource = undefined;
      this.#kernelCapable = false;
      source.release();
    }
  }

  /**
   * Read out what a via run left in the pipe (it ended: nothing writes there now) and queue
   * it to the guest, counted as delivered like any written input. At most the pipe's size.
   * Node's queue may go over its mark here; the next 'data' sees that and lets go, as ever.
   */
  #drainVia(source: KernelSource): void {
    const via = this.#via;
    if (via === undefined) return;
    const c = libc();
    for (;;) {
      const size = readableBytes(via.readFd);
      if (size === 0) return;
      const buf = Buffer.allocUnsafe(size);
      const n = c.read(via.readFd, buf);
      if (n <= 0) return;
      this.#writer.write(n === size ? buf : buf.subarray(0, n));
      this.#drainedBytes += n;
      source.commit(n);
    }
  }

  #runProgress(source: KernelSource, moved: number, waits: number): void {
    if (source !== this.#runSource) return;
    this.#runWaits = waits;
    const n = moved - this.#runCounted;
    if (n <= 0) return;
    this.#runCounted = moved;
    this.#spliced += n;
    source.commit(n);
  }

  #runEnded(source: KernelSource, r: RunResult): void {
    this.#runProgress(source, r.moved, r.waits);
    this.#runWaits = 0;
    this.#waits += r.waits;
    this.#run = undefined;
    this.#runSource = undefined;
    // What the run left between its hops goes to the guest before anything read later.
    this.#drainVia(source);
    // The transport reads the socket again: the rest of a stream, its end of file or its error.
    source.release();
    const end = r.end;
    if (typeof end === 'object' && CANNOT_SPLICE.has(end.error)) this.#kernelCapable = false;
    // 'stopped' (a change: the next burst decides), 'idle' (the client
    // paused: libuv wakes for its next byte), 'eof' and other errors (Node sees them now and
    // the client goes): the JavaScript path goes on.
  }
}
