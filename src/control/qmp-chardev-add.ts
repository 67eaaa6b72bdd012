/**
 * `chardev-add`'s `backend` argument, QEMU's ChardevBackend, mapped to a device source of the
 * domain model: the types chardev creates, those QEMU has and chardev refuses with a reason,
 * and every member checked as QEMU's visitor checks it.
 */
import type { ChrSourceDef, LogDef, OnOff } from '../config/types.ts';
import type { AddDeviceOptions } from '../core/domain.ts';
import { type Args, generic } from './qmp-args.ts';

/** QEMU's default ringbuf size. */
export const RINGBUF_DEFAULT_SIZE = 65536;
/** A ringbuf is memory we allocate on request; QEMU has no bound, we keep one. */
export const RINGBUF_MAX_SIZE = 64 * 1024 * 1024;

/** The backend types chardev-add creates, as QEMU names them (query-chardev-backends). */
export const QMP_BACKENDS = ['null', 'socket', 'udp', 'file', 'pipe', 'pty', 'serial', 'parallel', 'ringbuf', 'memory'] as const;
type QmpBackend = (typeof QMP_BACKENDS)[number];

/** QEMU's ChardevBackendKind values we do not create: valid names, refused with a reason. */
const QEMU_ONLY_BACKENDS = new Set([
  'mux',
  'hub',
  'msmouse',
  'wctablet',
  'braille',
  'testdev',
  'stdio',
  'console',
  'spicevmc',
  'spiceport',
  'qemu-vdagent',
  'dbus',
  'vc',
]);

/** chardev-add's backend, mapped to a device source; `failure` is a reason QEMU would accept the shape but we cannot. */
export interface AddSpec {
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

export function parseBackend(backend: Args): AddSpec {
  const failures: string[] = [];
  const typeName = backend.str('type');
  if (!(QMP_BACKENDS as readonly string[]).includes(typeName)) {
    if (QEMU_ONLY_BACKENDS.has(typeName)) {
      return {
        type: 'null',
        source: undefined,
        options: {},
        failure: `backend type '${typeName}' is not supported by chardev (query-chardev-backends lists what is)`,
      };
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
      source = {
        type: 'file',
        path: out,
        ...(append === undefined ? {} : { append: append ? 'on' : 'off' }),
        ...(input === undefined ? {} : { input }),
        ...base,
      };
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
