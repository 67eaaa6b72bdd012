/**
 * The people attached to one device: peers of a server transport, a pty's reader,
 * `chardev console` sessions, browser tabs. Every client gets all guest output (after the
 * history, if the device keeps one); only the writer's input and BREAKs reach the guest.
 * The first client that may write is the writer; a later one takes over only with force,
 * and when the writer leaves the longest-attached client that may write is promoted.
 * Role changes are told to the clients they concern.
 *
 * Every client has a bounded queue. The hub never waits for a client, so a stalled one
 * cannot slow the guest or the others: output that does not fit is counted as missed and,
 * by the device's policy, either skipped (the client is told how much, once it has room
 * again) or ends that client's session.
 */
import type { HistoryRing } from './history.ts';

export type ClientRole = 'writer' | 'viewer';
export type ClientKind = 'tcp' | 'unix' | 'pty' | 'console' | 'browser';
export type SlowClientPolicy = 'drop' | 'disconnect';

/** What a transport offers the hub for one client. */
export interface ClientSink {
  /** Hand bytes to the transport (never blocks; the hub checks `queuedBytes` first). */
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
}

export interface HubOptions {
  /** Most clients at once; attach beyond it is refused. */
  readonly maxClients: number;
  /** Per-client queue bound in bytes. */
  readonly queueBytes: number;
  readonly slowPolicy: SlowClientPolicy;
  readonly history?: HistoryRing | undefined;
  /** Writer input → guest. */
  readonly onInput: (data: Buffer) => void;
  readonly onBreak: () => void;
  /** Client count went 0 → 1 / 1 → 0 (the device's OPENED / CLOSED). */
  readonly onFirstAttach?: () => void;
  readonly onLastDetach?: () => void;
  /** A client attached, left or changed role (control-socket events). */
  readonly onChange?: (event: 'attached' | 'detached' | 'role', client: ClientInfo) => void;
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
    };
  }
}

export class HubFullError extends Error {}

export class Hub {
  readonly #options: HubOptions;
  readonly #clients: HubClient[] = [];
  #nextId = 1;
  #reading = true;
  #inputDropped = 0;
  #missed = 0;

  constructor(options: HubOptions) {
    this.#options = options;
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
  get writer(): HubClient | undefined {
    return this.#clients.find((c) => c.role === 'writer');
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
    const current = this.writer;
    if (current !== undefined) this.#setRole(current, 'viewer', `${client.label} took over; you are a read-only viewer now`);
    this.#setRole(client, 'writer', 'you are the writer now');
  }

  detach(client: HubClient): void {
    if (client.detached) return;
    client.detached = true;
    const i = this.#clients.indexOf(client);
    if (i >= 0) this.#clients.splice(i, 1);
    this.#options.onChange?.('detached', client.info());
    if (client.role === 'writer') {
      const next = this.#clients.find((c) => !c.readonly);
      if (next !== undefined) this.#setRole(next, 'writer', `${client.label} left; you are the writer now`);
    }
    if (this.#clients.length === 0) this.#options.onLastDetach?.();
  }

  /** Guest output to every client, each within its own bound. */
  broadcast(data: Buffer): void {
    if (data.length === 0) return;
    const { queueBytes, slowPolicy } = this.#options;
    for (const client of [...this.#clients]) {
      const sink = client.sink;
      if (sink.queuedBytes + data.length > queueBytes) {
        client.bytesMissed += data.length;
        client.missedUntold += data.length;
        this.#missed += data.length;
        if (slowPolicy === 'disconnect') {
          sink.close(`output queue full (${queueBytes} bytes): disconnected, as this device's policy says`);
          this.detach(client);
        }
        continue;
      }
      if (client.missedUntold > 0) {
        sink.notice(`${client.missedUntold} bytes of output were dropped while this client was not reading`);
        client.missedUntold = 0;
      }
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
    for (const c of [...this.#clients]) {
      c.sink.close(reason);
      this.detach(c);
    }
  }

  #setRole(client: HubClient, role: ClientRole, notice: string): void {
    if (client.role === role) return;
    client.role = role;
    client.sink.notice(notice);
    this.#options.onChange?.('role', client.info());
  }
}
