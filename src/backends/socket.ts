import * as net from 'node:net';
import type { TcpSourceDef, UnixSourceDef } from '../config/types.ts';
import type { Backend, BackendContext } from '../core/backend.ts';
import { describeErrno, unlinkQuietly } from '../core/files.ts';
import { HubFullError, type ClientSink, type HubClient, type InputPath } from '../core/hub.ts';
import { listenUnixOwnerOnly } from '../core/unix-listen.ts';
import { bracketHost } from '../protocols/address.ts';
import { ChardevError } from '../errors.ts';
import { TelnetDecoder, TELNET_SERVER_GREETING } from '../protocols/telnet.ts';
import { acceptTls, connectTls, loadTlsCredentials, type TlsCredentials } from '../protocols/tls.ts';
import { tcpUsesTls } from '../config/postparse.ts';

/** Why a handshake ended when the peer simply went away: not worth a message. */
const CLOSED_IN_HANDSHAKE = 'connection closed during the handshake';

/** A peer that has not finished its TLS/telnet handshake by then is dropped, so it cannot hold the device. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Clients waiting for a busy server beyond this many are closed (QEMU's kernel backlog is 1). */
export const MAX_WAITING_CLIENTS = 16;

export type SocketAddress = { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

export interface SocketSpec {
  readonly address: SocketAddress;
  readonly server: boolean;
  /** Telnet: the filename prefix, and for a server the greeting and IAC stripping. */
  readonly telnet: boolean;
  readonly tls: TlsCredentials | undefined;
  /** 0: no reconnect (client must connect at start; a disconnect is final). */
  readonly reconnectMs: number;
  /** Peers served at once: 1 like QEMU, more with `<cd:clients max>` (servers only). */
  readonly maxPeers: number;
}

function parsePort(ctx: BackendContext, service: string | undefined): number {
  const port = Number(service);
  if (service === undefined || !/^\d+$/.test(service) || port > 65535) {
    // libvirt allows service names; QEMU resolves them. We take numbers only and say so.
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: service '${service ?? ''}' is not a port number`);
  }
  return port;
}

/** The device definition → what to open. TLS credentials are loaded here, so a bad directory fails the start. */
export function socketSpec(ctx: BackendContext, source: TcpSourceDef | UnixSourceDef): SocketSpec {
  const server = source.mode === 'bind';
  const reconnect = source.reconnect;
  const reconnectMs = reconnect?.enabled === 'yes' && !server ? (reconnect.timeoutSec ?? 0) * 1000 : 0;
  const base = { server, reconnectMs, maxPeers: server ? (ctx.dev.ext.clients?.max ?? 1) : 1 };
  if (source.type === 'unix') {
    if (source.path === undefined) throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: unix socket has no path`);
    return { ...base, address: { kind: 'unix', path: source.path }, telnet: false, tls: undefined };
  }
  const protocol = source.protocol;
  const useTls = protocol === 'tls' || protocol === 'telnets' || tcpUsesTls(source, ctx.driver);
  const telnet = protocol === 'telnet' || protocol === 'telnets';
  let creds: TlsCredentials | undefined;
  if (useTls) {
    const ext = ctx.dev.ext.tls;
    const dir = ext?.dir ?? ctx.driver.tlsCertDir;
    // QEMU's client endpoint always verifies (the loader refuses verify='no' on a client);
    // a server verifies as qemu.conf (or the device) says.
    const verify = server ? (ext?.verifyPeer ?? ctx.driver.tlsVerify) : true;
    creds = loadTlsCredentials(ctx.id, dir, server ? 'server' : 'client', verify);
  }
  return {
    ...base,
    address: { kind: 'tcp', host: source.host ?? (server ? '127.0.0.1' : 'localhost'), port: parsePort(ctx, source.service) },
    telnet,
    tls: creds,
  };
}

/** A server-side TLS handshake that ended because the client went away, with no TLS reason to report. */
function isHangUp(e: unknown): boolean {
  const cause = e instanceof ChardevError ? e.cause : undefined;
  const code = cause instanceof Error && 'code' in cause ? cause.code : undefined;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

/**
 * A raw socket's fd, while guest output spliced to it now would follow everything Node was
 * given before: open for writing, connected, nothing in Node's writable queue. (libuv
 * writes what it can at once and queues the rest; once that queue is empty every byte Node
 * took is in the kernel's socket buffer, ahead of anything spliced after.)
 */
/** How a raw stream carries a notice inline (the kernel path's fan-out writes it the same way). */
const NOTICE_FRAME = ['\r\n[chardev: ', ']\r\n'] as const;

function kernelFd(stream: net.Socket): number | undefined {
  if (stream.destroyed || !stream.writable || stream.connecting || stream.writableLength > 0) return undefined;
  const fd = (stream as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return fd !== undefined && fd >= 0 ? fd : undefined;
}

/** The libuv handle under a net.Socket, as Node's own stream code drives it (lib/net.js). */
interface StreamHandle {
  readonly fd?: number;
  reading?: boolean;
  readStart(): number;
  readStop(): number;
}

/**
 * A raw socket's input as a splice(2) source (`InputPath`). A claim stops libuv reading the
 * socket, so no read of Node's can land between two splices; what Node already read (a
 * paused stream reads ahead up to its high-water mark) is emitted first, through the
 * stream's 'data' listeners, so it reaches the guest before anything spliced. A release
 * puts the handle back as Node left it: reading if it was (Node's stream then still waits
 * for that read to push, and would never start another), and flowing if the hub reads this
 * client. `pause`/`resume` from the hub go through `setFlowing`, which defers to the claim.
 */
function inputPath(stream: net.Socket): InputPath & { setFlowing(flowing: boolean): void } {
  let claimed = false;
  let wasReading = false;
  let flowing = !stream.isPaused();
  const handleOf = (): StreamHandle | undefined => (stream as unknown as { _handle?: StreamHandle | null })._handle ?? undefined;
  return {
    claim: () => {
      const handle = handleOf();
      const fd = handle?.fd;
      if (claimed || handle === undefined || fd === undefined || fd < 0 || stream.destroyed || !stream.readable || stream.connecting) return undefined;
      stream.pause();
      // Read ahead while paused: to the listeners now (read() may start libuv reading again;
      // it is stopped below, in the same turn, before libuv could read).
      if (stream.readableLength > 0) stream.read();
      if (stream.destroyed || handleOf() !== handle) return undefined;
      wasReading = handle.reading === true;
      if (wasReading) {
        handle.reading = false;
        handle.readStop();
      }
      claimed = true;
      return fd;
    },
    release: () => {
      if (!claimed) return;
      claimed = false;
      const handle = handleOf();
      if (handle !== undefined && !stream.destroyed && wasReading) {
        handle.reading = true;
        handle.readStart();
      }
      if (flowing && !stream.destroyed) stream.resume();
    },
    setFlowing: (on) => {
      flowing = on;
      if (claimed) return;
      if (on) stream.resume();
      else stream.pause();
    },
  };
}

/**
 * A peer's life. `handshake`: TLS and/or the telnet greeting under way. `raw-closed`: under
 * TLS, the raw socket closed mid-handshake, and the TLS layer gets the rest of this turn of
 * the loop to say why (a refused certificate destroys the socket first and reports after).
 * `established`: one of the device's clients. `gone`: dropped or left, nothing more happens.
 */
type PeerState = 'handshake' | 'raw-closed' | 'established' | 'gone';

const PEER_MOVES: Readonly<Record<PeerState, readonly PeerState[]>> = {
  handshake: ['raw-closed', 'established', 'gone'],
  'raw-closed': ['gone'],
  established: ['gone'],
  gone: [],
};

/**
 * The device's own life. A server is `listening` from its start to its stop. A client is
 * `dialing` (a connect in progress, which stop() must be able to abort), `connected` (its
 * peer in handshake or established), `waiting` (for the reconnect interval), or `down` (it
 * lost its peer and has no reconnect: QEMU's stays down). `stopped` absorbs everything:
 * callbacks of sockets and timers that were in flight when stop() ran change nothing.
 */
type LinkState =
  | { readonly kind: 'starting' }
  | { readonly kind: 'listening' }
  | { readonly kind: 'dialing'; readonly socket: net.Socket }
  | { readonly kind: 'connected' }
  | { readonly kind: 'waiting'; readonly timer: NodeJS.Timeout }
  | { readonly kind: 'down' }
  | { readonly kind: 'stopped' };

type LinkKind = LinkState['kind'];

const LINK_MOVES: Readonly<Record<LinkKind, readonly LinkKind[]>> = {
  starting: ['listening', 'dialing', 'stopped'],
  listening: ['stopped'],
  dialing: ['connected', 'waiting', 'down', 'stopped'],
  connected: ['waiting', 'down', 'stopped'],
  waiting: ['dialing', 'stopped'],
  down: ['stopped'],
  stopped: [],
};

/** A state change the code above never makes: a bug here, reported with both ends. */
function badMove(what: string, from: string, to: string): never {
  throw new Error(`socket backend: ${what} cannot go from ${from} to ${to}`);
}

/** One accepted or connected peer, from the raw socket to the opened device. */
class Peer {
  #state: PeerState = 'handshake';
  /** Under TLS the stream becomes the TLS socket once its handshake is done. */
  stream: net.Socket;
  /** The peer as one of the device's clients, once established. */
  client?: HubClient;
  /** Our handshake-time close listener on `raw`, removed once established. */
  onRawClose?: () => void;

  constructor(
    readonly raw: net.Socket,
    /** `tcp:L:LP,server=on <-> P:PP` as QEMU prints it, fixed at connect time. */
    readonly label: string,
  ) {
    this.stream = raw;
  }

  get state(): PeerState {
    return this.#state;
  }

  moveTo(next: PeerState): void {
    if (!PEER_MOVES[this.#state].includes(next)) badMove('a peer', this.#state, next);
    this.#state = next;
  }
}

class SocketBackend implements Backend {
  readonly openAtStart = false;
  readonly #ctx: BackendContext;
  readonly #spec: SocketSpec;
  #server: net.Server | undefined;
  #listenAddress: SocketAddress | undefined;
  /** Peers in their handshake or established, in arrival order. */
  readonly #peers = new Set<Peer>();
  readonly #waiting: net.Socket[] = [];
  #reading = false;
  #link: LinkState = { kind: 'starting' };
  #dropped = 0;
  /** A connect failed since the last peer was established: a failure is reported once per streak. */
  #failureReported = false;
  #createdSocketFile = false;

  constructor(ctx: BackendContext, spec: SocketSpec) {
    this.#ctx = ctx;
    this.#spec = spec;
  }

  /**
   * QEMU listens with a backlog of 1. With many peers at once, clients arriving together
   * would see their SYNs dropped and retried a second later, so the backlog covers them.
   */
  get #stopped(): boolean {
    return this.#link.kind === 'stopped';
  }

  /** Move the device's link; from `stopped` nothing moves (late callbacks), anything else unplanned is a bug. */
  #moveLink(next: LinkState): boolean {
    const from = this.#link.kind;
    if (from === 'stopped') return false;
    if (!LINK_MOVES[from].includes(next.kind)) badMove('the device', from, next.kind);
    this.#link = next;
    return true;
  }

  get #backlog(): number {
    return this.#spec.maxPeers > 1 ? this.#spec.maxPeers + MAX_WAITING_CLIENTS : 1;
  }

  get #proto(): string {
    return this.#spec.telnet ? 'telnet' : 'tcp';
  }

  /** query-chardev's filename. */
  get filename(): string {
    const peer = this.#firstEstablished();
    if (peer !== undefined) return peer.label;
    const a = this.#listenAddress ?? this.#spec.address;
    const server = this.#spec.server ? ',server=on' : '';
    return a.kind === 'unix' ? `disconnected:unix:${a.path}${server}` : `disconnected:${this.#proto}:${a.host}:${a.port}${server}`;
  }

  get where(): string {
    const a = this.#listenAddress ?? this.#spec.address;
    const scheme = a.kind === 'unix' ? 'unix' : this.#spec.tls !== undefined ? (this.#spec.telnet ? 'telnets' : 'tls') : this.#proto;
    const at = a.kind === 'unix' ? `unix:${a.path}` : `${scheme}:${bracketHost(a.host)}:${a.port}`;
    if (this.#spec.server) return `${this.#ctx.id}: listening on ${at}`;
    const every = this.#spec.reconnectMs > 0 ? ` (reconnect every ${this.#spec.reconnectMs / 1000} s)` : '';
    return `${this.#ctx.id}: client of ${at}${every}`;
  }

  get boundService(): string | undefined {
    const a = this.#listenAddress;
    return a?.kind === 'tcp' ? String(a.port) : undefined;
  }

  get droppedBytes(): number {
    return this.#dropped;
  }

  #firstEstablished(): Peer | undefined {
    for (const p of this.#peers) if (p.state === 'established') return p;
    return undefined;
  }

  /** Whether a peer is connected and past its handshakes (QOM's `connected`). */
  get connected(): boolean {
    return this.#firstEstablished() !== undefined;
  }

  /**
   * The chardev hands guest output to every hub client, our peers included, each within
   * its own bound; here only what no peer gets is counted. QEMU answers EIO and the UART
   * drops the byte; we report it taken (the log keeps it) and count it.
   */
  write(data: Uint8Array): number {
    if (this.#stopped) return 0;
    if (!this.connected) this.#dropped += data.length;
    return data.length;
  }

  drained(): Promise<void> {
    const pending = [...this.#peers].filter((p) => p.state === 'established' && !p.stream.destroyed && p.stream.writableLength > 0);
    return Promise.all(
      pending.map(
        (p) =>
          new Promise<void>((resolve) => {
            p.stream.once('drain', () => resolve());
            p.stream.once('close', () => resolve());
          }),
      ),
    ).then(() => undefined);
  }

  /** Peers are hub clients: the hub pauses and resumes them; this only sets how new ones start. */
  setReading(reading: boolean): void {
    this.#reading = reading;
  }

  // --- server ---------------------------------------------------------------------------

  async listen(): Promise<void> {
    const { address } = this.#spec;
    const server = net.createServer({ pauseOnConnect: true });
    this.#server = server;
    this.#moveLink({ kind: 'listening' });
    server.on('connection', (sock) => this.#accepted(sock));
    if (address.kind === 'unix') {
      await listenUnixOwnerOnly(this.#ctx.id, server, address.path, this.#backlog);
      this.#createdSocketFile = true;
      this.#listenAddress = address;
    } else {
      await new Promise<void>((resolve, reject) => {
        const onError = (e: NodeJS.ErrnoException): void =>
          reject(
            new ChardevError('ERR_BACKEND_OPEN', `${this.#ctx.id}: Failed to bind socket to '${address.host}:${address.port}': ${describeErrno(e)}`, {
              cause: e,
            }),
          );
        server.once('error', onError);
        server.listen({ host: address.host, port: address.port, backlog: this.#backlog }, () => {
          server.off('error', onError);
          resolve();
        });
      });
      const bound = server.address() as net.AddressInfo;
      this.#listenAddress = { kind: 'tcp', host: bound.address, port: bound.port };
    }
    server.on('error', (e: NodeJS.ErrnoException) =>
      this.#ctx.events.error(new ChardevError('ERR_BACKEND_OPEN', `${this.#ctx.id}: ${describeErrno(e)}`, { cause: e })),
    );
  }

  #accepted(sock: net.Socket): void {
    sock.on('error', () => {});
    if (this.#stopped) {
      sock.destroy();
      return;
    }
    if (this.#peers.size >= this.#spec.maxPeers) {
      if (this.#waiting.length >= MAX_WAITING_CLIENTS) sock.destroy();
      else this.#waiting.push(sock);
      return;
    }
    this.#handshake(sock);
  }

  #serveNext(): void {
    while (!this.#stopped && this.#peers.size < this.#spec.maxPeers) {
      const next = this.#waiting.shift();
      if (next === undefined) return;
      if (!next.destroyed) this.#handshake(next);
    }
  }

  // --- both -----------------------------------------------------------------------------

  #label(stream: net.Socket): string {
    const a = this.#spec.address;
    const server = this.#spec.server ? ',server=on' : '';
    if (a.kind === 'unix') return `unix:${a.path}${server}`;
    const local = `${bracketHost(stream.localAddress ?? '')}:${stream.localPort ?? ''}`;
    const remote = `${bracketHost(stream.remoteAddress ?? '')}:${stream.remotePort ?? ''}`;
    return `${this.#proto}:${local}${server} <-> ${remote}`;
  }

  #peerName(raw: net.Socket): string {
    return this.#spec.address.kind === 'unix' ? 'a unix client' : `${bracketHost(raw.remoteAddress ?? '?')}:${raw.remotePort ?? '?'}`;
  }

  /**
   * TLS, then the telnet greeting, then OPENED. Resolves undefined when the peer is
   * established, else the reason it was dropped. A server reports that reason itself
   * (the device keeps serving others); a client's caller decides.
   */
  #handshake(raw: net.Socket): Promise<string | undefined> {
    const peer = new Peer(raw, this.#label(raw));
    this.#peers.add(peer);
    const { events, id } = this.#ctx;
    return new Promise<string | undefined>((resolve) => {
      const fail = (reason: string): void => {
        if (peer.state === 'established' || peer.state === 'gone') return;
        peer.moveTo('gone');
        clearTimeout(timer);
        if (this.#spec.server && !this.#stopped && reason !== CLOSED_IN_HANDSHAKE) events.error(new ChardevError('ERR_TLS_HANDSHAKE', `${id}: ${reason}`));
        peer.stream.destroy();
        raw.destroy();
        this.#peers.delete(peer);
        resolve(reason);
        this.#afterPeer();
      };
      const timer = setTimeout(() => fail(`handshake with ${this.#peerName(raw)} timed out after ${HANDSHAKE_TIMEOUT_MS / 1000} s`), HANDSHAKE_TIMEOUT_MS);
      timer.unref();
      const established = (): void => {
        // Only from a live handshake: under TLS a raw socket closed meanwhile is on its way out.
        if (peer.state !== 'handshake') return;
        const refused = this.#established(peer);
        if (refused !== undefined) {
          fail(refused);
          return;
        }
        clearTimeout(timer);
        resolve(undefined);
      };
      // A peer that leaves mid-handshake is not an error worth reporting; QEMU only traces it.
      // Under TLS the raw socket reports 'close' before the TLS layer says why it ended (a
      // refused client certificate destroys the socket, and only then is the reason
      // reported), so the TLS outcome is given the rest of this turn of the loop to win.
      peer.onRawClose = () => {
        if (this.#spec.tls === undefined || peer.state !== 'handshake') {
          fail(CLOSED_IN_HANDSHAKE);
          return;
        }
        peer.moveTo('raw-closed');
        setImmediate(() => fail(CLOSED_IN_HANDSHAKE));
      };
      raw.once('close', peer.onRawClose);

      const telnetThenOpen = (): void => {
        if (!(this.#spec.server && this.#spec.telnet)) {
          established();
          return;
        }
        // QEMU declares the connection open once all 12 bytes are written.
        peer.stream.write(TELNET_SERVER_GREETING, (err) => {
          if (err) fail(CLOSED_IN_HANDSHAKE);
          else established();
        });
      };

      const creds = this.#spec.tls;
      if (creds === undefined) {
        telnetThenOpen();
        return;
      }
      const a = this.#spec.address;
      const opts = { handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS };
      const handshake = this.#spec.server ? acceptTls(creds, raw, opts) : connectTls(creds, raw, a.kind === 'tcp' ? a.host : 'localhost', opts);
      handshake.then(
        (t) => {
          if (peer.state !== 'handshake') {
            fail(CLOSED_IN_HANDSHAKE);
            return;
          }
          peer.stream = t;
          telnetThenOpen();
        },
        (e: unknown) => fail(this.#spec.server && isHangUp(e) ? CLOSED_IN_HANDSHAKE : e instanceof ChardevError ? e.message.replace(`${id}: `, '') : String(e)),
      );
    });
  }

  /** The peer joins the device's clients (history first). Returns why not, if it cannot. */
  #established(peer: Peer): string | undefined {
    const stream = peer.stream;
    const platform = this.#ctx.platform;
    const raw = peer.raw as unknown as { _handle?: { fd?: number } | null };
    const telnet = this.#spec.server && this.#spec.telnet;
    const input = stream === peer.raw && !telnet ? inputPath(stream) : undefined;
    const sink: ClientSink = {
      send: (data) => void stream.write(data),
      get queuedBytes() {
        return stream.writableLength;
      },
      get unreadBytes() {
        // The kernel's share (under TLS, of the records): a slow reader's progress shows
        // here long before a large queued write completes.
        const fd = raw._handle?.fd;
        let kernel = 0;
        if (fd !== undefined && fd >= 0) {
          try {
            kernel = platform.socketUnreadBytes(fd);
          } catch {
            // No native module, or the socket just closed: chardev's queue alone.
          }
        }
        return stream.writableLength + kernel;
      },
      notice: (text) => void stream.write(`${NOTICE_FRAME[0]}${text}${NOTICE_FRAME[1]}`),
      close: (reason) => {
        // A peer that does not read may never take the goodbye; it goes anyway.
        setTimeout(() => stream.destroy(), 1000).unref();
        stream.end(`\r\n[chardev: ${reason}]\r\n`);
      },
      pause: () => (input !== undefined ? input.setFlowing(false) : stream.pause()),
      resume: () => (input !== undefined ? input.setFlowing(true) : stream.resume()),
      // Raw sockets only: under TLS the bytes on the fd are records, not the guest's.
      ...(stream === peer.raw ? { kernelPath: { fd: () => kernelFd(stream), noticeFrame: NOTICE_FRAME } } : {}),
      // Input too, and only without telnet: its bytes are decoded (IAC, BREAK) on the way in.
      ...(input !== undefined ? { inputPath: input } : {}),
    };
    let client: HubClient;
    try {
      client = this.#ctx.hub.attach(sink, { kind: this.#spec.address.kind, label: this.#peerName(peer.raw) });
    } catch (e) {
      if (!(e instanceof HubFullError)) throw e;
      stream.end(`\r\n[chardev: ${e.message}]\r\n`);
      return `${this.#peerName(peer.raw)} refused: ${e.message}`;
    }
    peer.client = client;
    peer.moveTo('established');
    this.#failureReported = false;
    // Errors end in 'close', which is where the peer is let go.
    stream.on('error', () => {});
    // The guest may be waiting for this peer to take more.
    stream.on('drain', () => client.drained());
    if (peer.onRawClose !== undefined) peer.raw.off('close', peer.onRawClose);
    if (telnet) {
      const decoder = new TelnetDecoder({ data: (c) => client.input(c), break: () => client.break() });
      stream.on('data', (c: Buffer) => decoder.feed(c));
    } else {
      stream.on('data', (c: Buffer) => client.input(c));
    }
    // Accepted sockets start paused (pauseOnConnect), so flowing must be set explicitly.
    if (input !== undefined) input.setFlowing(this.#reading);
    else if (this.#reading) stream.resume();
    else stream.pause();
    // Data still buffered when the peer closed is delivered before CLOSED ('close' follows 'end').
    stream.once('close', () => {
      peer.moveTo('gone');
      this.#peers.delete(peer);
      client.detach();
      this.#afterPeer();
    });
    return undefined;
  }

  /** After a peer left (or failed its handshake): serve the next waiting client, or reconnect. */
  #afterPeer(): void {
    if (this.#stopped) return;
    if (this.#spec.server) this.#serveNext();
    // Without reconnect a client stays down after a disconnect, as QEMU's does.
    else if (this.#spec.reconnectMs > 0) this.#scheduleConnect();
    else if (this.#link.kind === 'connected') this.#moveLink({ kind: 'down' });
  }

  // --- client ---------------------------------------------------------------------------

  #dial(): net.Socket {
    const a = this.#spec.address;
    return a.kind === 'unix' ? net.connect({ path: a.path }) : net.connect({ host: a.host, port: a.port });
  }

  #connectError(e: NodeJS.ErrnoException): string {
    const a = this.#spec.address;
    const where = a.kind === 'unix' ? a.path : `${a.host}:${a.port}`;
    return `Failed to connect to '${where}': ${describeErrno(e)}`;
  }

  /** One attempt: resolves when established, rejects with the reason it was not. */
  connectOnce(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const raw = this.#dial();
      // Until it connects, stop() must be able to abort it (a connect can hang for minutes).
      this.#moveLink({ kind: 'dialing', socket: raw });
      // A failed dial leaves the link where it is: the caller moves it on (the next attempt
      // after the interval, or stop()).
      const dialing = (): boolean => this.#link.kind === 'dialing' && this.#link.socket === raw;
      raw.once('error', (e: NodeJS.ErrnoException) => {
        if (dialing()) reject(new ChardevError('ERR_CONNECT', this.#connectError(e), { cause: e }));
      });
      raw.once('close', () => {
        if (dialing() || this.#stopped) reject(new ChardevError('ERR_CONNECT', 'stopped'));
      });
      raw.once('connect', () => {
        raw.on('error', () => {});
        if (!this.#moveLink({ kind: 'connected' })) {
          raw.destroy();
          reject(new ChardevError('ERR_CONNECT', 'stopped'));
          return;
        }
        void this.#handshake(raw).then((why) => (why === undefined ? resolve() : reject(new ChardevError('ERR_CONNECT', why))));
      });
    });
  }

  #scheduleConnect(): void {
    if (this.#stopped || this.#link.kind === 'waiting') return;
    const timer = setTimeout(() => this.backgroundConnect(), this.#spec.reconnectMs);
    this.#moveLink({ kind: 'waiting', timer });
  }

  /** With reconnect: try now; on failure report once per streak and try again after the interval. */
  backgroundConnect(): void {
    if (this.#stopped || this.#peers.size > 0) return;
    this.connectOnce().catch((e: unknown) => {
      if (this.#stopped) return;
      if (!this.#failureReported && e instanceof ChardevError) {
        this.#ctx.events.error(new ChardevError('ERR_CONNECT', `Unable to connect character device ${this.#ctx.id}: ${e.message}`, { cause: e }));
      }
      this.#failureReported = true;
      this.#scheduleConnect();
    });
  }

  async stop(abort: boolean): Promise<void> {
    void abort;
    const link = this.#link;
    if (!this.#moveLink({ kind: 'stopped' })) return;
    if (link.kind === 'waiting') clearTimeout(link.timer);
    if (link.kind === 'dialing') link.socket.destroy();
    const closing: Array<Promise<void>> = [];
    for (const peer of [...this.#peers]) {
      closing.push(new Promise((r) => (peer.raw.destroyed ? r() : peer.raw.once('close', () => r()))));
      peer.stream.destroy();
      peer.raw.destroy();
    }
    this.#peers.clear();
    for (const s of this.#waiting.splice(0)) s.destroy();
    const server = this.#server;
    if (server !== undefined) closing.push(new Promise((r) => server.close(() => r())));
    await Promise.all(closing);
    const a = this.#spec.address;
    // QEMU removes its socket file when the chardev goes away.
    if (this.#createdSocketFile && a.kind === 'unix') unlinkQuietly(a.path);
  }
}

export async function createSocketBackend(ctx: BackendContext, source: TcpSourceDef | UnixSourceDef): Promise<Backend> {
  const spec = socketSpec(ctx, source);
  const backend = new SocketBackend(ctx, spec);
  try {
    if (spec.server) await backend.listen();
    else if (spec.reconnectMs > 0) backend.backgroundConnect();
    else
      await backend.connectOnce().catch((e: unknown) => {
        throw e instanceof ChardevError ? new ChardevError(e.code, `${ctx.id}: ${e.message}`, { cause: e }) : e;
      });
  } catch (e) {
    await backend.stop(true);
    throw e;
  }
  return backend;
}
