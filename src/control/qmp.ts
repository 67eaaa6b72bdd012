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
 *                                        ({pid, rss, heap-used, heap-total, external, fds, data-plane, resources: {Timeout: n, …}})
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
import { aliasOfName } from '../config/names.ts';
import type { Chardev } from '../core/chardev.ts';
import type { Domain } from '../core/domain.ts';
import type { ClientChange, ClientInfo } from '../core/hub.ts';
import { ChardevError } from '../errors.ts';
import { generic } from './qmp-args.ts';
import { QMP_BACKENDS, parseBackend } from './qmp-chardev-add.ts';
import type { JsonObject } from './qmp-json.ts';
import { QmpWire, processResources, type QmpServer } from './qmp-wire.ts';

export { Args, QmpError, type QmpErrorClass } from './qmp-args.ts';
export { QMP_BACKENDS, RINGBUF_DEFAULT_SIZE, RINGBUF_MAX_SIZE } from './qmp-chardev-add.ts';
export {
  CHARDEV_VERSION,
  MAX_OUTPUT_BYTES,
  QMP_QEMU_VERSION,
  processResources,
  startQmpService,
  type QmpHandler,
  type QmpServer,
  type QmpService,
} from './qmp-wire.ts';

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
        // Extension: a document device's history is read, not consumed. A kernel-path run
        // brings the history up to date when it ends: end it first.
        dev.settleOutput();
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
