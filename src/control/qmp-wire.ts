/**
 * The wire side of a QMP server: the greeting, sessions that parse, answer and flow-control
 * each client on its own (see qmp.ts for the rules), the command table and events to every
 * negotiated client. The commands are the caller's: a domain's (qmp.ts) or the daemon's.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { unlinkQuietly } from '../core/files.ts';
import { listenUnixOwnerOnly } from '../core/unix-listen.ts';
import { ChardevError } from '../errors.ts';
import { dataPlaneStarted } from '../platform/data-plane.ts';
import { VERSION } from '../version.ts';
import { Args, QmpError, generic, isObject } from './qmp-args.ts';
import { JsonLimitError, JsonSplitter, MAX_NESTING, JsonSyntaxError, parseQmpJson, qemuJson, type Json, type JsonObject } from './qmp-json.ts';

/** The QEMU release whose QMP this server speaks. */
export const QMP_QEMU_VERSION = { micro: 0, minor: 2, major: 9 } as const;
/** chardev's own version (package.json's), in the greeting's `package`. */
export const CHARDEV_VERSION = VERSION;
/** Output queued for a client: beyond it requests wait, and an event drops the client. */
export const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;
/** How long a client that is being dropped gets to read its last error. */
const DROP_GRACE_MS = 1000;

function timestamp(): JsonObject {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
}

/** One QMP command: its arguments in, its `return` value out; a thrown QmpError is its `error`. */
export type QmpHandler = (args: Args) => Json | Promise<Json>;
type Handler = QmpHandler;

class Session {
  negotiated = false;
  readonly #sock: net.Socket;
  readonly #server: QmpWire;
  readonly #splitter = new JsonSplitter();
  readonly #queue: Buffer[] = [];
  #busy = false;
  #dropping = false;

  constructor(server: QmpWire, sock: net.Socket) {
    this.#server = server;
    this.#sock = sock;
    sock.on('data', (chunk: Buffer) => this.#onData(chunk));
    this.send({ QMP: { version: server.versionJson(), capabilities: [] } });
  }

  send(msg: JsonObject): void {
    const sock = this.#sock;
    if (sock.destroyed || !sock.writable) return;
    sock.write(`${qemuJson(msg)}\r\n`);
  }

  /** An event: a client that left this much unread is not reading at all. */
  event(msg: JsonObject): void {
    if (!this.negotiated) return;
    if (this.#sock.writableLength > MAX_OUTPUT_BYTES) {
      this.#sock.destroy();
      return;
    }
    this.send(msg);
  }

  /** Resolves once the client has read what it asked for down to the bound (or is gone). */
  #drained(): Promise<void> {
    const sock = this.#sock;
    if (sock.writableLength <= MAX_OUTPUT_BYTES || sock.destroyed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        sock.off('drain', done);
        sock.off('close', done);
        resolve();
      };
      sock.on('drain', done);
      sock.on('close', done);
    });
  }

  /** Send `error` and end the connection: its input can no longer be trusted to resynchronise. */
  #drop(error: QmpError): void {
    if (this.#dropping) return;
    this.#dropping = true;
    this.#queue.length = 0;
    // Keep reading (and discarding): closing with unread input would reset the connection,
    // and the peer would lose the error before it could read it.
    this.#sock.removeAllListeners('data');
    this.#sock.on('data', () => {});
    this.#sock.resume();
    this.send({ error: { class: error.errorClass, desc: error.message } });
    this.#sock.end();
    setTimeout(() => this.#sock.destroy(), DROP_GRACE_MS).unref();
  }

  #onData(chunk: Buffer): void {
    if (this.#dropping) return;
    let values: Buffer[];
    try {
      values = this.#splitter.feed(chunk);
    } catch (e) {
      const limit = e instanceof JsonLimitError && e.limit === 'nesting' ? `${MAX_NESTING} levels` : `${this.#splitter.maxBytes} bytes`;
      const msg = `${e instanceof Error ? e.message : String(e)} (a value may have at most ${limit}); closing the connection`;
      this.#drop(generic(msg));
      return;
    }
    this.#queue.push(...values);
    // #pump answers every failure itself; anything else is a bug that must not take the process down.
    this.#pump().catch(() => this.#sock.destroy());
  }

  async #pump(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      while (this.#queue.length > 0 && !this.#dropping && !this.#sock.destroyed) {
        const text = this.#queue.shift() as Buffer;
        const r = this.#handle(text);
        // Answers stay in request order: read nothing more until this one is out.
        this.#sock.pause();
        this.send(r instanceof Promise ? await r : r);
        await this.#drained();
        if (!this.#dropping) this.#sock.resume();
      }
    } finally {
      this.#busy = false;
    }
  }

  #handle(text: Buffer): JsonObject | Promise<JsonObject> {
    let req: Json;
    try {
      req = parseQmpJson(text);
    } catch (e) {
      const msg = e instanceof JsonSyntaxError ? e.message : String(e);
      return errorResponse(generic(`JSON parse error, ${msg}`), undefined);
    }
    if (!isObject(req)) return errorResponse(generic('QMP input must be a JSON object'), undefined);
    const id = Object.hasOwn(req, 'id') ? req['id'] : undefined;
    let command: string | undefined;
    for (const key of Object.keys(req)) {
      const v = req[key] as Json;
      if (key === 'execute') {
        if (typeof v !== 'string') return errorResponse(generic("QMP input member 'execute' must be a string"), id);
        command = v;
      } else if (key === 'arguments') {
        if (!isObject(v)) return errorResponse(generic("QMP input member 'arguments' must be an object"), id);
      } else if (key !== 'id') {
        return errorResponse(generic(`QMP input member '${key}' is unexpected`), id);
      }
    }
    if (command === undefined) return errorResponse(generic("QMP input lacks member 'execute'"), id);
    const argObj = req['arguments'];
    const args = new Args(isObject(argObj) ? argObj : (Object.create(null) as JsonObject));
    if (!this.negotiated && command !== 'qmp_capabilities') {
      return errorResponse(new QmpError('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'"), id);
    }
    let handler: Handler | undefined;
    if (command === 'qmp_capabilities') handler = (a) => this.#capabilities(a);
    else handler = this.#server.commands.get(command);
    if (handler === undefined) return errorResponse(new QmpError('CommandNotFound', `The command ${command} has not been found`), id);
    try {
      const ret = handler(args);
      if (ret instanceof Promise) {
        return ret.then(
          (v) => returnResponse(v, id),
          (e: unknown) => errorResponse(asQmpError(e), id),
        );
      }
      return returnResponse(ret, id);
    } catch (e) {
      return errorResponse(asQmpError(e), id);
    }
  }

  #capabilities(args: Args): Json {
    if (this.negotiated) throw new QmpError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
    const enable = args.optArray('enable');
    args.done();
    for (const [i, cap] of (enable ?? []).entries()) {
      if (typeof cap !== 'string') throw generic(`Invalid parameter type for 'enable[${i}]', expected: string`);
      if (cap !== 'oob') throw generic(`Parameter 'enable[${i}]' does not accept value '${cap}'`);
      throw generic(`Capability ${cap} isn't available`);
    }
    this.negotiated = true;
    return {};
  }
}

function asQmpError(e: unknown): QmpError {
  if (e instanceof QmpError) return e;
  return generic(e instanceof Error ? e.message : String(e));
}

/**
 * What a leak would show: memory, open fds (Linux: /proc/self/fd; -1 elsewhere), whether the
 * data-plane thread runs, and the handles and timers keeping the event loop busy, by type
 * (Node's getActiveResourcesInfo).
 */
export function processResources(): JsonObject {
  const mem = process.memoryUsage();
  let fds = -1;
  try {
    fds = fs.readdirSync('/proc/self/fd').length;
  } catch {
    // not Linux: unknown
  }
  const resources: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) resources[kind] = (resources[kind] ?? 0) + 1;
  // The data-plane thread starts with the first streaming burst and keeps its fds (its wake
  // pipe, its own event loop's) for good: a leak check compares samples with it in one state.
  return {
    pid: process.pid,
    rss: mem.rss,
    'heap-used': mem.heapUsed,
    'heap-total': mem.heapTotal,
    external: mem.external,
    fds,
    'data-plane': dataPlaneStarted(),
    resources,
  };
}

function returnResponse(ret: Json, id: Json | undefined): JsonObject {
  return id === undefined ? { return: ret } : { return: ret, id };
}

function errorResponse(err: QmpError, id: Json | undefined): JsonObject {
  const error = { class: err.errorClass, desc: err.message };
  return id === undefined ? { error } : { error, id };
}

/**
 * The wire side of a QMP server: the socket, the sessions, the command table, events to
 * every negotiated client. What the commands are is the subclass's (or the caller's).
 */
export class QmpWire {
  readonly commands = new Map<string, Handler>();
  #path: string;
  /** A listening socket we were given (systemd socket activation): not ours to create or remove. */
  readonly #inheritedFd: number | undefined;
  readonly #version: string;
  readonly #server: net.Server;
  readonly #sessions = new Map<net.Socket, Session>();
  #ino = 0;
  #closing: Promise<void> | undefined;

  constructor(where: string | { readonly fd: number; readonly path: string }, version: string | undefined) {
    this.#path = typeof where === 'string' ? where : where.path;
    this.#inheritedFd = typeof where === 'string' ? undefined : where.fd;
    this.#version = version ?? CHARDEV_VERSION;
    this.#server = net.createServer((sock) => this.#accept(sock));
    this.#server.on('error', () => {});
  }

  get path(): string {
    return this.#path;
  }

  async listen(): Promise<void> {
    const fd = this.#inheritedFd;
    if (fd === undefined) {
      await listenUnixOwnerOnly('QMP socket', this.#server, this.#path);
      this.#ino = fs.lstatSync(this.#path).ino;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ fd }, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    // Node cannot say where an inherited UNIX socket is bound: it is where the caller says.
    const address = this.#server.address();
    if (address !== null && typeof address !== 'string') throw new ChardevError('ERR_USAGE', `QMP socket: the inherited fd ${fd} is not a UNIX socket`);
  }

  versionJson(): JsonObject {
    return { qemu: { ...QMP_QEMU_VERSION }, package: `chardev ${this.#version}` };
  }

  #accept(sock: net.Socket): void {
    if (this.#closing !== undefined) {
      sock.destroy();
      return;
    }
    sock.on('error', () => {});
    sock.on('close', () => this.#sessions.delete(sock));
    this.#sessions.set(sock, new Session(this, sock));
  }

  broadcast(event: string, data: JsonObject): void {
    const msg: JsonObject = { event, data, timestamp: timestamp() };
    for (const s of this.#sessions.values()) s.event(msg);
  }

  commandNames(): string[] {
    return [...this.commands.keys()];
  }

  /** Run one command as a negotiated client would, without a connection. */
  async call(command: string, args: JsonObject): Promise<Json> {
    const handler = this.commands.get(command);
    if (handler === undefined) throw new QmpError('CommandNotFound', `The command ${command} has not been found`);
    return handler(new Args(args));
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const sock of this.#sessions.keys()) sock.destroy();
      await new Promise<void>((resolve) => this.#server.close(() => resolve()));
      if (this.#inheritedFd !== undefined) return;
      // Only our own socket file: a later server may have replaced a stale one.
      try {
        if (fs.lstatSync(this.path).ino === this.#ino) unlinkQuietly(this.path);
      } catch {
        // already gone
      }
    })();
    return this.#closing;
  }
}

export interface QmpServer {
  readonly path: string;
  /** Run one command as a negotiated client would (QmpError on failure). */
  call(command: string, args: JsonObject): Promise<Json>;
  /** The commands it answers (besides qmp_capabilities). */
  commandNames(): string[];
  /** Disconnect every client, stop listening, remove the socket file. Idempotent. */
  close(): Promise<void>;
}

/** A QMP server with the caller's commands (besides qmp_capabilities): the daemon's control socket. */
export interface QmpService extends QmpServer {
  readonly commands: Map<string, QmpHandler>;
  broadcast(event: string, data: JsonObject): void;
  versionJson(): JsonObject;
}

/**
 * Serve QMP on a UNIX socket at `where` (0600), or on a listening socket we were given (`{fd}`,
 * systemd's socket activation), with the commands `define` puts in the table.
 */
export async function startQmpService(
  where: string | { readonly fd: number; readonly path: string },
  define: (service: QmpService) => void,
  version?: string,
): Promise<QmpService> {
  const wire = new QmpWire(where, version);
  define(wire);
  try {
    await wire.listen();
  } catch (e) {
    await wire.close().catch(() => {});
    if (e instanceof ChardevError) throw e;
    throw new ChardevError('ERR_BACKEND_OPEN', `QMP socket: ${(e as Error).message}`, { cause: e });
  }
  return wire;
}
