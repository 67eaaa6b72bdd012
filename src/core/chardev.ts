/**
 * The guest-side handle of one running device: what an emulator (or `chardev run`'s
 * child process) talks to. It owns its backend and the optional `<log>` tee.
 */
import type { ChrDeviceDef, ChrType, RotateExtensionDef } from '../config/types.ts';
import { ChardevError } from '../errors.ts';
import type { Backend } from './backend.ts';
import { closeQuietly, describeErrno, isRegularFile, readAllAt } from './files.ts';
import { makeMemoryFile } from '../platform/splice.ts';
import { RotatingLog, type KernelFile } from './rotating-log.ts';
import { HistoryRing } from './history.ts';
import { Hub, MISSED_NOTICE, type ClientChange, type ClientInfo, type HubClient, type TerminalSize } from './hub.ts';
import { GuestOutput, type GuestOutputOptions } from './guest-output.ts';
import type { InputSource, KernelSource, KernelTarget, OutputSource } from './guest-side.ts';

/** Clients a device takes at once when its XML does not say (`<cd:clients max>`): room for consoles. */
export const DEFAULT_MAX_CLIENTS = 8;
/** Per-client output queue bound when the XML does not say. */
export const DEFAULT_CLIENT_QUEUE_BYTES = 1024 * 1024;
/**
 * Guest output in flight to the writer client before `write` takes no more (QEMU holds
 * none: its frontend retries). Large enough to keep a fast reader busy across a turn of
 * the event loop, small enough that a device waiting for its client costs little.
 */
export const WRITER_IN_FLIGHT_BYTES = 256 * 1024;
/**
 * Most a viewer may be behind on the kernel path's fan-out (its queue there, if its
 * `queueBytes` is not smaller): as far as the writer may be (WRITER_IN_FLIGHT_BYTES), so
 * a viewer that reads as fast as the writer misses nothing, and the run's ring stays small.
 */
export const FANOUT_VIEWER_QUEUE_BYTES = 256 * 1024;
/**
 * Input held for the next 'data' listener at most (see Chardev's held input): far beyond the
 * rest of one read per client, so only a backend that ignores the pause ever reaches it; what
 * comes beyond is not taken (as before, when input without a listener was not delivered).
 */
export const HELD_INPUT_BYTES = 4 * 1024 * 1024;
/**
 * The smallest `<cd:history>` a single writer's run keeps in a ring in memory (`#historyTarget`):
 * each tee (up to the guest pipe's MiB) is written into the ring whole, wrapping, so a smaller
 * ring would take many splices per tee. A smaller history stays on the JavaScript path.
 */
const RING_TEE_MIN_BYTES = 64 * 1024;

export interface ChardevEvents {
  /** Host → guest bytes. Input is read only while at least one 'data' listener exists. */
  data: (chunk: Buffer) => void;
  /** A client appeared. A listener added while the device is open is called at once (QEMU replays OPENED). */
  open: () => void;
  close: () => void;
  break: () => void;
  /** The writer's terminal size changed (or a new writer brought its own): the guest's terminal is this big now. */
  resize: (size: TerminalSize) => void;
  /** A run-time failure of this device, reported once; the device and the domain keep running. */
  error: (err: ChardevError) => void;
  /** A client attached, left, changed role, or was released by the stall limit (see Hub). */
  client: (change: ClientChange, client: ClientInfo) => void;
  /**
   * After `write` returned short: the device can take output again (QEMU's
   * qemu_chr_fe_add_watch(G_IO_OUT)). Once per refusal; a frontend keeps what was refused,
   * stops producing, and retries when this fires.
   */
  writable: () => void;
}

export type ChardevEvent = keyof ChardevEvents;

export interface ChardevCounters {
  /** Bytes the guest wrote that the backend accepted. */
  readonly bytesFromGuest: number;
  /** Bytes delivered to the guest through 'data'. */
  readonly bytesToGuest: number;
  /** Accepted bytes that did not reach a client: the backend discarded them (no client), or a client's queue was full (summed per client). */
  readonly dropped: number;
}

/** The `<log file append>` tee: every byte the backend accepts is appended here too (rotated under `<cd:rotate>`). */
class LogTee {
  readonly #log: RotatingLog;
  #failed = false;
  constructor(id: string, file: string, append: boolean, rotate: RotateExtensionDef | undefined, onError: (err: ChardevError) => void) {
    this.#log = new RotatingLog(id, file, rotate, { append, what: 'log', onError });
  }
  get path(): string {
    return this.#log.path;
  }
  /** Best effort like QEMU's logfile: returns the error once, then stops trying. */
  write(data: Uint8Array): Error | undefined {
    if (this.#failed) return undefined;
    try {
      this.#log.write(data);
      return undefined;
    } catch (e) {
      this.#failed = true;
      return e as Error;
    }
  }
  /** Where the kernel path may append (undefined once logging failed). */
  kernelFile(): KernelFile | undefined {
    return this.#failed ? undefined : this.#log.kernelFile();
  }
  /** Whether the kernel path may append now (logging has not failed). */
  get kernelCapable(): boolean {
    return !this.#failed;
  }
  /** The last `n` bytes a kernel-path run appended (`RotatingLog.readTail`). */
  readTail(n: number): Buffer {
    return this.#log.readTail(n);
  }
  close(abort: boolean): void {
    this.#log.close(abort);
  }
}

type Listeners = { [E in ChardevEvent]: Array<ChardevEvents[E]> };

export type { KernelTarget, OutputSource } from './guest-side.ts';

export class Chardev {
  readonly alias: string;
  /** `char` + alias, as QEMU labels it. */
  readonly id: string;
  readonly type: ChrType;
  readonly def: ChrDeviceDef;
  #backend: Backend | undefined;
  #log: LogTee | undefined;
  #listeners: Listeners = { data: [], open: [], close: [], break: [], resize: [], error: [], client: [], writable: [] };
  #isOpen = false;
  #stopped = false;
  #fromGuest = 0;
  #toGuest = 0;
  /**
   * Input that arrived while no 'data' listener was attached, with the BREAKs among it, in
   * order. Removing the last listener pauses every client, but one read a client already made
   * can still bring more: a telnet chunk decodes to data, BREAK, data, and a frontend whose
   * queue filled on the first part stops listening before the rest. That rest waits here for
   * the next listener instead of being lost. Bounded by what arrives after a pause (the rest
   * of one read per client) and, against a backend that keeps delivering, by HELD_INPUT_BYTES.
   */
  readonly #held: Array<Buffer | 'break'> = [];
  #heldBytes = 0;
  /** Refused bytes the frontend gave up on (discard). */
  #discarded = 0;
  /** The last `write` took less than it was given: 'writable' is due. */
  #refused = false;
  /** Sources of guest output reading from an fd for this device (`pipeFrom`). */
  readonly #outputs = new Set<OutputSource>();
  /** Frontends handing this device's input to the guest, maybe by the kernel (`GuestInput`). */
  readonly #inputs = new Set<InputSource>();
  /** Recent guest output, when `<cd:history>` asks for it. */
  readonly history: HistoryRing | undefined;
  /** `#historyTarget`'s ring in memory, made by its first run; -1: none can be made here. */
  #ringFd: number | undefined;
  /** Everyone attached to this device: transport peers, pty readers, consoles, browsers. */
  readonly hub: Hub;

  /** Opens the `<log>` tee only; `attach` adds the backend. Split so a failed backend start can close the log. */
  constructor(alias: string, id: string, def: ChrDeviceDef) {
    this.alias = alias;
    this.id = id;
    this.def = def;
    this.type = def.source.type;
    const log = def.source.log;
    if (log !== undefined) this.#log = new LogTee(id, log.file, log.append === 'on', def.ext.rotate, (err) => this.reportError(err));
    const ext = def.ext;
    this.history = ext.history !== undefined ? new HistoryRing(ext.history.sizeBytes) : undefined;
    this.hub = new Hub({
      maxClients: ext.clients?.max ?? DEFAULT_MAX_CLIENTS,
      queueBytes: ext.clients?.queueBytes ?? DEFAULT_CLIENT_QUEUE_BYTES,
      slowPolicy: ext.clients?.slow ?? 'drop',
      holdBytes: Math.min(WRITER_IN_FLIGHT_BYTES, ext.clients?.queueBytes ?? DEFAULT_CLIENT_QUEUE_BYTES),
      stall: ext.stall === undefined ? undefined : { limitMs: ext.stall.timeoutSec * 1000, action: ext.stall.action },
      history: this.history,
      onWritable: () => this.writableAgain(),
      onDrained: (client) => {
        for (const o of this.#outputs) o.clientDrained?.(client.id);
      },
      // Output and input on the kernel path are finished and counted before any client changes.
      beforeChange: () => {
        this.settleOutput();
        this.#settleInputs();
      },
      onInput: (b) => this.receive(b),
      onBreak: () => this.breakReceived(),
      onResize: (size) => {
        if (this.#stopped) return;
        for (const l of [...this.#listeners.resize]) l(size);
      },
      // A device whose backend opens at creation (file, pipe, …) stays open whoever comes and
      // goes. (While a client backend connects at start, the backend is not attached yet.)
      onFirstAttach: () => {
        if (this.#backend?.openAtStart !== true) this.opened();
      },
      onLastDetach: () => {
        if (this.#backend?.openAtStart !== true) this.closed();
      },
      onChange: (change, client) => {
        if (change === 'stalled') {
          const what = ext.stall?.action === 'disconnect' ? 'disconnected' : 'now misses output until it catches up';
          this.reportError(
            new ChardevError(
              'ERR_CLIENT_STALLED',
              `${id}: client ${client.label} took no output for ${ext.stall?.timeoutSec ?? 0} s; it ${what} and the guest goes on`,
            ),
          );
        }
        for (const l of [...this.#listeners.client]) l(change, client);
      },
    });
    // Like a backend, clients are read only while the guest side listens for input.
    this.hub.setReading(false);
  }

  /**
   * Let the device read the guest's output from `fd` itself (a pipe the guest writes to,
   * e.g. a child process's stdout; the device takes the fd over and closes it). Output
   * moves as `write` would move it — the same counters, the same flow control: while the
   * client is behind, the fd is not read and the guest blocks in its own write(2). When the
   * fd is a pipe and the bytes have one destination (`kernelTarget`: the writer client on a
   * plain tcp or unix socket or a pty; a `file` device's file; a `null` device's `<log>`),
   * a streaming guest's bytes move by splice(2) on the data-plane thread without entering
   * the JavaScript heap; any change (a viewer attaches, the client leaves) switches to the
   * JavaScript path between two bytes, never losing or reordering one. Do not also `write`
   * to a device fed this way. See `GuestOutput`.
   */
  pipeFrom(fd: number, options: GuestOutputOptions = {}): GuestOutput {
    return new GuestOutput(fd, [this], options);
  }

  /**
   * Finish what moves outside the JavaScript heap now (a kernel-path run) and count it:
   * `history` and the counters are then exact. The hub does this before any client change;
   * a reader of `history` that attaches no client (QMP's ringbuf-read) calls it first.
   */
  settleOutput(): void {
    for (const o of this.#outputs) o.settle();
  }

  /** @internal A GuestOutput feeding this device; closed when the device stops. */
  addOutput(output: OutputSource): void {
    this.#outputs.add(output);
  }
  /** @internal */
  removeOutput(output: OutputSource): void {
    this.#outputs.delete(output);
  }

  /** @internal A GuestInput handing this device's input to the guest. */
  addInput(input: InputSource): void {
    this.#inputs.add(input);
  }
  /** @internal */
  removeInput(input: InputSource): void {
    this.#inputs.delete(input);
  }

  /** Input moved by the kernel so far is finished and counted: other input, or a client change, comes after it. */
  #settleInputs(): void {
    for (const i of this.#inputs) i.settle();
  }

  /**
   * @internal Where input may be spliced from right now instead of going through 'data'
   * (`GuestInput`'s kernel path), claimed: the only client is the writer, on a socket that
   * offers its input raw (tcp or unix, no TLS, no telnet), `listener` is the only 'data'
   * listener and nothing is held for it. Claiming delivers what the client's transport had
   * already read first, through 'data' (so `listener` may be called before this returns).
   * Undefined otherwise; ask again before every run.
   */
  kernelSource(listener: (chunk: Buffer) => void): KernelSource | undefined {
    if (this.#stopped || this.#backend === undefined || this.#held.length > 0) return undefined;
    const data = this.#listeners.data;
    if (data.length !== 1 || data[0] !== listener) return undefined;
    const writer = this.hub.soleWriter;
    const path = writer?.sink.inputPath;
    if (path === undefined) return undefined;
    const fd = path.claim();
    if (fd === undefined) return undefined;
    return {
      fd,
      commit: (n) => {
        this.#toGuest += n;
      },
      release: () => path.release(),
    };
  }

  /**
   * @internal Where guest output may be spliced to right now instead of going through
   * `write` (`GuestOutput`'s kernel path), with what to count once it moved there. The
   * device has no stall limit (its watch works on `write`'s refusals), and either
   * - its only client is the writer on a socket or pty that has nothing queued in user
   *   space (the writer's fd), its `<log>`, if any, teed beside it (`#teeTarget`; then a
   *   history is allowed too: it is read back from the log), or
   * - its only client is the writer on a raw socket and it keeps a history without a
   *   `<log>`: the history is teed into a ring in memory beside it (`#historyTarget`), or
   * - the writer and its viewers, all on raw sockets, no `<log>` (`#fanoutTarget`; a
   *   history goes into the same ring), or
   * - nobody is attached and the backend keeps every byte in one file: a `file` device
   *   without `<log>` (its file), or a `null` device with a `<log>` (the log).
   * Undefined otherwise; ask again before every run.
   */
  kernelTarget(): KernelTarget | undefined {
    const backend = this.#backend;
    if (this.#stopped || backend === undefined || this.def.ext.stall !== undefined) return undefined;
    // Several clients: the fan-out, when there is no log to keep (a history goes to a ring in memory).
    if (this.hub.size > 1) return this.#fanoutTarget(false);
    const writer = this.hub.soleWriter;
    if (writer !== undefined && this.#log !== undefined) return this.#teeTarget(writer, this.#log);
    if (this.history !== undefined) return writer === undefined ? undefined : this.#historyTarget(writer, this.history);
    if (writer !== undefined) {
      const fd = writer.sink.kernelPath?.fd();
      return fd === undefined ? undefined : this.#writerTarget(writer, fd);
    }
    if (this.hub.size > 0) return undefined;
    const file = this.#log === undefined ? backend.kernelFile?.() : backend.discardsOutput === true ? this.#log.kernelFile() : undefined;
    if (file === undefined) return undefined;
    return {
      fd: file.fd,
      kind: 'file',
      roomBytes: file.roomBytes,
      seekEnd: true,
      commit: (n) => {
        this.#fromGuest += n;
        file.commit(n);
      },
      full: () => file.full(),
    };
  }

  /** The writer's fd as the destination: what reaches it was taken from the guest and sent to it. */
  #writerTarget(writer: HubClient, fd: number): KernelTarget {
    return {
      fd,
      kind: 'client',
      roomBytes: Infinity,
      seekEnd: false,
      // The client it started with, even if it has left by the time the count arrives.
      commit: (n) => {
        this.#fromGuest += n;
        writer.bytesSent += n;
      },
      full: () => {},
      unsent: (data) => {
        // As if the run had written them just before it stopped.
        this.#fromGuest += data.length;
        this.#handBack(writer, data);
      },
    };
  }

  /**
   * Bytes a run took for `writer` and did not write to it, at the run's end — before any
   * client change, as the hub stops the run first: the writer is still there unless its
   * transport already went, and then, as for any byte sent to a client that is gone,
   * nobody got them.
   */
  #handBack(writer: HubClient, data: Buffer): void {
    if (writer.detached) {
      this.#discarded += data.length;
      return;
    }
    writer.sink.send(data);
    writer.bytesSent += data.length;
  }

  /**
   * The writer's socket with the `<log>` beside it (and the history, if any, brought up to
   * date from the log when the run ends — before any client change, as the hub stops the
   * run first): every byte goes to the log, then to the client. The guest is held by the
   * client as on a plain run; the log is never more than one tee ahead of the client.
   */
  #teeTarget(writer: HubClient, log: LogTee): KernelTarget | undefined {
    const fd = writer.sink.kernelPath?.fd();
    if (fd === undefined || !log.kernelCapable) return undefined;
    const file = log.kernelFile();
    if (file === undefined) return undefined;
    const history = this.history;
    // The history is read back from the log: only a regular file gives back what went in
    // (`<log file='/dev/null'>` or a FIFO would leave it empty).
    if (history !== undefined && !isRegularFile(file.fd)) return undefined;
    return {
      fd,
      kind: 'client',
      roomBytes: file.roomBytes,
      seekEnd: false,
      // The client it started with, even if it has left by the time the count arrives.
      commit: (n) => {
        writer.bytesSent += n;
      },
      full: () => file.full(),
      tee: {
        fd: file.fd,
        logged: (n) => {
          this.#fromGuest += n;
          file.commit(n);
        },
        // Logged already (`logged` counted them from the guest), not yet sent.
        unsent: (data) => this.#handBack(writer, data),
        ended: (loggedBytes) => {
          if (history === undefined || loggedBytes === 0) return;
          history.appendTail(log.readTail(Math.min(loggedBytes, history.sizeBytes)), loggedBytes);
        },
      },
    };
  }

  /**
   * The writer's socket with the history beside it and no `<log>`: a tee run whose "log" is
   * a ring in memory of the history's size (a memory file of the device's, `#ringFd`), read
   * back into the history when the run ends — before any client change, as the hub stops
   * the run first. Not for a pty's reader: its runs write blocking (`stepTty`), a tee run
   * would not; nor for a history under RING_TEE_MIN_BYTES (`ringTeeFits`).
   */
  #historyTarget(writer: HubClient, history: HistoryRing): KernelTarget | undefined {
    const fd = writer.sink.kernelPath?.fd();
    if (fd === undefined || !ringTeeFits(writer, history)) return undefined;
    const ring = this.#historyRing();
    if (ring === undefined) return undefined;
    return {
      fd,
      kind: 'client',
      roomBytes: Infinity,
      seekEnd: false,
      commit: (n) => {
        writer.bytesSent += n;
      },
      full: () => {},
      tee: {
        fd: ring,
        ringBytes: history.sizeBytes,
        logged: (n) => {
          this.#fromGuest += n;
        },
        unsent: (data) => this.#handBack(writer, data),
        ended: (loggedBytes) => {
          if (loggedBytes > 0) history.appendTail(readRingTail(ring, history.sizeBytes, loggedBytes), loggedBytes);
        },
      },
    };
  }

  /** `#ringFd`, made on first use; undefined where no memory file can be made. */
  #historyRing(): number | undefined {
    if (this.#ringFd === undefined) {
      try {
        this.#ringFd = makeMemoryFile(`chardev-history-${this.id}`);
      } catch {
        // No memory files here (no koffi, an old kernel): the JavaScript path keeps the history.
        this.#ringFd = -1;
      }
    }
    return this.#ringFd >= 0 ? this.#ringFd : undefined;
  }

  /**
   * The writer and its viewers on the kernel path (data-plane-fanout.ts): every client a
   * raw socket that frames notices, the writer holding the guest, viewers dropping what
   * does not fit (`slow='drop'`; a policy that disconnects stays on the JavaScript path).
   * A history is written into a ring in memory (`#historyRing`) as the run reads, and
   * brought up to date from it when the run ends — before any client change.
   * A viewer Node still holds bytes for is left out of the run (it misses what the run
   * moves, as its full queue would make it) until its transport drains. With
   * `afterNode`: the fan-out would do but for bytes Node holds for the writer.
   */
  #fanoutTarget(afterNode: false): KernelTarget | undefined;
  #fanoutTarget(afterNode: true): boolean;
  #fanoutTarget(afterNode: boolean): KernelTarget | undefined | boolean {
    const writer = this.hub.writer;
    if (this.#log !== undefined || this.hub.slowPolicy !== 'drop' || writer === undefined || !writer.holds) return afterNode ? false : undefined;
    const members = this.hub.members();
    let frame: readonly [string, string] | undefined;
    for (const c of members) {
      const f = c.sink.kernelPath?.noticeFrame;
      if (f === undefined || (frame !== undefined && (frame[0] !== f[0] || frame[1] !== f[1]))) return afterNode ? false : undefined;
      frame = f;
    }
    if (afterNode) return writer.sink.queuedBytes > 0;
    const fd = writer.sink.kernelPath?.fd();
    if (fd === undefined || frame === undefined) return undefined;
    const history = this.history;
    const ring = history !== undefined ? this.#historyRing() : undefined;
    if (history !== undefined && ring === undefined) return undefined;
    const viewers = members.filter((c) => c !== writer);
    const queueBytes = Math.min(FANOUT_VIEWER_QUEUE_BYTES, this.hub.queueBytes);
    const counted = new Map<number, { sent: number; missed: number }>();
    const hub = this.hub;
    return {
      ...this.#writerTarget(writer, fd),
      fanout: {
        writerQueueBytes: WRITER_IN_FLIGHT_BYTES,
        viewers: viewers.map((v) => ({ clientId: v.id, fd: v.sink.kernelPath?.fd(), queueBytes, untold: v.missedUntold })),
        noticeBefore: frame[0],
        noticeAfter: `${MISSED_NOTICE}${frame[1]}`,
        progress: (counts) => {
          counts.forEach((n, i) => {
            const v = viewers[i] as HubClient;
            const before = counted.get(i) ?? { sent: 0, missed: 0 };
            counted.set(i, { sent: n.sent, missed: n.missed });
            hub.countKernel(v, n.sent - before.sent, n.missed - before.missed, n.untold);
          });
        },
        ...(history !== undefined && ring !== undefined
          ? {
              history: {
                fd: ring,
                bytes: history.sizeBytes,
                ended: (kept: number, left: Buffer | undefined) => {
                  if (kept > 0) history.appendTail(readRingTail(ring, history.sizeBytes, kept), kept);
                  if (left !== undefined) history.append(left);
                },
              },
            }
          : {}),
        leftovers: (w, vs) => {
          // Already counted as sent: they go ahead of anything the hub sends them later.
          if (w !== undefined && !writer.detached) writer.sink.send(w);
          vs.forEach((b, i) => {
            const v = viewers[i] as HubClient;
            if (b !== undefined && !v.detached) v.sink.send(b);
          });
        },
      },
    };
  }

  /**
   * @internal Whether a busy exchange of small chunks (`ChunkRate`) may move to the
   * data-plane thread both ways now: the guest's output by a plain run to the writer (no
   * `<log>`, history or stall limit) and its input from the writer's socket, which is the
   * only client and offers both (a raw tcp or unix socket, no telnet), with one reader of
   * the guest's output and one writer of its input attached, each able to use the kernel
   * path. One direction alone is not worth it: every round trip would wake both threads.
   */
  duplexKernelPath(): boolean {
    if (this.#stopped || this.#backend === undefined || this.def.ext.stall !== undefined || this.history !== undefined || this.#log !== undefined) return false;
    if (this.#listeners.data.length !== 1 || this.#held.length > 0 || this.#outputs.size !== 1 || this.#inputs.size !== 1) return false;
    const sink = this.hub.soleWriter?.sink;
    if (sink?.kernelPath === undefined || sink.inputPath === undefined) return false;
    for (const o of this.#outputs) if (o.kernelCapable !== true) return false;
    for (const i of this.#inputs) if (i.kernelCapable !== true) return false;
    return true;
  }

  /** @internal The kernel path would do now but for bytes Node still has queued for the client. */
  kernelPathAfterNode(): boolean {
    const backend = this.#backend;
    if (this.#stopped || backend === undefined || this.def.ext.stall !== undefined) return false;
    if (this.hub.size > 1) return this.#fanoutTarget(true);
    const writer = this.hub.soleWriter;
    if (this.#log !== undefined ? !this.#log.kernelCapable : this.history !== undefined && !ringTeeFits(writer, this.history)) return false;
    return writer?.sink.kernelPath !== undefined && writer.sink.queuedBytes > 0;
  }

  /** @internal Called once by the domain after the backend factory returned. */
  attach(backend: Backend): void {
    this.#backend = backend;
  }

  get isOpen(): boolean {
    return this.#isOpen;
  }
  get stopped(): boolean {
    return this.#stopped;
  }
  /** query-chardev's filename (`pty:/dev/pts/N`, `file`, …). */
  get filename(): string {
    return this.#backend?.filename ?? this.type;
  }
  /** Where the host interface is, one line for humans. */
  get where(): string {
    const base = this.#backend?.where ?? `${this.id}: ${this.type}`;
    return this.#log === undefined ? base : `${base}\n${this.id}: log ${this.#log.path}`;
  }
  get ptyPath(): string | undefined {
    return this.#backend?.ptyPath;
  }
  get boundService(): string | undefined {
    return this.#backend?.boundService;
  }
  get counters(): ChardevCounters {
    return {
      bytesFromGuest: this.#fromGuest,
      bytesToGuest: this.#toGuest,
      dropped: (this.#backend?.droppedBytes ?? 0) + this.hub.missedBytes + this.#discarded,
    };
  }

  /**
   * The frontend gives up on `n` bytes `write` refused (a UART dropping what its full FIFO
   * could not pass on): counted in `counters.dropped`. A frontend that retries them later
   * does not call this, so nothing is counted twice.
   */
  discard(n: number): void {
    if (Number.isInteger(n) && n > 0) this.#discarded += n;
  }

  /**
   * Guest output. Returns how many bytes were accepted, like a non-blocking write(2): fewer
   * than given (maybe 0) while the connected client is behind or the host side cannot take
   * more, and 'writable' follows once it can — QEMU's contract with its frontends. The
   * frontend keeps the rest, stops producing (a UART holds its transmitter) and retries
   * then; or gives up on it with `discard`. 0 after stop. Accepted bytes go to every client,
   * the history and the `<log>` file exactly once, so a retry never logs a byte twice. The
   * bytes are copied: the caller may reuse `data` at once.
   */
  write(data: Uint8Array): number {
    return this.#write(data, false);
  }

  /**
   * `write` for a buffer the caller hands over and never touches again (a chunk fresh from
   * a Node stream, say): clients and history keep references to it instead of a copy.
   * Measured on a bulk relay: one 64 KiB allocation, memcpy and its share of GC less per chunk.
   */
  writeOwned(data: Buffer): number {
    return this.#write(data, true);
  }

  #write(data: Uint8Array, owned: boolean): number {
    if (this.#stopped || this.#backend === undefined || data.length === 0) return 0;
    // The writer client's room first: what it cannot take now must not reach the backend either.
    const room = this.hub.room(data.length);
    if (room === 0) {
      this.#refused = true;
      return 0;
    }
    const n = this.#backend.write(room < data.length ? data.subarray(0, room) : data);
    if (n < data.length) this.#refused = true;
    if (n > 0) {
      this.#fromGuest += n;
      // Transports keep references to what they are given, and callers reuse buffers: unless
      // handed over, copy once. allocUnsafe + set is a memcpy; Buffer.from(view) copies element-wise.
      let accepted: Buffer;
      if (owned) {
        accepted = n === data.length ? (data as Buffer) : (data as Buffer).subarray(0, n);
      } else {
        accepted = Buffer.allocUnsafe(n);
        accepted.set(data.subarray(0, n));
      }
      this.history?.append(accepted);
      this.hub.broadcast(accepted);
      const err = this.#log?.write(accepted);
      if (err !== undefined)
        this.reportError(
          new ChardevError('ERR_BACKEND_WRITE', `${this.id}: log ${this.#log?.path}: ${describeErrno(err as NodeJS.ErrnoException)}; logging stopped`, {
            cause: err,
          }),
        );
    }
    return n;
  }

  on<E extends ChardevEvent>(event: E, listener: ChardevEvents[E]): this {
    // A new input listener gets input from now on: none may bypass it by the kernel path.
    if (event === 'data') this.#settleInputs();
    (this.#listeners[event] as Array<ChardevEvents[E]>).push(listener);
    if (event === 'data' && this.#listeners.data.length === 1) {
      // What was held goes first (a microtask: before any client's next read, after the caller's own setup).
      if (this.#held.length > 0) queueMicrotask(() => this.#deliverHeld());
      this.#setReading(true);
    }
    if (event === 'open' && this.#isOpen) {
      // Late attach replays OPENED, asynchronously so the caller's own setup finishes first.
      queueMicrotask(() => {
        if (this.#isOpen && this.#listeners.open.includes(listener as ChardevEvents['open'])) (listener as ChardevEvents['open'])();
      });
    }
    return this;
  }

  off<E extends ChardevEvent>(event: E, listener: ChardevEvents[E]): this {
    const list = this.#listeners[event] as Array<ChardevEvents[E]>;
    const i = list.indexOf(listener);
    if (i >= 0) list.splice(i, 1);
    if (event === 'data' && this.#listeners.data.length === 0) this.#setReading(false);
    return this;
  }

  #setReading(reading: boolean): void {
    this.#backend?.setReading(reading);
    this.hub.setReading(reading);
  }

  /** Guest output this device's clients and backend have not taken yet (chardev's queues, and the kernel's where known). */
  get pendingOutputBytes(): number {
    return this.hub.unreadBytes + (this.#backend?.pendingBytes ?? 0);
  }

  /** Resolves once what the guest wrote has left user space (pty or socket peer read it). */
  drained(): Promise<void> {
    return this.#backend?.drained?.() ?? Promise.resolve();
  }

  /** Stop the backend and the log; releases every fd and timer. Idempotent. */
  async stop(abort = false): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    // Nothing more is read from the guest for this device, nor moved to it by the kernel.
    for (const o of [...this.#outputs]) o.close();
    this.#settleInputs();
    const backend = this.#backend;
    try {
      // The backend's own peers just go away, as QEMU's do; other clients (consoles) are told.
      if (backend !== undefined) await backend.stop(abort);
    } finally {
      this.hub.closeAll('the device was stopped');
      this.#log?.close(abort);
      if (this.#ringFd !== undefined && this.#ringFd >= 0) closeQuietly(this.#ringFd);
      this.#ringFd = undefined;
      if (this.#isOpen) {
        // QEMU sends CLOSED when a chardev is destroyed.
        this.#isOpen = false;
        for (const l of [...this.#listeners.close]) l();
      }
    }
  }

  /** @internal Backend callbacks. */
  receive(chunk: Buffer): void {
    if (this.#stopped) return;
    // After whatever the kernel path moved before it.
    this.#settleInputs();
    if (this.#listeners.data.length === 0 || this.#held.length > 0) {
      if (this.#heldBytes + chunk.length > HELD_INPUT_BYTES) return;
      this.#held.push(chunk);
      this.#heldBytes += chunk.length;
      return;
    }
    this.#toGuest += chunk.length;
    for (const l of [...this.#listeners.data]) l(chunk);
  }

  /** Held input and BREAKs, in order, for as long as somebody listens. */
  #deliverHeld(): void {
    while (!this.#stopped && this.#listeners.data.length > 0) {
      const item = this.#held.shift();
      if (item === undefined) return;
      if (item === 'break') {
        for (const l of [...this.#listeners.break]) l();
        continue;
      }
      this.#heldBytes -= item.length;
      this.#toGuest += item.length;
      for (const l of [...this.#listeners.data]) l(item);
    }
  }
  /** @internal */
  opened(): void {
    if (this.#stopped || this.#isOpen) return;
    this.#isOpen = true;
    for (const l of [...this.#listeners.open]) l();
  }
  /** @internal */
  closed(): void {
    if (this.#stopped || !this.#isOpen) return;
    this.#isOpen = false;
    for (const l of [...this.#listeners.close]) l();
  }
  /** The terminal size of the writer, if it said one: what a guest with a terminal should be told at start. */
  get terminalSize(): TerminalSize | undefined {
    return this.hub.writer?.size;
  }
  /** @internal */
  breakReceived(): void {
    if (this.#stopped) return;
    this.#settleInputs();
    // Behind held input: a BREAK must not overtake the bytes typed before it.
    if (this.#held.length > 0) {
      this.#held.push('break');
      return;
    }
    for (const l of [...this.#listeners.break]) l();
  }
  /** @internal The backend or the writer client can take output again after refusing some. */
  writableAgain(): void {
    if (this.#stopped || !this.#refused) return;
    this.#refused = false;
    for (const l of [...this.#listeners.writable]) l();
  }
  /** @internal Listeners get it; without one it goes to the domain's onError. */
  reportError(err: ChardevError, fallback?: (err: ChardevError) => void): void {
    const list = this.#listeners.error;
    if (list.length > 0) for (const l of [...list]) l(err);
    else (fallback ?? this.#fallback)?.(err);
  }
  #fallback: ((err: ChardevError) => void) | undefined;
  /** @internal */
  setErrorFallback(f: (err: ChardevError) => void): void {
    this.#fallback = f;
  }
}

/**
 * A single writer's run may keep `history` in a ring (`#historyTarget`): the writer's
 * transport is a raw tcp or unix socket (it frames notices inline, so the fan-out can serve
 * it too), not a pty, and the history is at least RING_TEE_MIN_BYTES.
 */
function ringTeeFits(writer: HubClient | undefined, history: HistoryRing): boolean {
  return writer?.sink.kernelPath?.noticeFrame !== undefined && history.sizeBytes >= RING_TEE_MIN_BYTES;
}

/**
 * The last min(loggedBytes, ringBytes) bytes a ring run wrote into `fd` (`TeeRunSpec.ringBytes`:
 * written from offset 0, wrapping), oldest first. Short only if the file is (it never is).
 */
function readRingTail(fd: number, ringBytes: number, loggedBytes: number): Buffer {
  const n = Math.min(loggedBytes, ringBytes);
  const endAt = loggedBytes % ringBytes;
  const out = Buffer.allocUnsafe(n);
  // Wrapped: the part from the ring's end first, then from its start up to `endAt`.
  const first = n > endAt ? n - endAt : 0;
  let got = first > 0 ? readAllAt(fd, out.subarray(0, first), ringBytes - first) : 0;
  if (got === first) got += readAllAt(fd, out.subarray(first), endAt - (n - first));
  return out.subarray(0, got);
}
