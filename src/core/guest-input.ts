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
 * - **Kernel path.** When the guest's stdin is a pipe, there is one device, and
 *   `Chardev.kernelSource` hands out its writer's socket (the only client, a raw tcp or unix
 *   socket, this the only 'data' listener) and a chunk says the client is streaming, the
 *   socket is claimed — libuv stops reading it, what Node had read ahead goes first through
 *   the JavaScript path — and once Node's queue to the pipe is empty the data-plane thread
 *   (platform/data-plane.ts) splices socket → pipe in its poll loop, no byte entering V8.
 *   The client is held exactly as on the JavaScript path: while the guest does not read,
 *   the pipe is full, nothing is spliced, the socket's buffers fill and TCP holds the client.
 *   A run ends when the client is quiet for GRACE_MS (libuv reads it again: interactive
 *   input is as quick as before), at end of file or an error (Node then sees it and the
 *   client goes as it always did), or synchronously, before anything else could reach the
 *   guest or anything about the clients changes: the device calls `settle()` before every
 *   client change, before any other input (`receive`, a BREAK) and before a new 'data'
 *   listener, so bytes spliced are counted and ahead of everything after them.
 *
 * Nothing is ever held in between: a splice moves bytes from the socket to the pipe or
 * leaves them in the socket, so when a run ends every byte is at the guest (counted in
 * `bytesToGuest`) or still in the socket, where Node reads it next. No byte is lost,
 * repeated or reordered.
 */
import * as net from 'node:net';
import type { Writable } from 'node:stream';
import type { InputDevice, KernelSource } from './guest-side.ts';
import { GUEST_PIPE_BYTES } from './guest-output.ts';
import { nativeProblem } from '../platform/native.ts';
import { isPipe, makePipe, type PipeEnds } from '../platform/splice.ts';
import { dataPlane, type DataPlaneRun, type RunResult } from '../platform/data-plane.ts';

export interface GuestInputOptions {
  /** Use the kernel path where the conditions allow (default true). False: always the JavaScript path. */
  readonly kernelPath?: boolean;
}

/**
 * A pipe for a guest's input: hand `readFd` to the guest (a child's stdin, then close it
 * here) and `writeFd` to `GuestInput`. Both ends close-on-exec; the guest's end blocks (it
 * waits in read(2) for input), ours is made non-blocking by libuv. Sized like the output's
 * (`GUEST_PIPE_BYTES`): fewer wake-ups per byte. A pipe rather than child_process's 'pipe'
 * (a socketpair): splice(2) needs a pipe on one side, so a client's socket can be spliced
 * straight into it. Throws `NativeUnavailableError` without koffi; a caller then uses
 * Node's own pipe and gives `GuestInput` its stream.
 */
export function guestInputPipe(size: number = GUEST_PIPE_BYTES): PipeEnds {
  return makePipe({ size });
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
  /** The pipe's write end, while the kernel path is possible. */
  readonly #fd: number | undefined;
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
  #immediate: NodeJS.Immediate | undefined;
  #closed = false;
  #spliced = 0;
  #runs = 0;
  #waits = 0;

  readonly #listener = (chunk: Buffer): void => this.#onData(chunk);
  readonly #onClient = (): void => this.#schedule();

  /**
   * Hand the devices' input to `target`: the write end of a pipe the guest reads
   * (`guestInputPipe`; taken over, closed by `close()`), or a stream (Node's own pipe to a
   * child: the JavaScript path only).
   */
  constructor(target: number | Writable, devices: readonly InputDevice[], options: GuestInputOptions = {}) {
    this.#devices = devices;
    if (typeof target === 'number') {
      this.#writer = new net.Socket({ fd: target, readable: false, writable: true });
      this.#fd = target;
      this.#kernelCapable =
        options.kernelPath !== false && devices.length === 1 && isPipe(target) && process.versions['bun'] === undefined && nativeProblem() === undefined;
    } else {
      this.#writer = target;
      this.#fd = undefined;
      this.#kernelCapable = false;
    }
    // The guest may exit without reading its input; EPIPE then is not an error of ours.
    this.#writer.on('error', () => {});
    this.#writer.on('drain', () => this.#drained());
    for (const d of devices) {
      d.addInput(this);
      d.on('client', this.#onClient);
    }
    this.#listen();
  }

  /** Bytes the kernel moved (splice), how many runs moved them, and how often a run waited for the guest to read. */
  get stats(): { readonly spliced: number; readonly runs: number; readonly waits: number } {
    return { spliced: this.#spliced, runs: this.#runs, waits: this.#waits };
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
      d.off('client', this.#onClient);
      d.removeInput(this);
    }
    this.#writer.destroy();
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

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    // Input the guest does not read yet waits in the clients and the kernel, not here.
    if (!this.#writer.write(chunk) && !this.#claiming) this.#unlisten();
    if (chunk.length >= BURST_BYTES && this.#kernelCapable) this.#schedule();
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
    try {
      this.#run = dataPlane().start(
        { from: source.fd, to: fd, graceMs: GRACE_MS },
        { progress: (moved) => this.#runProgress(source, moved), ended: (r) => this.#runEnded(source, r) },
      );
      this.#runs++;
    } catch {
      // No data-plane thread here (no koffi, no worker threads): the JavaScript path for good.
      this.#run = undefined;
      this.#runSource = undefined;
      this.#kernelCapable = false;
      source.release();
    }
  }

  #runProgress(source: KernelSource, moved: number): void {
    if (source !== this.#runSource) return;
    const n = moved - this.#runCounted;
    if (n <= 0) return;
    this.#runCounted = moved;
    this.#spliced += n;
    source.commit(n);
  }

  #runEnded(source: KernelSource, r: RunResult): void {
    this.#runProgress(source, r.moved);
    this.#waits += r.waits;
    this.#run = undefined;
    this.#runSource = undefined;
    // The transport reads the socket again: the rest of a stream, its end of file or its error.
    source.release();
    const end = r.end;
    if (typeof end === 'object' && CANNOT_SPLICE.has(end.error)) this.#kernelCapable = false;
    // 'stopped' (a change: its 'client' event or the next burst decides), 'idle' (the client
    // paused: libuv wakes for its next byte), 'eof' and other errors (Node sees them now and
    // the client goes): the JavaScript path goes on.
  }
}
