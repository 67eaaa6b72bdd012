/**
 * The guest's output read from an fd by chardev itself (`Chardev.pipeFrom`, `chardev run`'s
 * piped guest): the data plane.
 *
 * Two paths, one set of rules (lossless flow control, QEMU's):
 *
 * - **JavaScript path.** libuv reads the pipe (a net.Socket over a dup of the fd, Node's
 *   own stream reads: exactly sized chunks) and the chunks go to the devices through an
 *   `OutputPump` — `writeOwned` takes what the device can take; while one is behind the fd
 *   is not read. Waking up is libuv's epoll, as for any Node stream, so a guest's byte
 *   reaches an interactive client as fast as before.
 * - **Kernel path.** When the fd is a pipe, the device is the only one fed by it and
 *   `Chardev.kernelTarget` names a destination — the only client, the writer, on a plain
 *   tcp/unix socket or a pty, with the device's `<log>` teed beside it if it has one (a tee
 *   run: `KernelTarget.tee`); or, with nobody attached, a `file` device's file or a `null`
 *   device's `<log>` (no history, no stall limit, no other `<log>`) — and a read brings a
 *   burst (the guest is streaming), or small chunks come as a busy exchange whose input can
 *   go to the thread too (`ChunkRate`, `Chardev.duplexKernelPath`), libuv's reader is
 *   closed and the pipe is handed to the
 *   data-plane thread (platform/data-plane.ts): one worker thread per process splicing
 *   pipe → destination in a blocking poll loop, without a JavaScript hop per chunk or per
 *   full/free cycle of the destination. The guest is held exactly as on the JavaScript path:
 *   while the destination is full nothing is spliced, the pipe fills and the guest blocks in
 *   its own write(2); chardev holds nothing in flight (the bytes are in the guest's pipe or
 *   at the destination). A run ends when the guest is quiet for GRACE_MS (libuv takes the
 *   pipe back, so interactive output is as quick as before), at end of file, at a log's
 *   rotation point (`roomBytes`: the rotation happens between two runs, its byte count
 *   exact), or when anything about the device's clients changes: the hub calls `settle()`
 *   before every change, which stops the run synchronously, so the bytes already spliced
 *   are counted to the client they went to and no notice or history replay can land
 *   between two spliced chunks.
 *
 * Switching is safe at any point between two transfers: a run starts only when the
 * JavaScript path holds nothing (the pump and the reader's buffer are empty) and nothing is
 * queued for the destination in user space, and libuv's reader is destroyed before it (a
 * read racing the thread could not be ordered against its splices); when a run has ended
 * every byte it took from the pipe is at the destination and counted. No byte is lost,
 * repeated or reordered.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { FedDevice, KernelTarget, KernelTee } from './guest-side.ts';
import { OutputPump } from './output-pump.ts';
import { ChunkRate } from './chunk-rate.ts';
import { isRegularFile } from './files.ts';
import { NativeUnavailableError, libc, nativeProblem } from '../platform/native.ts';
import { isPipe, makePipe, pipeSize, type PipeEnds } from '../platform/splice.ts';
import { dataPlane, type DataPlaneRun, type RunResult } from '../platform/data-plane.ts';

export interface GuestOutputOptions {
  /** Called after bytes were taken from the fd and offered to the devices, with the total so far (progress, benchmarks). */
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
 * without koffi, and under a runtime other than Node: GuestOutput reads the pipe through
 * libuv's handles in Node's own way, and Bun (the musl check's runtime) never delivers from
 * it — a caller then uses its own pipes and an `OutputPump`.
 */
export function guestPipe(size: number = GUEST_PIPE_BYTES): PipeEnds {
  if (process.versions['bun'] !== undefined) {
    throw new NativeUnavailableError('symbol', `a guest pipe read by GuestOutput needs Node's libuv; this is Bun ${process.versions['bun']}`);
  }
  return makePipe({ nonBlockingRead: true, size });
}

/**
 * Start the data-plane thread that moves guest output on the kernel path now (otherwise it
 * starts with the first run: it costs a process ~12 MiB and 50–150 ms to load, which a
 * guest that never streams need not pay). The promise resolves once it runs, or at once
 * where it cannot (no koffi, not Node): output then takes the JavaScript path. A benchmark
 * awaits it so the thread's start-up is not measured.
 */
export function startDataPlane(): Promise<void> {
  try {
    return dataPlane().ready;
  } catch {
    return Promise.resolve();
  }
}

/** Which path moves the bytes now. */
export type GuestOutputPath = 'kernel' | 'js';

/**
 * A chunk this large from libuv says the guest is streaming (an interactive guest writes
 * lines): the kernel path takes over from the next byte, if the device allows it.
 */
const BURST_BYTES = 4 * 1024;
/**
 * After splice emptied the pipe, how long the data-plane thread waits for the guest's next
 * write before the pipe goes back to libuv. A streaming guest refills it within
 * microseconds (no byte of it then goes through the heap); a quiet one costs one message.
 */
const GRACE_MS = 20;
/** While waiting for Node's queue to empty before the kernel path takes over. */
const IDLE_RECHECK_MS = 2;
/** A splice to a client failing with these means the client is gone. */
const BROKEN_CLIENT: ReadonlySet<string> = new Set(['EPIPE', 'ECONNRESET', 'ENOTCONN', 'ESHUTDOWN', 'EIO']);
/** After a client's socket failed under splice, how long to wait for the hub to see it go. */
const BROKEN_RECHECK_MS = 50;

/** Devices whose output may go by the kernel path: clients' sockets and ptys, the `file` device's file, a `null` device's `<log>`. */
const KERNEL_TYPES: ReadonlySet<string> = new Set(['tcp', 'unix', 'pty', 'file', 'null']);

/** net.Socket's constructor takes these too (Readable's options), though @types/node does not list them. */
interface ReaderOptions extends net.SocketConstructorOpts {
  readonly readableHighWaterMark?: number;
}

export class GuestOutput {
  readonly #fd: number;
  readonly #devices: readonly FedDevice[];
  readonly #pump: OutputPump;
  readonly #options: GuestOutputOptions;
  /** libuv's reader of the pipe (a dup of `#fd`, or `#fd` itself without a kernel path), for the JavaScript path. */
  #reader: net.Socket | undefined;
  /** `#fd` is ours to close (the reader has a dup of it). */
  #closeFd: boolean;
  /** The kernel path is possible at all: one device, a pipe, native calls available. */
  #kernelCapable: boolean;
  #path: GuestOutputPath = 'js';
  /** The pump paused us: a device is behind. Its resume runs the next step. */
  #held = false;
  /** The data-plane thread moves the bytes now (the kernel path). */
  #run: DataPlaneRun | undefined;
  /** Bytes of the current run already counted, and its waits. */
  #runCounted = 0;
  #runWaits = 0;
  /** A tee run's bytes already counted as logged. */
  #runLogged = 0;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  /** During a fan-out run: the viewers it left out (Node held bytes for them); one draining restarts the run with it. */
  #fanExcluded: ReadonlySet<number> | undefined;
  /** A splice to this socket fd failed: wait for the hub to let the client go before moving on. */
  #brokenFd: number | undefined;
  /** Small chunks close together: a busy exchange, which may move to the kernel path with the input (`ChunkRate`). */
  readonly #rate = new ChunkRate();
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
   * The fd should be non-blocking (`guestPipe` makes it so; for a pipe only chardev's end
   * may be, since O_NONBLOCK is per open file description and the guest's end must block).
   */
  constructor(fd: number, devices: readonly FedDevice[], options: GuestOutputOptions = {}) {
    this.#fd = fd;
    this.#devices = devices;
    this.#options = options;
    this.ended = new Promise((resolve) => (this.#endedResolve = resolve));
    this.#pump = new OutputPump(devices, {
      pause: () => {
        this.#held = true;
        this.#waits++;
        this.#cancelWait();
        this.#reader?.pause();
      },
      resume: () => {
        this.#held = false;
        if (this.#eof) this.#finish();
        else this.#schedule();
      },
    });
    // Only these devices have a destination the kernel can splice to (`Chardev.kernelTarget`).
    const first = devices[0];
    this.#kernelCapable = options.kernelPath !== false && devices.length === 1 && first !== undefined && KERNEL_TYPES.has(first.type) && isPipe(fd);
    // No koffi, or not Node: the JavaScript path alone, on the fd itself. (The data-plane
    // thread itself starts with the first run: a guest that never streams never pays for it.)
    if (this.#kernelCapable && (process.versions['bun'] !== undefined || nativeProblem() !== undefined)) this.#kernelCapable = false;
    // With a kernel path, libuv reads a dup of the fd (the reader closes it when it goes),
    // so the fd itself is ours to close.
    this.#closeFd = this.#kernelCapable;
    try {
      this.#reader = this.#makeReader();
    } catch (e) {
      // Not a pipe or socket libuv can read (ERR_INVALID_FD_TYPE): the caller keeps its fd.
      this.#pump.close();
      throw e;
    }
    for (const d of devices) {
      d.addOutput(this);
      d.on('client', this.#onClient);
    }
    this.#schedule();
  }

  /** Whether the kernel path is possible at all: one device, a pipe, native calls available. */
  get kernelCapable(): boolean {
    return this.#kernelCapable;
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
   * Of those, bytes the data-plane thread moved (splice; read + write for a regular file);
   * how often the path changed; how often the guest was held for a client (a full socket
   * under splice, a device refusing output).
   */
  get stats(): { readonly spliced: number; readonly switches: number; readonly waits: number; readonly pipeSize: number | undefined } {
    let size: number | undefined;
    try {
      size = this.#closed ? undefined : pipeSize(this.#fd);
    } catch {
      // No koffi: unknown.
    }
    return { spliced: this.#spliced, switches: this.#switches, waits: this.#waits, pipeSize: size };
  }

  /**
   * A client of a device is about to come, go or change role: a kernel-path run stops now
   * (synchronously: the worker finishes its transfer and the bytes are counted to the client
   * they went to), and the next step decides the path again.
   */
  settle(): void {
    if (this.#run === undefined) return;
    this.#run.stop();
  }

  /** A viewer left out of the fan-out run has nothing queued in Node now: the run restarts with it. */
  clientDrained(clientId: number): void {
    if (this.#run !== undefined && this.#fanExcluded?.has(clientId) === true) this.#reconsider();
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
    // The worker closes its own copies of the fds when it stops.
    this.#run?.stop();
    this.#run = undefined;
    this.#pump.close();
    for (const d of this.#devices) {
      d.off('client', this.#onClient);
      d.removeOutput(this);
    }
    this.#reader?.destroy();
    this.#reader = undefined;
    if (this.#closeFd) {
      try {
        fs.closeSync(this.#fd);
      } catch {
        // Already gone.
      }
    }
    this.#endedResolve();
  }

  #cancelWait(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#immediate = undefined;
  }

  /** Run the next step on a later turn (never from inside a device's write). */
  #schedule(): void {
    if (this.#closed || this.#immediate !== undefined) return;
    this.#cancelWait();
    this.#immediate = setImmediate(() => {
      this.#immediate = undefined;
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
   * A client came, left or changed role: the path may change before the next transfer.
   * Never a step from here: clients change inside a device's `write` (a pty backend
   * attaches its reader there), and a step then would hand the device the next chunk
   * before the one it is taking — so the step runs on the next turn.
   */
  #reconsider(): void {
    if (this.#closed || this.#held || this.#eof) return;
    this.#brokenFd = undefined;
    // A run stops first; its end schedules the next step.
    if (this.#run !== undefined) this.#run.stop();
    else this.#schedule();
  }

  #setPath(path: GuestOutputPath): void {
    if (this.#path === path) return;
    this.#path = path;
    this.#switches++;
  }

  #movedBy(n: number): void {
    this.#moved += n;
    this.#options.onMoved?.(this.#moved);
  }

  /** Decide the path and go on with it: a run on the data-plane thread while the kernel path is on and allowed, else libuv reads. */
  #step(): void {
    if (this.#closed || this.#held || this.#eof || this.#run !== undefined || this.#timer !== undefined) return;
    if (this.#path === 'kernel') {
      if (this.#brokenFd !== undefined) {
        // The last run found the client's socket broken; until the hub lets it go nothing
        // is read (the guest waits), so its bytes are not counted as sent to a dead client.
        if (this.#kernelTarget()?.fd === this.#brokenFd) {
          this.#waitMs(BROKEN_RECHECK_MS);
          return;
        }
        this.#brokenFd = undefined;
      }
      // A chunk the paused reader read ahead goes first, to the devices; then the kernel path
      // can start from the very next byte instead of handing the pipe back to libuv.
      while (this.#reader !== undefined && this.#reader.readableLength > 0 && !this.#held && !this.#closed && this.#pump.pendingBytes === 0) {
        if (this.#reader.read() === null) break;
      }
      if (this.#closed || this.#held) return;
      const target = this.#kernelTarget();
      if (target !== undefined) {
        this.#startRun(target);
        return;
      }
      if (this.#kernelCapable && (this.#devices[0] as FedDevice).kernelPathAfterNode()) {
        // Everything but Node's queue allows the kernel path: let Node finish sending what
        // it has (the guest waits meanwhile), then splice after it.
        this.#waitMs(IDLE_RECHECK_MS);
        return;
      }
    }
    this.#readJs();
  }

  /** The JavaScript path: libuv reads the pipe. */
  #readJs(): void {
    this.#setPath('js');
    try {
      this.#reader ??= this.#makeReader();
    } catch {
      // No fd left for a dup: libuv reads the fd itself from now on, and closes it.
      this.#kernelCapable = false;
      this.#closeFd = false;
      this.#reader = this.#makeReader();
    }
    this.#reader.resume();
  }

  /**
   * libuv's reader for the JavaScript path: over a fresh dup of the fd while a kernel path
   * is possible (destroyed whenever a run starts, so libuv never reads while the data-plane
   * thread splices: a read could not be ordered against the splices around it), over the fd
   * itself otherwise.
   */
  #makeReader(): net.Socket {
    let readerFd = this.#fd;
    if (this.#closeFd) {
      readerFd = libc().dupCloexec(this.#fd);
      if (readerFd < 0) throw new Error('dup failed');
    }
    // With a kernel path, highWaterMark 0: a paused stream then reads (almost) nothing
    // ahead. With Node's default a paused net.Socket reads on until its buffer holds that
    // much; those bytes left the pipe before anything spliced after them, so they must go
    // first (`#kernelTarget` waits for the buffer to be empty) and each costs the kernel
    // path a turn. Without a kernel path the read-ahead is harmless and saves a
    // readStop/readStart (two epoll_ctl) per chunk.
    const options: ReaderOptions = { fd: readerFd, readable: true, writable: false, ...(this.#kernelCapable ? { readableHighWaterMark: 0 } : {}) };
    let reader: net.Socket;
    try {
      reader = new net.Socket(options);
    } catch (e) {
      if (readerFd !== this.#fd) fs.closeSync(readerFd);
      throw e;
    }
    // Chunks fresh from Node's stream, never reused: the devices may keep them. Attaching
    // the listener makes the stream flow; it waits for the next step instead.
    reader.on('data', (chunk: Buffer) => {
      if (reader === this.#reader) this.#onData(chunk);
    });
    reader.pause();
    reader.on('end', () => {
      if (reader === this.#reader) this.#onEnd();
    });
    // A read error (EIO) ends the output like end of file: nothing more will come.
    reader.on('error', () => {
      if (reader === this.#reader) this.#onEnd();
    });
    return reader;
  }

  /**
   * The socket to splice to now, if the kernel path may move the next byte: nothing read
   * but not yet taken — neither in the pump nor in the reader's buffer. (A paused Node
   * stream may still have read ahead; those bytes came out of the pipe before anything
   * spliced after them, so they go first, by the JavaScript path.)
   */
  #kernelTarget(): KernelTarget | undefined {
    if (!this.#kernelCapable || this.#pump.pendingBytes > 0 || (this.#reader?.readableLength ?? 0) > 0) return undefined;
    return (this.#devices[0] as FedDevice).kernelTarget();
  }

  /** A chunk libuv read. */
  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    this.#pump.push(chunk);
    this.#movedBy(chunk.length);
    if (this.#held || this.#closed) return;
    // A burst: the guest is streaming, and the rest can go by the kernel path if allowed —
    // once nothing is left in the stream's buffer (it must reach the devices first). Or a
    // busy exchange of small chunks whose input can go there too (`ChunkRate`).
    if (
      this.#kernelCapable &&
      (chunk.length >= BURST_BYTES || (this.#rate.busy(performance.now()) && (this.#devices[0] as FedDevice).duplexKernelPath?.() === true)) &&
      (this.#reader?.readableLength ?? 0) === 0 &&
      (this.#kernelTarget() !== undefined || (this.#devices[0] as FedDevice).kernelPathAfterNode())
    ) {
      this.#stopReader();
      this.#setPath('kernel');
      this.#schedule();
    }
  }

  /**
   * Stop libuv reading: with no read-ahead (highWaterMark 0) pause() stops it after the
   * read being handed on. (A resume still scheduled may read one chunk more; it waits in
   * the stream's buffer, and `#kernelFd` sends it first.)
   */
  #stopReader(): void {
    this.#reader?.pause();
  }

  #onEnd(): void {
    if (this.#eof || this.#closed) return;
    this.#eof = true;
    if (!this.#held) this.#finish();
  }

  /** Hand the pipe to the data-plane thread until the run ends (`#runEnded`). */
  #startRun(target: KernelTarget): void {
    this.#setPath('kernel');
    // Its buffer is empty (`#kernelTarget`); nothing it could still read may overtake a splice.
    this.#reader?.destroy();
    this.#reader = undefined;
    this.#runCounted = 0;
    this.#runWaits = 0;
    this.#runLogged = 0;
    const spec = {
      from: this.#fd,
      to: target.fd,
      graceMs: GRACE_MS,
      seekEnd: target.seekEnd,
      copy: target.kind === 'file' && isRegularFile(target.fd),
      ...(Number.isFinite(target.roomBytes) ? { limitBytes: target.roomBytes } : {}),
    };
    const events = {
      progress: (moved: number, waits: number, logged?: number) => this.#runProgress(target, moved, waits, logged),
      ended: (r: RunResult) => this.#runEnded(target, r),
    };
    const fanout = target.fanout;
    try {
      if (fanout !== undefined) {
        this.#fanExcluded = new Set(fanout.viewers.filter((v) => v.fd === undefined).map((v) => v.clientId));
        this.#run = dataPlane().startFanout(
          {
            from: this.#fd,
            writer: { fd: target.fd, queueBytes: fanout.writerQueueBytes },
            viewers: fanout.viewers,
            graceMs: GRACE_MS,
            noticeBefore: fanout.noticeBefore,
            noticeAfter: fanout.noticeAfter,
            ...(fanout.history !== undefined ? { history: { fd: fanout.history.fd, bytes: fanout.history.bytes } } : {}),
          },
          {
            progress: (moved, waits, viewers) => {
              fanout.progress(viewers);
              this.#runProgress(target, moved, waits);
            },
            ended: (r) => {
              if (r.viewers.length > 0) fanout.progress(r.viewers);
              this.#runProgress(target, r.moved, r.waits);
              fanout.leftovers(r.writerLeft, r.viewersLeft);
              fanout.history?.ended(r.historyKept ?? 0, r.historyLeft);
              this.#fanExcluded = undefined;
              this.#runEnded(target, { moved: r.moved, waits: r.waits, end: r.end });
            },
          },
        );
        return;
      }
      this.#run =
        target.tee === undefined
          ? dataPlane().start(spec, events)
          : dataPlane().startTee({ ...spec, log: target.tee.fd, ...(target.tee.ringBytes !== undefined ? { ringBytes: target.tee.ringBytes } : {}) }, events);
    } catch {
      // No data-plane thread here (no koffi, no worker threads): the JavaScript path for good.
      this.#run = undefined;
      this.#kernelCapable = false;
      this.#readJs();
    }
  }

  #runProgress(target: KernelTarget, moved: number, waits: number, logged?: number): void {
    if (waits > this.#runWaits) {
      this.#waits += waits - this.#runWaits;
      this.#runWaits = waits;
    }
    // A tee run logs first: the device accepted those bytes (its counters, the bench's
    // end-of-stream check), whether or not the client has them yet.
    const l = logged !== undefined && target.tee !== undefined ? logged - this.#runLogged : 0;
    if (l > 0) {
      this.#runLogged = logged as number;
      target.tee?.logged(l);
    }
    const n = moved - this.#runCounted;
    if (n > 0) {
      this.#runCounted = moved;
      this.#spliced += n;
      target.commit(n);
    }
    if ((n > 0 || l > 0) && !this.#closed) this.#movedBy(Math.max(n, 0));
  }

  /**
   * A tee run ended with `ahead` bytes in the log but still at the head of the pipe: read
   * them out (nothing else reads the pipe now) and hand them to the device for the client,
   * so the next read — by libuv or a run — starts after them and nothing is logged twice.
   */
  #takeAhead(tee: KernelTee, ahead: number): void {
    const data = Buffer.allocUnsafe(ahead);
    let got = 0;
    while (got < ahead) {
      let n: number;
      try {
        n = fs.readSync(this.#fd, data, got, ahead - got, null);
      } catch {
        break;
      }
      if (n <= 0) break;
      got += n;
    }
    if (got === 0) return;
    tee.unsent(data.subarray(0, got));
    if (!this.#closed) this.#movedBy(got);
  }

  #runEnded(target: KernelTarget, r: RunResult): void {
    this.#runProgress(target, r.moved, r.waits, r.logged);
    this.#run = undefined;
    const tee = target.tee;
    if (tee !== undefined) {
      if ((r.ahead ?? 0) > 0) this.#takeAhead(tee, r.ahead ?? 0);
      tee.ended(r.logged ?? 0);
    }
    // A pty run's buffer: read from the pipe before anything still in it, so it goes to the
    // client first (`unsent`), whatever ended the run.
    const unwritten = r.unwritten !== undefined && target.unsent !== undefined ? r.unwritten : undefined;
    if (unwritten !== undefined) {
      target.unsent?.(unwritten);
      if (!this.#closed) this.#movedBy(unwritten.length);
    }
    if (this.#closed) return;
    const end = r.end;
    switch (end) {
      case 'eof':
        this.#eof = true;
        this.#finish();
        return;
      case 'idle':
        // The guest went quiet: libuv wakes for its next byte.
        this.#readJs();
        return;
      case 'limit':
        target.full();
        this.#schedule();
        return;
      case 'stopped':
        this.#schedule();
        return;
      default:
        if (target.kind === 'client' && BROKEN_CLIENT.has(end.error)) {
          // The client is gone (its socket or pty says so before Node does): nothing moved.
          this.#brokenFd = target.fd;
          this.#waitMs(BROKEN_RECHECK_MS);
          return;
        }
        // Anything else (EINVAL: this pair cannot be spliced; ENOSPC: the JavaScript path
        // reports it as a write does) ends the kernel path for this source.
        this.#kernelCapable = false;
        if (r.unwritten !== undefined && unwritten === undefined) {
          // Read from the pipe but not written (a copy run): they come before anything the
          // reader reads next, and the device's write reports the failure as it does for
          // any chunk.
          this.#pump.push(r.unwritten);
          this.#movedBy(r.unwritten.length);
          if (this.#held || this.#closed) return;
        }
        this.#readJs();
    }
  }

  /** End of file: once the pump is empty (or at once), `ended` resolves; the fd is closed. */
  #finish(): void {
    if (this.#closed) return;
    if (this.#pump.pendingBytes > 0) return;
    this.close();
  }
}
