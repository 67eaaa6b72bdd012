/**
 * The people attached to one device: peers of a server transport, a pty's reader,
 * `chardev console` sessions, browser tabs. Every client gets all guest output (after the
 * history, if the device keeps one); only the writer's input, BREAKs and terminal size
 * reach the guest.
 * The first client that may write is the writer; a later one takes over only with force,
 * and when the writer leaves the longest-attached client that may write is promoted.
 * Role changes are told to the clients they concern.
 *
 * Flow control is QEMU's: the writer gets every byte, in order, and holds the guest while it
 * is behind — `room()` says how much output the device may take now (at most `holdBytes`
 * in flight per writer), and `onWritable` fires once it can take more. Viewers never hold
 * the guest: each has a bounded queue, and output that does not fit is counted as missed
 * and, by the device's policy, either skipped (the client is told how much, once it has
 * room again) or ends that client's session. A stall limit (opt-in) releases a writer that
 * has taken nothing for that long: it then misses output like a viewer (or is
 * disconnected) until it has caught up.
 */
import type { HistoryRing } from './history.ts';

export type ClientRole = 'writer' | 'viewer';

/** The missed-output notice after its count (the kernel path's fan-out writes the same words). */
export const MISSED_NOTICE = ' bytes of output were dropped while this client was not reading';
export type ClientKind = 'tcp' | 'unix' | 'pty' | 'console' | 'browser';
export type SlowClientPolicy = 'drop' | 'disconnect';

/** What a transport offers the hub for one client. */
export interface ClientSink {
  /**
   * What the client has not read yet: `queuedBytes` plus what the kernel holds for it, when
   * the transport can tell. Progress is seen here (a queued write completes only whole, so
   * `queuedBytes` alone stands still while a slow reader takes a large one).
   */
  readonly unreadBytes?: number;
  /**
   * Hand bytes to the transport (never blocks; the hub checks `queuedBytes` first). A
   * transport whose queue can fill calls `HubClient.drained()` once it has sent what it
   * held (a socket's 'drain'), so a guest held by this client resumes.
   */
  send(data: Buffer): void;
  /** Bytes handed over but not yet sent by the transport (net.Socket's writableLength). */
  readonly queuedBytes: number;
  /**
   * A human-readable notice (role change, missed output). Transports that frame messages
   * (browser, console protocol) send it out of band; raw byte streams get it inline.
   */
  notice(text: string): void;
  /** End this client's session (policy `disconnect`, device stop). */
  close(reason: string): void;
  /** Input flow control: stop or resume reading from this client. */
  pause(): void;
  resume(): void;
  /**
   * Transports whose output is a plain byte stream on an fd the kernel can splice to (a raw
   * tcp or unix socket: no TLS) offer it here, so guest output can reach this client
   * without entering V8 (`GuestOutput`). Absent: never.
   */
  readonly kernelPath?: KernelPath;
  /**
   * Transports whose input is a plain byte stream on an fd the kernel can splice from (a
   * raw tcp or unix socket: no TLS, no telnet) offer it here, so the writer's input can
   * reach the guest without entering V8 (`GuestInput`). Absent: never.
   */
  readonly inputPath?: InputPath;
}

/** A client's socket as a splice(2) source for its input. */
export interface InputPath {
  /**
   * Stop the transport reading the socket and hand out its fd: from now on nothing reads
   * it but the caller, until `release`. What the transport had already read is delivered
   * first, synchronously, through the client's input (`HubClient.input`). Undefined when
   * the socket cannot be read this way now (closed, or already claimed).
   */
  claim(): number | undefined;
  /** The caller stopped reading the fd: the transport reads it again (if the hub lets it). Idempotent. */
  release(): void;
}

/** A client's socket as a splice(2) destination. */
export interface KernelPath {
  /**
   * How the transport frames a notice inline (before and after the text), so the kernel
   * path can write the same notice the hub would send. Absent: no fan-out by the kernel.
   */
  readonly noticeFrame?: readonly [before: string, after: string];
  /**
   * The socket's fd while bytes written to it now would follow everything handed to the
   * transport before, in order: open for writing, and nothing queued in Node (its
   * writable queue is empty). Undefined otherwise. Bytes may be spliced to it only after
   * asking, in the same turn of the event loop, and nothing else writes to it meanwhile.
   */
  fd(): number | undefined;
}

export interface AttachOptions {
  readonly kind: ClientKind;
  /** Where the client is, e.g. `127.0.0.1:54321` or `console pid 4242`. */
  readonly label: string;
  /** A viewer for good: never writes, never promoted. */
  readonly readonly?: boolean;
  /** Become the writer now, demoting the current one. */
  readonly force?: boolean;
}

export interface ClientInfo {
  readonly id: number;
  readonly kind: ClientKind;
  readonly label: string;
  readonly role: ClientRole;
  readonly readonly: boolean;
  /** ISO 8601. */
  readonly since: string;
  readonly bytesSent: number;
  /** Guest output this client did not get because its queue was full. */
  readonly bytesMissed: number;
  /** A writer the stall limit released: it misses output instead of holding the guest until it catches up. */
  readonly released: boolean;
}

/** A client's terminal, in character cells. */
export interface TerminalSize {
  readonly cols: number;
  readonly rows: number;
}

export type ClientChange = 'attached' | 'detached' | 'role' | 'stalled';

/** The stall limit (`<cd:stall>`): a writer that took nothing for `limitMs` stops holding the guest. */
export interface StallPolicy {
  readonly limitMs: number;
  /** `drop`: it misses output until it has caught up; `disconnect`: its session ends. */
  readonly action: SlowClientPolicy;
}

export interface HubOptions {
  /** Most clients at once; attach beyond it is refused. */
  readonly maxClients: number;
  /** Per-client queue bound in bytes. */
  readonly queueBytes: number;
  readonly slowPolicy: SlowClientPolicy;
  /** Most guest output in flight to the writer before the guest waits (default: `queueBytes`). */
  readonly holdBytes?: number;
  readonly stall?: StallPolicy | undefined;
  readonly history?: HistoryRing | undefined;
  /** Writer input → guest. */
  readonly onInput: (data: Buffer) => void;
  readonly onBreak: () => void;
  /** The writer's terminal size, when it says one or a client that said one becomes the writer. */
  readonly onResize?: (size: TerminalSize) => void;
  /** Client count went 0 → 1 / 1 → 0 (the device's OPENED / CLOSED). */
  readonly onFirstAttach?: () => void;
  readonly onLastDetach?: () => void;
  /** A client attached, left or changed role (control-socket events). */
  readonly onChange?: (event: ClientChange, client: ClientInfo) => void;
  /**
   * Before any client comes, goes or changes role, and before the hub writes to a client
   * itself (history, notices): output moved outside the hub (the kernel path) must be
   * finished and counted by then, so counts and order hold across the change.
   */
  readonly beforeChange?: () => void;
  /** After `room()` said less than was asked: the device can take more output now. */
  readonly onWritable?: () => void;
  /** A client's transport sent what it held. */
  readonly onDrained?: (client: HubClient) => void;
}

export class HubClient {
  readonly id: number;
  readonly kind: ClientKind;
  readonly label: string;
  readonly readonly: boolean;
  readonly since = new Date().toISOString();
  role: ClientRole = 'viewer';
  bytesSent = 0;
  bytesMissed = 0;
  /** Missed since the client was last told. */
  missedUntold = 0;
  detached = false;
  /** Released by the stall limit: treated as a viewer for output until its queue is empty. */
  released = false;
  /** Stall watch: the queue size last sampled, and when it last went down. */
  lastQueued = 0;
  progressAt = 0;
  /** The client's terminal size, once it said one. */
  size: TerminalSize | undefined;
  readonly sink: ClientSink;
  readonly #hub: Hub;

  constructor(hub: Hub, id: number, sink: ClientSink, options: AttachOptions) {
    this.#hub = hub;
    this.id = id;
    this.sink = sink;
    this.kind = options.kind;
    this.label = options.label;
    this.readonly = options.readonly === true;
  }

  /** Bytes from this client to the guest; only the writer's get through. */
  input(data: Buffer): void {
    this.#hub.input(this, data);
  }
  break(): void {
    this.#hub.breakFrom(this);
  }
  /** The client's terminal is this big now; it reaches the guest while the client is the writer. */
  resize(size: TerminalSize): void {
    this.#hub.resizeFrom(this, size);
  }
  /** The transport sent what it held (or some of it): a guest this client holds may go on. */
  drained(): void {
    this.#hub.drained(this);
  }
  /** Whether guest output waits for this client (the writer, unless the stall limit released it). */
  get holds(): boolean {
    return this.role === 'writer' && !this.released && !this.detached;
  }
  /** The transport went away. */
  detach(): void {
    this.#hub.detach(this);
  }
  info(): ClientInfo {
    return {
      id: this.id,
      kind: this.kind,
      label: this.label,
      role: this.role,
      readonly: this.readonly,
      since: this.since,
      bytesSent: this.bytesSent,
      bytesMissed: this.bytesMissed,
      released: this.released,
    };
  }
}

export class HubFullError extends Error {}

function unread(c: HubClient): number {
  return c.sink.unreadBytes ?? c.sink.queuedBytes;
}

export class Hub {
  readonly #options: HubOptions;
  readonly #clients: HubClient[] = [];
  #nextId = 1;
  #reading = true;
  #inputDropped = 0;
  #missed = 0;
  /** `room()` said less than was asked; `onWritable` is due once there is room. */
  #wantRoom = false;
  #stallTimer: NodeJS.Timeout | undefined;

  constructor(options: HubOptions) {
    this.#options = options;
  }

  get #holdBytes(): number {
    return this.#options.holdBytes ?? this.#options.queueBytes;
  }

  /**
   * How many bytes of guest output the device may take now: unlimited while no client holds
   * the guest (nobody connected, or only viewers), else what the writer's in-flight bound
   * leaves. Asking for more than there is arms `onWritable`.
   */
  room(wanted: number): number {
    const room = this.#holderRoom();
    if (room < wanted && !this.#wantRoom) {
      this.#wantRoom = true;
      this.#watchStalls();
    }
    return room;
  }

  /** What the holding clients' in-flight bound leaves (at least 0); unlimited without one. */
  #holderRoom(): number {
    let room = Number.POSITIVE_INFINITY;
    for (const c of this.#clients) if (c.holds) room = Math.min(room, Math.max(0, this.#holdBytes - c.sink.queuedBytes));
    return room;
  }

  /** A client that missed output is told how much, once, before what it gets next. */
  #tellMissed(client: HubClient): void {
    if (client.missedUntold === 0) return;
    client.sink.notice(`${client.missedUntold}${MISSED_NOTICE}`);
    client.missedUntold = 0;
  }

  /** A client's transport sent what it held: the guest may go on, a released writer may hold again. */
  drained(client: HubClient): void {
    if (client.detached) return;
    if (client.released && client.sink.queuedBytes === 0) {
      client.released = false;
      this.#tellMissed(client);
      client.sink.notice('caught up: output waits for this client again');
    }
    this.#options.onDrained?.(client);
    this.#maybeWritable();
  }

  #maybeWritable(): void {
    if (!this.#wantRoom || this.#holderRoom() === 0) return;
    this.#wantRoom = false;
    this.#stopStallWatch();
    this.#options.onWritable?.();
  }

  /**
   * While the guest waits, sample each holding client's queue; one whose queue has not gone
   * down for the stall limit is released (or disconnected), once, and reported.
   */
  #watchStalls(): void {
    const stall = this.#options.stall;
    if (stall === undefined || this.#stallTimer !== undefined) return;
    const now = Date.now();
    for (const c of this.#clients) {
      c.lastQueued = unread(c);
      c.progressAt = now;
    }
    const everyMs = Math.max(20, Math.min(1000, Math.floor(stall.limitMs / 4)));
    this.#stallTimer = setInterval(() => this.#checkStalls(stall), everyMs);
    // A device waiting on a client must not keep the process alive on its own.
    this.#stallTimer.unref();
  }

  #checkStalls(stall: StallPolicy): void {
    if (!this.#wantRoom) {
      this.#stopStallWatch();
      return;
    }
    const now = Date.now();
    for (const c of [...this.#clients]) {
      if (!c.holds) continue;
      const queued = unread(c);
      if (queued < c.lastQueued) c.progressAt = now;
      c.lastQueued = queued;
      if (now - c.progressAt < stall.limitMs) continue;
      const seconds = stall.limitMs / 1000;
      if (stall.action === 'disconnect') {
        c.sink.close(`took no output for ${seconds} s: disconnected, as this device's stall limit says`);
        this.#options.onChange?.('stalled', { ...c.info(), released: true });
        this.detach(c);
      } else {
        c.released = true;
        c.sink.notice(`took no output for ${seconds} s: output no longer waits for this client; it misses what does not fit until it catches up`);
        this.#options.onChange?.('stalled', c.info());
      }
    }
    this.#maybeWritable();
  }

  #stopStallWatch(): void {
    if (this.#stallTimer !== undefined) clearInterval(this.#stallTimer);
    this.#stallTimer = undefined;
  }

  get size(): number {
    return this.#clients.length;
  }
  get maxClients(): number {
    return this.#options.maxClients;
  }
  /** Output some client missed (its queue was full), summed over every client ever attached. */
  get missedBytes(): number {
    return this.#missed;
  }
  /** Input from clients that were not the writer, since start. */
  get inputDropped(): number {
    return this.#inputDropped;
  }
  /** Output the clients have not read yet (chardev's queues and, where known, the kernel's), summed. */
  get unreadBytes(): number {
    let n = 0;
    for (const c of this.#clients) n += unread(c);
    return n;
  }
  get writer(): HubClient | undefined {
    return this.#clients.find((c) => c.role === 'writer');
  }
  /**
   * The device's only client, if it is the writer and holds the guest: then it alone
   * gets guest output, and output may bypass the hub (`GuestOutput`'s kernel path).
   */
  get soleWriter(): HubClient | undefined {
    const c = this.#clients.length === 1 ? this.#clients[0] : undefined;
    return c?.holds === true ? c : undefined;
  }
  /** What happens to a viewer whose queue is full. */
  get slowPolicy(): SlowClientPolicy {
    return this.#options.slowPolicy;
  }
  /** Per-client queue bound in bytes. */
  get queueBytes(): number {
    return this.#options.queueBytes;
  }
  /** The attached clients themselves, in attach order (the kernel path's fan-out). */
  members(): readonly HubClient[] {
    return this.#clients;
  }
  /**
   * A viewer's output moved outside the hub (the kernel path's fan-out): count it as
   * `broadcast` would have; `untold` is what it missed and was not told yet.
   */
  countKernel(client: HubClient, sentBytes: number, missedBytes: number, untold: number): void {
    client.bytesSent += sentBytes;
    client.bytesMissed += missedBytes;
    client.missedUntold = untold;
    this.#missed += missedBytes;
  }
  clients(): ClientInfo[] {
    return this.#clients.map((c) => c.info());
  }
  client(id: number): HubClient | undefined {
    return this.#clients.find((c) => c.id === id);
  }

  /**
   * Add a client: it gets the history first, then live output. Throws HubFullError when
   * `maxClients` are attached (the transport decides: wait like QEMU, or refuse).
   */
  attach(sink: ClientSink, options: AttachOptions): HubClient {
    if (this.#clients.length >= this.#options.maxClients) {
      throw new HubFullError(`all ${this.#options.maxClients} client slot${this.#options.maxClients === 1 ? ' is' : 's are'} taken`);
    }
    this.#options.beforeChange?.();
    const client = new HubClient(this, this.#nextId++, sink, options);
    const history = this.#options.history;
    if (history !== undefined && history.length > 0) {
      const replay = history.snapshot();
      sink.send(replay);
      client.bytesSent += replay.length;
    }
    this.#clients.push(client);
    if (!this.#reading) sink.pause();
    const current = this.writer;
    if (!client.readonly && (current === undefined || options.force === true)) {
      if (current !== undefined) this.#setRole(current, 'viewer', `${client.label} took over; you are a read-only viewer now`);
      client.role = 'writer';
    } else if (!client.readonly && current !== undefined) {
      sink.notice(`read-only: ${current.label} is the writer (attach with force to take over)`);
    }
    this.#options.onChange?.('attached', client.info());
    if (this.#clients.length === 1) this.#options.onFirstAttach?.();
    return client;
  }

  /** Give the writer role to `client` (QMP / `--force` on an attached session). */
  takeOver(client: HubClient): void {
    if (client.detached || client.readonly || client.role === 'writer') return;
    this.#options.beforeChange?.();
    const current = this.writer;
    if (current !== undefined) this.#setRole(current, 'viewer', `${client.label} took over; you are a read-only viewer now`);
    this.#setRole(client, 'writer', 'you are the writer now');
  }

  detach(client: HubClient): void {
    if (client.detached) return;
    this.#options.beforeChange?.();
    client.detached = true;
    const i = this.#clients.indexOf(client);
    if (i >= 0) this.#clients.splice(i, 1);
    this.#options.onChange?.('detached', client.info());
    if (client.role === 'writer') {
      const next = this.#clients.find((c) => !c.readonly);
      if (next !== undefined) this.#setRole(next, 'writer', `${client.label} left; you are the writer now`);
    }
    if (this.#clients.length === 0) {
      this.#stopStallWatch();
      this.#options.onLastDetach?.();
    }
    // The guest may have been waiting for this client.
    this.#maybeWritable();
  }

  /**
   * Guest output to every client. A client that holds the guest takes it whole (`room()`
   * was asked first); the others each within their own bound.
   */
  broadcast(data: Buffer): void {
    if (data.length === 0) return;
    const { queueBytes, slowPolicy } = this.#options;
    for (const client of [...this.#clients]) {
      const sink = client.sink;
      if (!client.holds && sink.queuedBytes + data.length > queueBytes) {
        client.bytesMissed += data.length;
        client.missedUntold += data.length;
        this.#missed += data.length;
        if (slowPolicy === 'disconnect' && !client.released) {
          sink.close(`output queue full (${queueBytes} bytes): disconnected, as this device's policy says`);
          this.detach(client);
        }
        continue;
      }
      this.#tellMissed(client);
      sink.send(data);
      client.bytesSent += data.length;
    }
  }

  input(client: HubClient, data: Buffer): void {
    if (client.detached) return;
    if (client.role !== 'writer') {
      this.#inputDropped += data.length;
      return;
    }
    this.#options.onInput(data);
  }

  breakFrom(client: HubClient): void {
    if (!client.detached && client.role === 'writer') this.#options.onBreak();
  }

  resizeFrom(client: HubClient, size: TerminalSize): void {
    if (client.detached || !(size.cols > 0 && size.rows > 0)) return;
    const changed = client.size?.cols !== size.cols || client.size?.rows !== size.rows;
    client.size = { cols: size.cols, rows: size.rows };
    if (changed && client.role === 'writer') this.#options.onResize?.(client.size);
  }

  /** Input flow control for every client (the guest cannot take more right now). */
  setReading(reading: boolean): void {
    this.#reading = reading;
    for (const c of this.#clients) {
      if (reading) c.sink.resume();
      else c.sink.pause();
    }
  }

  /** End every session (device stop). */
  closeAll(reason: string): void {
    this.#stopStallWatch();
    for (const c of [...this.#clients]) {
      c.sink.close(reason);
      this.detach(c);
    }
  }

  #setRole(client: HubClient, role: ClientRole, notice: string): void {
    if (client.role === role) return;
    this.#options.beforeChange?.();
    client.role = role;
    client.sink.notice(notice);
    // The guest's terminal is the writer's: a new writer brings its size.
    if (role === 'writer' && client.size !== undefined) this.#options.onResize?.(client.size);
    this.#options.onChange?.('role', client.info());
    // A demoted writer no longer holds the guest.
    this.#maybeWritable();
  }
}
