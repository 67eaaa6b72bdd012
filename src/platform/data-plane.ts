/**
 * The data-plane thread: one worker thread per process that moves bytes between fds by
 * splice(2) in a blocking poll loop (data-plane-worker.ts), so a streaming guest costs the
 * main thread nothing per chunk — no wake-up when a client's socket fills or frees, no hop
 * per pty refill, no write(2) per log chunk.
 *
 * The main thread keeps control: it decides when a run may start (`GuestOutput`, from the
 * device's state), and stops it when anything changes (a client comes or goes). A run moves
 * bytes from `from` (a pipe) to `to` (a socket, a pty master, a file) until it is stopped,
 * the source ends, the source stays empty for `graceMs` (the guest went quiet: libuv's
 * reader is quicker to wake for interactive output), `limitBytes` were moved (a log about
 * to rotate), or a transfer fails. Nothing is ever held in between: a splice moves bytes
 * from the pipe to the destination or leaves them in the pipe, so when a run ends every
 * byte is either at the destination (counted in `moved`) or still in the guest's pipe. (A
 * `copy` run to a regular file holds bytes in a pipe or buffer of the thread's only inside
 * one transfer; a failed write hands what it did not write back in `unwritten`. A run into
 * a terminal reads into a buffer of its own and writes it out as the terminal takes it:
 * what the buffer holds when the run ends, for whatever reason, comes back in `unwritten`.)
 *
 * The worker gets its own duplicates of both fds and closes them when the run ends, so the
 * main thread may close its own at any time (a client leaving, a device stopping) without
 * the worker ever writing to a reused fd number.
 *
 * Waking the worker: messages go through a MessagePort the worker reads without its event
 * loop (it is blocked in poll), after a byte on a wake pipe that poll watches. At process
 * exit the same byte lets the worker's poll return, so Node can stop the thread.
 */
import * as fs from 'node:fs';
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { NativeUnavailableError, libc } from './native.ts';
import { makePipe, pipeSize, type PipeEnds } from './splice.ts';
import { errnoName } from './platform.ts';
import { F_GETFL, F_SETFL, O_NONBLOCK, TCOOFF, TCOON, TCXONC } from './linux-abi.ts';
import { REPORT_MS } from './data-plane-schedule.ts';

/** Why a run ended. */
export type RunEnd =
  /** The main thread asked (`DataPlaneRun.stop`). */
  | 'stopped'
  /** The source's writers are all gone. */
  | 'eof'
  /** The source stayed empty for `graceMs`. */
  | 'idle'
  /** `limitBytes` were moved. */
  | 'limit'
  /** A transfer failed, by errno name (EPIPE, ECONNRESET, EIO, ENOSPC, EINVAL, …). */
  | { readonly error: string };

export interface RunSpec {
  /** A pipe (the guest's output). Duplicated: the caller keeps its own fd. */
  readonly from: number;
  /** A socket, pty master or file. Duplicated too. */
  readonly to: number;
  /** Stop after this many bytes (undefined: no limit). */
  readonly limitBytes?: number;
  /** How long the source may stay empty before the run ends with 'idle'. */
  readonly graceMs: number;
  /** `to` is a file shared with appending writers: seek to its end before every transfer. */
  readonly seekEnd?: boolean;
  /**
   * `to` is a regular file: move the bytes through a pipe of the thread's own, not by one
   * splice. A splice into a file holds the source pipe's lock while it copies into the page
   * cache, so the guest could not write meanwhile (it spins on the lock); a splice into a
   * pipe only moves the pages, and the guest refills its pipe while the thread splices its
   * own into the file (one copy per byte, where read(2) + write(2) make two). A file that
   * takes no splice is written by read(2) + write(2) through a buffer of the thread's. A
   * write to a regular file never waits for room, so nothing stays in the thread's pipe or
   * buffer between transfers; if one fails, the bytes it did not write come back in
   * `unwritten`.
   */
  readonly copy?: boolean;
}

/**
 * A run that also appends every byte to a log file before it goes to `to` (a `<log>`
 * beside a client): tee(2) into a scratch pipe, splice that to the log, then splice the
 * guest's pipe to `to`. `limitBytes` counts bytes logged (the log's rotation point).
 */
export interface TeeRunSpec extends RunSpec {
  /** The log file, opened without O_APPEND (splice refuses it). Duplicated. Each transfer starts at its end. */
  readonly log: number;
  /**
   * The log is a ring of this many bytes instead (`log` a file of the run's, e.g. a memory
   * file): the run writes from offset 0 on, wrapping, so after `logged` bytes its last
   * min(logged, ringBytes) end at offset `logged % ringBytes`.
   */
  readonly ringBytes?: number;
}

/**
 * A run through a pipe of ours (`DataPlane.startVia`): `from` (a socket) → `via` → `to`
 * (a socket), both hops spliced in one loop. For input to a guest whose stdin is a
 * socketpair: splice(2) needs a pipe on one side of each transfer. `moved` counts what
 * reached `to`; when the run ends, what is left in `via` is the caller's to deliver.
 */
export interface ViaRunSpec {
  readonly from: number;
  /** The intermediate pipe (the caller's; the worker takes duplicates of both ends). */
  readonly via: { readonly readFd: number; readonly writeFd: number };
  readonly to: number;
  /** How long `from` and `via` may stay empty before the run ends with 'idle'. */
  readonly graceMs: number;
}

export interface RunResult {
  /** Bytes moved by the whole run. */
  readonly moved: number;
  /** Times the run waited for room at the destination (the client held the guest). */
  readonly waits: number;
  readonly end: RunEnd;
  /** Tee runs: bytes appended to the log by the whole run. */
  readonly logged?: number;
  /**
   * Tee runs: of those, bytes not yet at `to` when the run ended. They are the next bytes
   * of the source pipe, in the log already: the caller reads them and delivers them
   * itself, without logging them again.
   */
  readonly ahead?: number;
  /**
   * A `copy` run that failed to write, or a run into a terminal however it ended: the bytes
   * it had read from the source and not written (in order, before anything still in the
   * source). The caller takes them as if just read.
   */
  readonly unwritten?: Buffer;
}

export interface RunEvents {
  /** Bytes moved so far by this run, and its waits for room so far (sent every few milliseconds while it moves bytes); tee runs: bytes logged so far. */
  progress(moved: number, waits: number, logged?: number): void;
  /** Exactly once; `moved` is final. */
  ended(result: RunResult): void;
}

/** Main thread → worker. */
export type ToWorker =
  | {
      readonly op: 'start';
      readonly id: number;
      readonly from: number;
      readonly to: number;
      readonly limitBytes: number;
      readonly graceMs: number;
      readonly seekEnd: boolean;
      readonly copy: boolean;
      /** The main thread holds a duplicate of a terminal `to` and can kick a write parked on it (WorkerSetup.parking). */
      readonly kickable: boolean;
    }
  /** A tee run (`TeeRunSpec`); the worker owns the scratch pipe's ends and closes them. */
  | {
      readonly op: 'startTee';
      readonly id: number;
      readonly from: number;
      readonly to: number;
      readonly log: number;
      readonly scratchRead: number;
      readonly scratchWrite: number;
      /** 0: `log` is appended to; otherwise `TeeRunSpec.ringBytes`. */
      readonly ringBytes: number;
      readonly limitBytes: number;
      readonly graceMs: number;
    }
  | FanoutStartMsg
  | {
      readonly op: 'start-via';
      readonly id: number;
      readonly from: number;
      readonly viaRead: number;
      readonly viaWrite: number;
      readonly to: number;
      readonly graceMs: number;
    }
  | { readonly op: 'stop'; readonly id: number }
  /** The process exits: end every run and return, so Node can join the thread. */
  | { readonly op: 'quit' };

/** A fan-out run's start (data-plane-fanout.ts): the fds are the worker's to close. */
export interface FanoutStartMsg {
  readonly op: 'fanout-start';
  readonly id: number;
  readonly from: number;
  readonly writer: { readonly sock: number; readonly queueBytes: number };
  /** sock -1: the viewer is excluded from this run (it misses everything it moves). */
  readonly viewers: readonly {
    readonly clientId: number;
    readonly sock: number;
    readonly queueBytes: number;
    readonly untold: number;
  }[];
  readonly graceMs: number;
  readonly noticeBefore: string;
  readonly noticeAfter: string;
  /** FanoutSpec.history, its fd duplicated. */
  readonly history?: { readonly fd: number; readonly bytes: number };
}

/** One viewer's counts so far in a fan-out run. */
export interface FanoutViewerCount {
  readonly clientId: number;
  /** Guest bytes handed to it (its socket, or the leftovers at the end). */
  readonly sent: number;
  /** Guest bytes it missed (its queue overflowed, or it was excluded). */
  readonly missed: number;
  /** Missed and not yet told (the notice goes before its next bytes). */
  readonly untold: number;
}

/** Worker → main thread. */
export type FromWorker =
  | { readonly op: 'ready' }
  | { readonly op: 'fanout-progress'; readonly id: number; readonly moved: number; readonly waits: number; readonly viewers: readonly FanoutViewerCount[] }
  | {
      readonly op: 'fanout-ended';
      readonly id: number;
      readonly moved: number;
      readonly waits: number;
      readonly viewers: readonly FanoutViewerCount[];
      /** Bytes the writer still had to go (counted as moved, not yet in its socket). */
      readonly writerLeft: Uint8Array | null;
      /** The same per viewer, in the order given. */
      readonly viewersLeft: readonly (Uint8Array | null)[];
      /** With a history ring: FanoutResult.historyKept and historyLeft. */
      readonly historyKept?: number;
      readonly historyLeft?: Uint8Array | null;
      readonly end: 'stopped' | 'eof' | 'idle' | 'error';
      readonly error?: string;
    }
  | { readonly op: 'progress'; readonly id: number; readonly moved: number; readonly waits: number; readonly logged?: number }
  | {
      readonly op: 'ended';
      readonly id: number;
      readonly moved: number;
      readonly waits: number;
      readonly end: 'stopped' | 'eof' | 'idle' | 'limit' | 'error';
      readonly error?: string;
      readonly logged?: number;
      readonly ahead?: number;
      readonly unwritten?: Uint8Array;
    };

/** A fan-out run: the guest's pipe to a writer that holds it and viewers that miss what does not fit. */
export interface FanoutSpec {
  readonly from: number;
  /** The writer's socket (duplicated) and its queue: what may be in flight to it before the guest waits. */
  readonly writer: { readonly fd: number; readonly queueBytes: number };
  /**
   * Each viewer's socket (duplicated), its bounded queue and the bytes it missed not yet
   * told; `fd` undefined: excluded (it misses all the run moves).
   */
  readonly viewers: readonly { readonly clientId: number; readonly fd: number | undefined; readonly queueBytes: number; readonly untold: number }[];
  readonly graceMs: number;
  /** The missed-output notice, as the viewers' transport frames it: before and after the count. */
  readonly noticeBefore: string;
  readonly noticeAfter: string;
  /**
   * A ring file of `bytes` (duplicated) the run writes every byte it takes into at its
   * stream position modulo `bytes`, from 0 (`TeeRunSpec.ringBytes`'s layout): a history.
   */
  readonly history?: { readonly fd: number; readonly bytes: number };
}

export interface FanoutResult {
  readonly moved: number;
  readonly waits: number;
  readonly viewers: readonly FanoutViewerCount[];
  readonly writerLeft: Buffer | undefined;
  readonly viewersLeft: readonly (Buffer | undefined)[];
  /**
   * With `FanoutSpec.history`: how many of the first bytes moved are in the ring (all of
   * them, unless writing it failed), and the ones after that, which are not.
   */
  readonly historyKept?: number;
  readonly historyLeft?: Buffer | undefined;
  readonly end: RunEnd;
}

export interface FanoutEvents {
  progress(moved: number, waits: number, viewers: readonly FanoutViewerCount[]): void;
  /** Exactly once; the counts are final, and the leftovers are the callers' to queue. */
  ended(result: FanoutResult): void;
}

/** What the worker is started with. */
export interface WorkerSetup {
  readonly port: MessagePort;
  readonly wakeFd: number;
  /**
   * Int32 [0]: bumped (and notified) after every 'ended' message, for `DataPlaneRun.stop`'s
   * wait; [1]: how many times poll(2) returned (tests, profiles).
   */
  readonly endings: SharedArrayBuffer;
  /**
   * Int32 [0]: the id of the terminal run whose master is blocking right now (0: none). Such
   * a run writes with blocking write(2)s, so the kernel waits for room inside the call, as
   * socat's relay does; a write parked there cannot see the wake pipe, so every wake-up also
   * kicks it (`DataPlane.#kickParked`). [1]: 1 while that run writes holding bytes it has
   * not reported: parked on a stalled reader it would never report them, so the main thread
   * kicks it after two REPORT_MS ticks without a report (`#checkParked`).
   */
  readonly parking: SharedArrayBuffer;
}

/** How long one wait for a stopping run lasts before the messages are looked at again. */
const STOP_WAIT_SLICE_MS = 50;

/** A run on the data-plane thread. */
export class DataPlaneRun {
  readonly #plane: DataPlane;
  readonly id: number;
  #stopAsked = false;
  /** @internal */
  constructor(plane: DataPlane, id: number) {
    this.#plane = plane;
    this.id = id;
  }
  /**
   * Stop the run and wait for it: when this returns, `ended` was called with the final
   * count and the worker has closed its fds, so nothing more reaches the destination. The
   * wait is for the worker's transfer in progress (one non-blocking splice, or a blocking
   * write into a terminal, which the stop's wake-up kicks: `#kickParked`). Idempotent.
   */
  stop(): void {
    if (this.#stopAsked) return;
    this.#stopAsked = true;
    this.#plane.stopAndWait(this.id);
  }
}

interface Active {
  readonly run: DataPlaneRun;
  readonly events: RunEvents;
  readonly from: number;
  readonly to: number;
  /** More fds the worker owns for the run (a tee run's log and scratch pipe, a via run's pipe). */
  readonly more?: readonly number[];
  /**
   * A run into a terminal: the main thread's own duplicate of the master, to kick a write
   * parked on it (`#kickParked`); closed here once the run has ended, so it never names
   * another file.
   */
  readonly kick?: number;
}

export class DataPlane {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #wake: PipeEnds;
  readonly #wakeByte = Buffer.from([1]);
  readonly #runs = new Map<number, Active>();
  readonly #fans = new Map<number, { readonly run: DataPlaneRun; readonly events: FanoutEvents; readonly fds: readonly number[] }>();
  readonly #endings = new Int32Array(new SharedArrayBuffer(8));
  /** WorkerSetup.parking. */
  readonly #parking = new Int32Array(new SharedArrayBuffer(8));
  /** `#checkParked`'s tick while a terminal run is active (runs with a `kick`), else undefined. */
  #parkTimer: NodeJS.Timeout | undefined;
  /** Ticks in a row that found the parked run holding unreported bytes, with no report between. */
  #parkTicks = 0;
  #nextId = 1;
  #failed: Error | undefined;
  #readyResolve: () => void = () => {};
  /** Resolves once the thread runs its loop (it takes a moment to load; runs started before then wait). */
  readonly ready: Promise<void> = new Promise((resolve) => (this.#readyResolve = resolve));

  constructor() {
    this.#wake = makePipe({ nonBlocking: true });
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    const setup: WorkerSetup = {
      port: port2,
      wakeFd: this.#wake.readFd,
      endings: this.#endings.buffer as SharedArrayBuffer,
      parking: this.#parking.buffer as SharedArrayBuffer,
    };
    const [entry, how] = workerEntry();
    this.#worker = new Worker(entry, { ...how, workerData: setup, transferList: [port2] });
    this.#worker.on('error', (e) => this.#fail(e));
    this.#worker.on('exit', (code) => this.#fail(new Error(`the data-plane thread exited (code ${code})`)));
    this.#port.on('message', (m: FromWorker) => this.#onMessage(m));
    // Neither the thread nor its port keeps the process alive while no run is active
    // (a 'message' listener refs the port, so this comes after it).
    this.#worker.unref();
    // The port stays referenced until the thread says it is ready, so awaiting `ready` works
    // in a process with nothing else to do.
    // Node waits for worker threads at exit, and this one may be blocked in poll(2): tell
    // it to return (a wake-up alone is not enough: Node asks the thread to stop only after
    // the 'exit' listeners, and by then it would be back in poll).
    process.once('exit', () => {
      this.#port.postMessage({ op: 'quit' } satisfies ToWorker);
      this.#wakeUp();
    });
  }

  /** How many times the thread's poll returned: each is a wake-up (none while everyone waits). */
  get wakeups(): number {
    return Atomics.load(this.#endings, 1);
  }

  /** Runs now active. */
  get size(): number {
    return this.#runs.size + this.#fans.size;
  }

  /** Start a fan-out run (data-plane-fanout.ts). The sockets are duplicated for the worker, which closes them. */
  startFanout(spec: FanoutSpec, events: FanoutEvents): DataPlaneRun {
    if (this.#failed !== undefined) throw this.#failed;
    const c = libc();
    const fds: number[] = [];
    const dup = (fd: number): number => {
      const d = c.dupCloexec(fd);
      if (d < 0) throw new Error(`dup fd ${fd}: ${errnoName(c.errno())}`);
      fds.push(d);
      return d;
    };
    let msg: FanoutStartMsg;
    const id = this.#nextId++;
    try {
      msg = {
        op: 'fanout-start',
        id,
        from: dup(spec.from),
        writer: { sock: dup(spec.writer.fd), queueBytes: spec.writer.queueBytes },
        viewers: spec.viewers.map((v) => ({ clientId: v.clientId, sock: v.fd === undefined ? -1 : dup(v.fd), queueBytes: v.queueBytes, untold: v.untold })),
        graceMs: spec.graceMs,
        noticeBefore: spec.noticeBefore,
        noticeAfter: spec.noticeAfter,
        ...(spec.history !== undefined ? { history: { fd: dup(spec.history.fd), bytes: spec.history.bytes } } : {}),
      };
    } catch (e) {
      for (const fd of fds) c.closeFd(fd);
      throw e;
    }
    const run = new DataPlaneRun(this, id);
    this.#fans.set(id, { run, events, fds });
    this.#port.ref();
    this.send(msg);
    return run;
  }

  start(spec: RunSpec, events: RunEvents): DataPlaneRun {
    if (this.#failed !== undefined) throw this.#failed;
    const c = libc();
    const from = c.dupCloexec(spec.from);
    if (from < 0) throw new Error(`dup fd ${spec.from}: ${errnoName(c.errno())}`);
    const to = c.dupCloexec(spec.to);
    if (to < 0) {
      const err = errnoName(c.errno());
      c.closeFd(from);
      throw new Error(`dup fd ${spec.to}: ${err}`);
    }
    // The worker may park a blocking write on a terminal: the kick needs a duplicate of our own.
    const kick = c.isatty(to) === 1 ? c.dupCloexec(to) : -1;
    const id = this.#nextId++;
    const run = new DataPlaneRun(this, id);
    this.#runs.set(id, { run, events, from, to, ...(kick >= 0 ? { kick } : {}) });
    if (kick >= 0 && this.#parkTimer === undefined) {
      this.#parkTimer = setInterval(() => this.#checkParked(), REPORT_MS);
      this.#parkTimer.unref();
    }
    this.#port.ref();
    this.send({
      op: 'start',
      id,
      from,
      to,
      limitBytes: spec.limitBytes ?? -1,
      graceMs: spec.graceMs,
      seekEnd: spec.seekEnd === true,
      copy: spec.copy === true,
      kickable: kick >= 0,
    });
    return run;
  }

  /**
   * A tee run (`TeeRunSpec`): every byte goes to the log, then to `to`. The scratch pipe
   * is as large as the source, so one tee takes all the source holds.
   */
  startTee(spec: TeeRunSpec, events: RunEvents): DataPlaneRun {
    if (this.#failed !== undefined) throw this.#failed;
    const c = libc();
    const fds: number[] = [];
    const closeAll = (): void => {
      for (const fd of fds) c.closeFd(fd);
    };
    for (const fd of [spec.from, spec.to, spec.log]) {
      const copy = c.dupCloexec(fd);
      if (copy < 0) {
        const err = errnoName(c.errno());
        closeAll();
        throw new Error(`dup fd ${fd}: ${err}`);
      }
      fds.push(copy);
    }
    let scratch: PipeEnds;
    try {
      scratch = makePipe({ nonBlocking: true, size: pipeSize(spec.from) ?? 1024 * 1024 });
    } catch (e) {
      closeAll();
      throw e;
    }
    const [from, to, log] = fds as [number, number, number];
    const id = this.#nextId++;
    const run = new DataPlaneRun(this, id);
    this.#runs.set(id, { run, events, from, to, more: [log, scratch.readFd, scratch.writeFd] });
    this.#port.ref();
    this.send({
      op: 'startTee',
      id,
      from,
      to,
      log,
      scratchRead: scratch.readFd,
      scratchWrite: scratch.writeFd,
      ringBytes: spec.ringBytes ?? 0,
      limitBytes: spec.limitBytes ?? -1,
      graceMs: spec.graceMs,
    });
    return run;
  }

  /** A run through an intermediate pipe (`ViaRunSpec`); its events as `start`'s. */
  startVia(spec: ViaRunSpec, events: RunEvents): DataPlaneRun {
    if (this.#failed !== undefined) throw this.#failed;
    const c = libc();
    const fds: number[] = [];
    for (const fd of [spec.from, spec.via.readFd, spec.via.writeFd, spec.to]) {
      const dup = c.dupCloexec(fd);
      if (dup < 0) {
        const err = errnoName(c.errno());
        for (const d of fds) c.closeFd(d);
        throw new Error(`dup fd ${fd}: ${err}`);
      }
      fds.push(dup);
    }
    const [from, viaRead, viaWrite, to] = fds as [number, number, number, number];
    const id = this.#nextId++;
    const run = new DataPlaneRun(this, id);
    this.#runs.set(id, { run, events, from, to, more: [viaRead, viaWrite] });
    this.#port.ref();
    this.send({ op: 'start-via', id, from, viaRead, viaWrite, to, graceMs: spec.graceMs });
    return run;
  }

  /** @internal */
  send(msg: ToWorker): void {
    if (this.#failed !== undefined) return;
    this.#port.postMessage(msg);
    this.#wakeUp();
  }

  /** @internal */
  stopAndWait(id: number): void {
    this.send({ op: 'stop', id });
    while ((this.#runs.has(id) || this.#fans.has(id)) && this.#failed === undefined) {
      const seen = Atomics.load(this.#endings, 0);
      // The 'ended' message may already be queued: take messages now, not on a later turn.
      for (let m = receiveMessageOnPort(this.#port); m !== undefined; m = receiveMessageOnPort(this.#port)) this.#onMessage(m.message as FromWorker);
      if (!this.#runs.has(id) && !this.#fans.has(id)) return;
      Atomics.wait(this.#endings, 0, seen, STOP_WAIT_SLICE_MS);
    }
  }

  /** Ends `#checkParked`'s tick once no terminal run is left. */
  #stopParkTimer(): void {
    if (this.#parkTimer === undefined) return;
    for (const a of this.#runs.values()) if (a.kick !== undefined) return;
    clearInterval(this.#parkTimer);
    this.#parkTimer = undefined;
  }

  #wakeUp(): void {
    try {
      fs.writeSync(this.#wake.writeFd, this.#wakeByte);
    } catch {
      // A full wake pipe wakes the worker already.
    }
    // After the byte: a run that announced itself before looking at the wake pipe is seen
    // here, and one that announces itself later finds the byte (data-plane-worker.ts
    // `enterBlocking`).
    this.#kickParked();
  }

  /**
   * Counts that stay exact while a terminal's reader stalls: a write parked there since two
   * ticks, holding bytes it moved but has not reported, is kicked; the thread reports them
   * and parks again with nothing unreported (so one kick per stall, not one per tick).
   */
  #checkParked(): void {
    if (Atomics.load(this.#parking, 0) === 0 || Atomics.load(this.#parking, 1) === 0) {
      this.#parkTicks = 0;
      return;
    }
    if (++this.#parkTicks < 2) return;
    this.#parkTicks = 0;
    this.#kickParked();
  }

  /**
   * Makes a blocking write parked on a terminal return: O_NONBLOCK on the master's shared
   * file description (the write checks it each time it wakes), then the master's output
   * suspended and restarted (TCXONC), which wakes its writers. The write returns what it
   * wrote, nothing is lost; the thread reports it, looks at the wake pipe, and parks again
   * if nothing is there. Harmless if the write had already returned: the thread clears
   * O_NONBLOCK again only after another look at the wake pipe.
   */
  #kickParked(): void {
    const id = Atomics.load(this.#parking, 0);
    if (id === 0) return;
    const fd = this.#runs.get(id)?.kick;
    if (fd === undefined) return;
    const c = libc();
    const flags = c.fcntlInt(fd, F_GETFL, 0);
    if (flags >= 0 && (flags & O_NONBLOCK) === 0) c.fcntlInt(fd, F_SETFL, flags | O_NONBLOCK);
    c.ioctlIntIn(fd, TCXONC, TCOOFF);
    c.ioctlIntIn(fd, TCXONC, TCOON);
  }

  #onMessage(m: FromWorker): void {
    if (m.op === 'ready') {
      if (this.size === 0) this.#port.unref();
      this.#readyResolve();
      return;
    }
    if (m.op === 'fanout-progress' || m.op === 'fanout-ended') {
      this.#onFanout(m);
      return;
    }
    const active = this.#runs.get(m.id);
    if (active === undefined) return;
    if (m.op === 'progress') {
      if (active.kick !== undefined) this.#parkTicks = 0;
      active.events.progress(m.moved, m.waits, m.logged);
      return;
    }
    this.#runs.delete(m.id);
    if (active.kick !== undefined) {
      libc().closeFd(active.kick);
      this.#stopParkTimer();
    }
    if (this.size === 0) this.#port.unref();
    const end: RunEnd = m.end === 'error' ? { error: m.error ?? 'EUNKNOWN' } : m.end;
    const unwritten =
      m.unwritten !== undefined && m.unwritten.length > 0 ? Buffer.from(m.unwritten.buffer, m.unwritten.byteOffset, m.unwritten.length) : undefined;
    active.events.ended({
      moved: m.moved,
      waits: m.waits,
      end,
      ...(m.logged !== undefined ? { logged: m.logged } : {}),
      ...(m.ahead !== undefined ? { ahead: m.ahead } : {}),
      ...(unwritten !== undefined ? { unwritten } : {}),
    });
  }

  #onFanout(m: Extract<FromWorker, { op: 'fanout-progress' | 'fanout-ended' }>): void {
    const fan = this.#fans.get(m.id);
    if (fan === undefined) return;
    if (m.op === 'fanout-progress') {
      fan.events.progress(m.moved, m.waits, m.viewers);
      return;
    }
    this.#fans.delete(m.id);
    if (this.size === 0) this.#port.unref();
    const buf = (u: Uint8Array | null): Buffer | undefined => (u === null ? undefined : Buffer.from(u.buffer, u.byteOffset, u.byteLength));
    fan.events.ended({
      moved: m.moved,
      waits: m.waits,
      viewers: m.viewers,
      writerLeft: buf(m.writerLeft),
      viewersLeft: m.viewersLeft.map(buf),
      ...(m.historyKept !== undefined ? { historyKept: m.historyKept, historyLeft: buf(m.historyLeft ?? null) } : {}),
      end: m.end === 'error' ? { error: m.error ?? 'EUNKNOWN' } : m.end,
    });
  }

  /**
   * The thread died (it should not): every run ends with an error and its fds are closed
   * here; the callers go back to the JavaScript path. Bytes a run moved since its last
   * progress report are not counted, but none is lost: they reached the destination.
   */
  #fail(e: Error): void {
    if (this.#failed !== undefined) return;
    this.#failed = e;
    if (plane === this) plane = undefined;
    const runs = [...this.#runs.values()];
    this.#runs.clear();
    this.#port.unref();
    for (const a of runs) {
      const c = libc();
      c.closeFd(a.from);
      c.closeFd(a.to);
      if (a.kick !== undefined) c.closeFd(a.kick);
      for (const fd of a.more ?? []) c.closeFd(fd);
      a.events.ended({ moved: 0, waits: 0, end: { error: 'EWORKER' } });
    }
    this.#stopParkTimer();
    const fans = [...this.#fans.values()];
    this.#fans.clear();
    for (const f of fans) {
      for (const fd of f.fds) libc().closeFd(fd);
      // Bytes still in the run's ring are lost with the thread: they were counted as moved.
      f.events.ended({ moved: 0, waits: 0, viewers: [], writerLeft: undefined, viewersLeft: [], end: { error: 'EWORKER' } });
    }
  }
}

/**
 * The worker's entry: the compiled .js beside this file (dist), or — running from the
 * TypeScript sources under tsx (the checkout, the tests) — a bootstrap that registers tsx
 * in the worker first: Node 20 does not run the main thread's `--import` there.
 */
function workerEntry(): [string | URL, { eval?: boolean }] {
  if (!import.meta.url.endsWith('.ts')) return [new URL('./data-plane-worker.js', import.meta.url), {}];
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./data-plane-worker.ts', import.meta.url).href;
  return [`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`, { eval: true }];
}

let plane: DataPlane | undefined;

/**
 * The process's data-plane thread, started on first use. Throws `NativeUnavailableError`
 * without koffi or under a runtime whose worker threads cannot load it; callers then keep
 * the JavaScript path.
 */
/** Whether this process's data-plane thread has been started (it holds fds of its own for good). */
export function dataPlaneStarted(): boolean {
  return plane !== undefined;
}

export function dataPlane(): DataPlane {
  if (plane !== undefined) return plane;
  if (process.versions['bun'] !== undefined)
    throw new NativeUnavailableError('symbol', `the data-plane thread needs Node's worker threads; this is Bun ${process.versions['bun']}`);
  plane = new DataPlane();
  return plane;
}
