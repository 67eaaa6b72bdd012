/**
 * A QMP server for one running domain: QEMU's wire protocol on a UNIX
 * socket, so existing QMP clients (libvirt's, qmp-shell, python-qemu-qmp, socat) work.
 *
 * Wire: the greeting on connect; then JSON values, not necessarily one per line; before
 * `qmp_capabilities` every other command is refused as QEMU refuses it; every response
 * echoes the request's `id`; every message ends with CRLF, as QEMU's monitor writes them.
 * Events go to every client that finished negotiation.
 *
 * Commands (QEMU's, same arguments, results and error texts):
 *   qmp_capabilities, query-version, query-commands, query-chardev, query-chardev-backends,
 *   chardev-add, chardev-remove, chardev-send-break, ringbuf-write, ringbuf-read
 * chardev's own, `x-` prefixed like QEMU's experimental commands:
 *   x-chardev-domain-xml {live?}       → the live (default) or inactive domain XML
 *   x-chardev-counters {id?}           → [{label, bytes-from-guest, bytes-to-guest, dropped, clients}]
 *   x-chardev-clients {id}             → the device's clients (Hub ClientInfo, kebab-case keys)
 *   x-chardev-take-over {id, client}   → make that client the writer
 *   x-chardev-resources                → the process's memory, open fds and active handles/timers
 *                                        ({pid, rss, heap-used, heap-total, external, fds, resources: {Timeout: n, …}})
 * Events (chardev's own; QEMU has no host-side connection events):
 *   CHARDEV_CLIENT_ATTACHED, CHARDEV_CLIENT_DETACHED, CHARDEV_CLIENT_ROLE
 *   with data {id: label, client: {id, kind, label, role, readonly, since, bytes-sent, bytes-missed}}
 *
 * A ringbuf (`ringbuf` / `memory` in chardev-add) is an added device whose source is `null`
 * with a history ring of the requested size: guest output lands in the ring, ringbuf-read
 * consumes it, ringbuf-write appends to it and never reaches the guest, as in QEMU.
 * Extension: ringbuf-read also works on a device of the domain document that keeps a
 * `<cd:history>`; it returns the newest `size` bytes and does NOT consume them (the history
 * belongs to the device's clients). ringbuf-write refuses such a device.
 *
 * Isolation: each client is parsed, answered and flow-controlled on its own. A value larger
 * than MAX_MESSAGE_BYTES or nested deeper than MAX_NESTING gets an error and ends that
 * client's connection. While more than MAX_OUTPUT_BYTES of answers wait for a client, its
 * next request is not read (it can ask for no more than it reads); an event that finds that
 * much still waiting drops the client instead, since events cannot wait. Nothing a client
 * sends can throw out of its handler.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { aliasOfName } from '../config/names.ts';
import type { ChrSourceDef, LogDef, OnOff } from '../config/types.ts';
import type { Chardev } from '../core/chardev.ts';
import type { AddDeviceOptions, Domain } from '../core/domain.ts';
import { unlinkQuietly } from '../core/files.ts';
import type { ClientChange, ClientInfo } from '../core/hub.ts';
import { listenUnixOwnerOnly } from '../core/unix-listen.ts';
import { ChardevError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { JsonLimitError, JsonSplitter, MAX_NESTING, JsonSyntaxError, parseQmpJson, qemuJson, type Json, type JsonObject } from './qmp-json.ts';

/** The QEMU release whose QMP this server speaks. */
export const QMP_QEMU_VERSION = { micro: 0, minor: 2, major: 9 } as const;
/** chardev's own version (package.json's), in the greeting's `package`. */
export const CHARDEV_VERSION = VERSION;
/** Output queued for a client: beyond it requests wait, and an event drops the client. */
export const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;
/** QEMU's default ringbuf size. */
export const RINGBUF_DEFAULT_SIZE = 65536;
/** A ringbuf is memory we allocate on request; QEMU has no bound, we keep one. */
export const RINGBUF_MAX_SIZE = 64 * 1024 * 1024;
/** How long a client that is being dropped gets to read its last error. */
const DROP_GRACE_MS = 1000;

export interface QmpServerOptions {
  /** Where the socket is created (0600; a stale socket is replaced, a live one is an error). */
  readonly path: string;
  /** `x-chardev-domain-xml` (default, `live: true`). */
  readonly liveXml: () => string;
  /** `x-chardev-domain-xml {"live": false}`. */
  readonly inactiveXml: () => string;
  /** chardev's version for the greeting's and query-version's `package` (default CHARDEV_VERSION). */
  readonly version?: string;
  /** Every event sent to this server's clients, also to whoever hosts it (the daemon's control socket). */
  readonly onEvent?: (event: string, data: JsonObject) => void;
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

export type QmpErrorClass = 'GenericError' | 'CommandNotFound';

/** A command's failure as QMP reports it: `{"error": {"class", "desc"}}`. */
export class QmpError extends Error {
  readonly errorClass: QmpErrorClass;
  constructor(errorClass: QmpErrorClass, desc: string) {
    super(desc);
    this.name = 'QmpError';
    this.errorClass = errorClass;
  }
}

const generic = (desc: string): QmpError => new QmpError('GenericError', desc);

/** The backend types chardev-add creates, as QEMU names them (query-chardev-backends). */
export const QMP_BACKENDS = ['null', 'socket', 'udp', 'file', 'pipe', 'pty', 'serial', 'parallel', 'ringbuf', 'memory'] as const;
type QmpBackend = (typeof QMP_BACKENDS)[number];

/** QEMU's ChardevBackendKind values we do not create: valid names, refused with a reason. */
const QEMU_ONLY_BACKENDS = new Set(['mux', 'hub', 'msmouse', 'wctablet', 'braille', 'testdev', 'stdio', 'console', 'spicevmc', 'spiceport', 'qemu-vdagent', 'dbus', 'vc']);

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

type ArgType = 'string' | 'integer' | 'boolean' | 'object' | 'array';

function hasType(v: Json, type: ArgType): boolean {
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isSafeInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
  }
}

/**
 * One QAPI struct being visited, with QEMU's input-visitor errors: members are checked in
 * the order they are read, then done() refuses members nobody read.
 */
/** A command's arguments, checked as QEMU's QAPI visitor checks them (types, missing, unexpected). */
export class Args {
  readonly #obj: JsonObject;
  readonly #prefix: string;
  readonly #used = new Set<string>();

  constructor(obj: JsonObject, prefix = '') {
    this.#obj = obj;
    this.#prefix = prefix;
  }

  #get(name: string, type: ArgType, required: boolean): Json | undefined {
    this.#used.add(name);
    const v = Object.hasOwn(this.#obj, name) ? this.#obj[name] : undefined;
    if (v === undefined) {
      if (required) throw generic(`Parameter '${this.#prefix}${name}' is missing`);
      return undefined;
    }
    if (!hasType(v, type)) throw generic(`Invalid parameter type for '${this.#prefix}${name}', expected: ${type}`);
    return v;
  }

  str(name: string): string {
    return this.#get(name, 'string', true) as string;
  }
  optStr(name: string): string | undefined {
    return this.#get(name, 'string', false) as string | undefined;
  }
  int(name: string): number {
    return this.#get(name, 'integer', true) as number;
  }
  optInt(name: string): number | undefined {
    return this.#get(name, 'integer', false) as number | undefined;
  }
  optBool(name: string): boolean | undefined {
    return this.#get(name, 'boolean', false) as boolean | undefined;
  }
  obj(name: string): Args {
    return new Args(this.#get(name, 'object', true) as JsonObject, `${this.#prefix}${name}.`);
  }
  optObj(name: string): Args | undefined {
    const v = this.#get(name, 'object', false) as JsonObject | undefined;
    return v === undefined ? undefined : new Args(v, `${this.#prefix}${name}.`);
  }
  /** A member of any type (one we only refuse when present). */
  optAny(name: string): Json | undefined {
    this.#used.add(name);
    return Object.hasOwn(this.#obj, name) ? this.#obj[name] : undefined;
  }
  optArray(name: string): Json[] | undefined {
    return this.#get(name, 'array', false) as Json[] | undefined;
  }
  /** An enum member; QEMU names only the member (not its path) in this error. */
  optEnum<T extends string>(name: string, values: readonly T[]): T | undefined {
    const v = this.optStr(name);
    if (v !== undefined && !(values as readonly string[]).includes(v)) throw generic(`Parameter '${name}' does not accept value '${v}'`);
    return v as T | undefined;
  }
  /** The members not read yet, as they came (a command passed on with what it did not use). */
  rest(): JsonObject {
    const out = Object.create(null) as JsonObject;
    for (const key of Object.keys(this.#obj)) {
      if (this.#used.has(key)) continue;
      this.#used.add(key);
      out[key] = this.#obj[key] as Json;
    }
    return out;
  }
  done(): void {
    for (const key of Object.keys(this.#obj)) {
      if (!this.#used.has(key)) throw generic(`Parameter '${this.#prefix}${key}' is unexpected`);
    }
  }
}

/** chardev-add's backend, mapped to a device source; `failure` is a reason QEMU would accept the shape but we cannot. */
interface AddSpec {
  readonly type: QmpBackend;
  readonly source: ChrSourceDef | undefined;
  readonly options: AddDeviceOptions;
  readonly failure: string | undefined;
}

/** QAPI members chardev's sources cannot express: present and not `false` → refused with a reason. */
function refuse(failures: string[], args: Args, names: readonly string[], what = 'is not supported by chardev'): void {
  for (const n of names) {
    const v = args.optAny(n);
    if (v !== undefined && v !== false) failures.push(`'${n}' ${what}`);
  }
}

/** ChardevCommon: `logfile`, `logappend` → the `<log>` tee. */
function common(data: Args): { log?: LogDef; seclabels: [] } {
  const logfile = data.optStr('logfile');
  const logappend = data.optBool('logappend');
  if (logfile === undefined) return { seclabels: [] };
  const append: OnOff | undefined = logappend === undefined ? undefined : logappend ? 'on' : 'off';
  return { log: append === undefined ? { file: logfile } : { file: logfile, append }, seclabels: [] };
}

type QmpAddress = { kind: 'inet'; host: string; port: string } | { kind: 'unix'; path: string };

/** SocketAddressLegacy `{type, data}`, inet or unix. */
function socketAddress(failures: string[], parent: Args, name: string, required: true): QmpAddress;
function socketAddress(failures: string[], parent: Args, name: string, required: false): QmpAddress | undefined;
function socketAddress(failures: string[], parent: Args, name: string, required: boolean): QmpAddress | undefined {
  const addr = required ? parent.obj(name) : parent.optObj(name);
  if (addr === undefined) return undefined;
  const type = addr.optEnum('type', ['inet', 'unix', 'vsock', 'fd'] as const);
  if (type === undefined) addr.str('type');
  const data = addr.obj('data');
  let out: QmpAddress;
  if (type === 'inet') {
    out = { kind: 'inet', host: data.str('host'), port: data.str('port') };
    data.optBool('numeric');
    data.optBool('keep-alive');
    refuse(failures, data, ['to', 'ipv4', 'ipv6', 'mptcp']);
  } else if (type === 'unix') {
    out = { kind: 'unix', path: data.str('path') };
    refuse(failures, data, ['abstract', 'tight']);
  } else {
    // vsock / fd: valid QEMU addresses we cannot open; their members are not checked.
    failures.push(`socket address type '${type as string}' is not supported by chardev`);
    return { kind: 'unix', path: '' };
  }
  data.done();
  addr.done();
  return out;
}

function parseBackend(backend: Args): AddSpec {
  const failures: string[] = [];
  const typeName = backend.str('type');
  if (!(QMP_BACKENDS as readonly string[]).includes(typeName)) {
    if (QEMU_ONLY_BACKENDS.has(typeName)) {
      return { type: 'null', source: undefined, options: {}, failure: `backend type '${typeName}' is not supported by chardev (query-chardev-backends lists what is)` };
    }
    throw generic(`Parameter 'type' does not accept value '${typeName}'`);
  }
  const type = typeName as QmpBackend;
  const data = backend.obj('data');
  const base = common(data);
  let source: ChrSourceDef;
  let options: AddDeviceOptions = {};
  switch (type) {
    case 'null':
      source = { type: 'null', ...base };
      break;
    case 'file': {
      const out = data.str('out');
      const input = data.optStr('in');
      const append = data.optBool('append');
      source = { type: 'file', path: out, ...(append === undefined ? {} : { append: append ? 'on' : 'off' }), ...(input === undefined ? {} : { input }), ...base };
      break;
    }
    case 'pty':
      refuse(failures, data, ['path'], '(a pty symlink) is not supported by chardev');
      source = { type: 'pty', ...base };
      break;
    case 'pipe':
      source = { type: 'pipe', path: data.str('device'), ...base };
      break;
    case 'serial':
      source = { type: 'dev', path: data.str('device'), ...base };
      break;
    case 'parallel':
      source = { type: 'dev', path: data.str('device'), ...base };
      options = { kind: 'parallel' };
      break;
    case 'ringbuf':
    case 'memory': {
      const requested = data.optInt('size') ?? 0;
      const size = requested === 0 ? RINGBUF_DEFAULT_SIZE : requested;
      if (size < 1 || 2 ** Math.round(Math.log2(size)) !== size) failures.push('size of ringbuf chardev must be power of two');
      else if (size > RINGBUF_MAX_SIZE) failures.push(`size of ringbuf chardev must be at most ${RINGBUF_MAX_SIZE}`);
      source = { type: 'null', ...base };
      options = { historyBytes: size };
      break;
    }
    case 'udp': {
      const remote = socketAddress(failures, data, 'remote', true);
      const local = socketAddress(failures, data, 'local', false);
      if (remote.kind !== 'inet' || (local !== undefined && local.kind !== 'inet')) failures.push('udp needs inet addresses');
      source = {
        type: 'udp',
        ...(remote.kind === 'inet' ? { connectHost: remote.host, connectService: remote.port } : {}),
        ...(local?.kind === 'inet' ? { bindHost: local.host, bindService: local.port } : {}),
        ...base,
      };
      break;
    }
    case 'socket': {
      const addr = socketAddress(failures, data, 'addr', true);
      // QMP's defaults (not the command line's): a server that does not wait.
      const server = data.optBool('server') ?? true;
      const wait = data.optBool('wait') ?? false;
      const telnet = data.optBool('telnet') ?? false;
      data.optBool('nodelay');
      const reconnect = data.optInt('reconnect');
      const reconnectMs = data.optInt('reconnect-ms');
      refuse(failures, data, ['tn3270', 'websocket', 'tls-creds', 'tls-authz']);
      if (server && wait) failures.push("'wait' is not supported by chardev: a server never blocks for its first client");
      if (reconnect !== undefined && reconnectMs !== undefined) failures.push("'reconnect' and 'reconnect-ms' are mutually exclusive");
      if (server && reconnect !== undefined) failures.push("'reconnect' option is incompatible with 'server' option");
      if (server && reconnectMs !== undefined) failures.push("'reconnect-ms' option is incompatible with 'server' option");
      if (addr.kind === 'unix' && telnet) failures.push("'telnet' over a unix socket is not supported by chardev");
      const timeoutSec = reconnectMs !== undefined ? reconnectMs / 1000 : reconnect;
      const rec = !server && timeoutSec !== undefined && timeoutSec > 0 ? { reconnect: { enabled: 'yes' as const, timeoutSec } } : {};
      const mode = server ? ('bind' as const) : ('connect' as const);
      source =
        addr.kind === 'inet'
          ? { type: 'tcp', mode, host: addr.host, service: addr.port, protocol: telnet ? 'telnet' : 'raw', tls: 'no', ...rec, ...base }
          : { type: 'unix', mode, path: addr.path, ...rec, ...base };
      break;
    }
  }
  data.done();
  backend.done();
  return { type, source, options, failure: failures[0] };
}

/** A device's messages start with its id (`charfoo: Could not open …`); QMP's do not. */
function reason(id: string, e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.startsWith(`${id}: `) ? msg.slice(id.length + 2) : msg;
}

const ID_RE = /^[A-Za-z][A-Za-z0-9._-]*$/;



/** Ringbufs made as the `memory` alias, so query-chardev names them as QEMU does. */
const memoryAlias = new WeakSet<Chardev>();

function clientJson(c: ClientInfo): JsonObject {
  return {
    id: c.id,
    kind: c.kind,
    label: c.label,
    role: c.role,
    readonly: c.readonly,
    since: c.since,
    'bytes-sent': c.bytesSent,
    'bytes-missed': c.bytesMissed,
    released: c.released,
  };
}

/** QMP events for hub changes; CHARDEV_CLIENT_STALLED is the stall limit releasing a client. */
const CLIENT_EVENTS: Record<ClientChange, string> = {
  attached: 'CHARDEV_CLIENT_ATTACHED',
  detached: 'CHARDEV_CLIENT_DETACHED',
  role: 'CHARDEV_CLIENT_ROLE',
  stalled: 'CHARDEV_CLIENT_STALLED',
};

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
 * What a leak would show: memory, open fds (Linux: /proc/self/fd; -1 elsewhere) and the
 * handles and timers keeping the event loop busy, by type (Node's getActiveResourcesInfo).
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
  return { pid: process.pid, rss: mem.rss, 'heap-used': mem.heapUsed, 'heap-total': mem.heapTotal, external: mem.external, fds, resources };
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
class QmpWire {
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

class QmpServerImpl extends QmpWire implements QmpServer {
  readonly #domain: Domain;
  readonly #options: QmpServerOptions;
  readonly #listeners = new Map<Chardev, (change: ClientChange, client: ClientInfo) => void>();
  #unwatch: (() => void) | undefined;
  /** chardev-add / chardev-remove run one at a time, so checks and changes do not interleave. */
  #ops: Promise<unknown> = Promise.resolve();

  constructor(domain: Domain, options: QmpServerOptions) {
    super(options.path, options.version);
    this.#domain = domain;
    this.#options = options;
    this.#defineCommands();
  }

  override async listen(): Promise<void> {
    await super.listen();
    for (const dev of this.#domain.devices.values()) this.#subscribe(dev);
    this.#unwatch = this.#domain.watch((change, dev) => {
      if (change === 'added') this.#subscribe(dev);
      else this.#unsubscribe(dev);
    });
  }

  #subscribe(dev: Chardev): void {
    if (this.#listeners.has(dev)) return;
    const listener = (change: ClientChange, client: ClientInfo): void => {
      const event = CLIENT_EVENTS[change];
      const data: JsonObject = { id: dev.id, client: clientJson(client) };
      this.broadcast(event, data);
      this.#options.onEvent?.(event, data);
    };
    this.#listeners.set(dev, listener);
    dev.on('client', listener);
  }

  #unsubscribe(dev: Chardev): void {
    const l = this.#listeners.get(dev);
    if (l === undefined) return;
    dev.off('client', l);
    this.#listeners.delete(dev);
  }

  #find(id: string): Chardev | undefined {
    for (const d of this.#domain.devices.values()) if (d.id === id) return d;
    return undefined;
  }

  #mustFind(id: string): Chardev {
    const d = this.#find(id);
    if (d === undefined) throw generic(`Chardev '${id}' not found`);
    return d;
  }

  #isRingbuf(dev: Chardev): boolean {
    return this.#domain.isAdded(dev) && dev.type === 'null' && dev.history !== undefined;
  }

  #serialized<T>(op: () => Promise<T>): Promise<T> {
    const next = this.#ops.then(op, op);
    this.#ops = next.catch(() => {});
    return next;
  }

  #defineCommands(): void {
    const c = this.commands;
    const domain = this.#domain;
    c.set('query-version', (a) => {
      a.done();
      return this.versionJson();
    });
    c.set('query-commands', (a) => {
      a.done();
      return ['qmp_capabilities', ...c.keys()].map((name) => ({ name }));
    });
    c.set('query-chardev', (a) => {
      a.done();
      return [...domain.devices.values()].map((d) => ({
        label: d.id,
        filename: this.#isRingbuf(d) ? (memoryAlias.has(d) ? 'memory' : 'ringbuf') : d.filename,
        'frontend-open': !domain.isAdded(d),
      }));
    });
    c.set('query-chardev-backends', (a) => {
      a.done();
      return QMP_BACKENDS.map((name) => ({ name }));
    });
    c.set('chardev-add', (a) => {
      const id = a.str('id');
      const spec = parseBackend(a.obj('backend'));
      a.done();
      if (!ID_RE.test(id)) throw generic("Parameter 'id' expects an identifier");
      return this.#serialized(async () => {
        if (this.#find(id) !== undefined || domain.devices.has(aliasOfName(id))) throw generic(`Chardev with id '${id}' already exists`);
        if (spec.failure !== undefined || spec.source === undefined) throw generic(`Failed to add chardev '${id}': ${spec.failure ?? 'unsupported'}`);
        let dev: Chardev;
        try {
          dev = await domain.add(id, spec.source, spec.options);
        } catch (e) {
          throw generic(`Failed to add chardev '${id}': ${reason(id, e)}`);
        }
        if (spec.type === 'memory') memoryAlias.add(dev);
        return dev.ptyPath !== undefined ? { pty: dev.ptyPath } : {};
      });
    });
    c.set('chardev-remove', (a) => {
      const id = a.str('id');
      a.done();
      return this.#serialized(async () => {
        const dev = this.#mustFind(id);
        // A device of the domain document has its guest frontend attached, for good.
        if (!domain.isAdded(dev)) throw generic(`Chardev '${id}' is busy`);
        await domain.remove(dev.alias);
        return {};
      });
    });
    c.set('chardev-send-break', (a) => {
      const id = a.str('id');
      a.done();
      this.#mustFind(id).breakReceived();
      return {};
    });
    const formats = ['utf8', 'base64'] as const;
    c.set('ringbuf-write', (a) => {
      const device = a.str('device');
      const data = a.str('data');
      const format = a.optEnum('format', formats);
      a.done();
      const dev = this.#find(device);
      if (dev === undefined) throw generic(`Device '${device}' not found`);
      if (!this.#isRingbuf(dev) || dev.history === undefined) throw generic(`${device} is not a ringbuf device`);
      let bytes: Buffer;
      if (format === 'base64') {
        if (!/^[A-Za-z0-9+/=\n]*$/.test(data)) throw generic('Base64 data contains invalid characters');
        bytes = Buffer.from(data, 'base64');
      } else {
        bytes = Buffer.from(data, 'utf8');
      }
      dev.history.append(bytes);
      return {};
    });
    c.set('ringbuf-read', (a) => {
      const device = a.str('device');
      const size = a.int('size');
      const format = a.optEnum('format', formats);
      a.done();
      const dev = this.#find(device);
      if (dev === undefined) throw generic(`Device '${device}' not found`);
      const history = dev.history;
      const ringbuf = this.#isRingbuf(dev);
      if (history === undefined || (!ringbuf && domain.isAdded(dev))) throw generic(`${device} is not a ringbuf device`);
      if (size <= 0) throw generic('size must be greater than zero');
      let bytes: Buffer;
      if (ringbuf) {
        bytes = history.read(size);
      } else {
        // Extension: a document device's history is read, not consumed.
        const all = history.snapshot();
        bytes = all.subarray(Math.max(0, all.length - size));
      }
      if (format === 'base64') return bytes.toString('base64');
      // QEMU hands the bytes out as a C string: everything after a NUL is lost (but consumed).
      const nul = bytes.indexOf(0);
      return (nul >= 0 ? bytes.subarray(0, nul) : bytes).toString('utf8');
    });
    c.set('x-chardev-domain-xml', (a) => {
      const live = a.optBool('live') ?? true;
      a.done();
      return live ? this.#options.liveXml() : this.#options.inactiveXml();
    });
    c.set('x-chardev-counters', (a) => {
      const id = a.optStr('id');
      a.done();
      const devs = id === undefined ? [...domain.devices.values()] : [this.#mustFind(id)];
      return devs.map((d) => {
        const k = d.counters;
        return { label: d.id, 'bytes-from-guest': k.bytesFromGuest, 'bytes-to-guest': k.bytesToGuest, dropped: k.dropped, clients: d.hub.size };
      });
    });
    c.set('x-chardev-clients', (a) => {
      const id = a.str('id');
      a.done();
      return this.#mustFind(id).hub.clients().map(clientJson);
    });
    c.set('x-chardev-resources', (a) => {
      a.done();
      return processResources();
    });
    c.set('x-chardev-take-over', (a) => {
      const id = a.str('id');
      const clientId = a.int('client');
      a.done();
      const dev = this.#mustFind(id);
      const client = dev.hub.client(clientId);
      if (client === undefined) throw generic(`Chardev '${id}' has no client ${clientId}`);
      if (client.readonly) throw generic(`Client ${clientId} of chardev '${id}' is read-only`);
      dev.hub.takeOver(client);
      return {};
    });
  }

  override close(): Promise<void> {
    this.#unwatch?.();
    this.#unwatch = undefined;
    for (const [dev, l] of this.#listeners) dev.off('client', l);
    this.#listeners.clear();
    return super.close();
  }
}

/** Serve QMP for `domain` on a UNIX socket at `options.path`. */
export async function startQmpServer(domain: Domain, options: QmpServerOptions): Promise<QmpServer> {
  const server = new QmpServerImpl(domain, options);
  try {
    await server.listen();
  } catch (e) {
    await server.close().catch(() => {});
    if (e instanceof ChardevError) throw e;
    throw new ChardevError('ERR_BACKEND_OPEN', `QMP socket: ${(e as Error).message}`, { cause: e });
  }
  return server;
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
export async function startQmpService(where: string | { readonly fd: number; readonly path: string }, define: (service: QmpService) => void, version?: string): Promise<QmpService> {
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
