/**
 * The daemon's control socket: QMP, as every domain's own socket speaks it, with the
 * daemon's commands added:
 *
 *   x-domain-start {xml, file?, log-dir?, tls?, tls-verify?, tls-dir?, channel-dir?,
 *                   qemu?: {argv, monitor?, hub?, syntax?, cwd?}}
 *                                   → {name, lines, qemu-pid?} once every device (and QEMU's
 *                                     every port) is connected
 *   x-domain-stop {domain, timeout-ms?} → {} (QEMU quit, devices drained, sockets gone)
 *   x-domain-list                   → [{name, started, devices, qemu-pid?, qmp, console}]
 *
 * A domain's device commands (query-chardev, chardev-add, ringbuf-read, x-chardev-counters,
 * …) take the domain as `domain` and are answered by that domain's own server, exactly as
 * on its socket. query-version, query-commands and x-chardev-resources are the daemon's.
 * Events: every domain's, with `domain` added to their data; CHARDEV_DOMAIN_STARTED and
 * CHARDEV_DOMAIN_STOPPED {domain}.
 */
import { type Args, QmpError, processResources, startQmpService, type QmpService } from '../control/qmp.ts';
import type { Json, JsonObject } from '../control/qmp-json.ts';
import { ChardevError } from '../errors.ts';
import type { DomainHost } from './host.ts';
import type { DomainRequest, QemuRequest } from './state.ts';

/**
 * The device commands a domain's own socket answers, passed on by `domain`. Any other a
 * domain's server answers is passed on too once a domain has started (domainCommands).
 */
export const DOMAIN_COMMANDS = [
  'query-chardev',
  'query-chardev-backends',
  'chardev-add',
  'chardev-remove',
  'chardev-send-break',
  'ringbuf-write',
  'ringbuf-read',
  'x-chardev-domain-xml',
  'x-chardev-counters',
  'x-chardev-clients',
  'x-chardev-take-over',
] as const;

const generic = (desc: string): QmpError => new QmpError('GenericError', desc);

function strings(a: Args, name: string): string[] | undefined {
  const v = a.optArray(name);
  if (v === undefined) return undefined;
  return v.map((x, i) => {
    if (typeof x !== 'string') throw generic(`Invalid parameter type for '${name}[${i}]', expected: string`);
    return x;
  });
}

function qemuRequest(a: Args): QemuRequest {
  const argv = strings(a, 'argv');
  if (argv === undefined || argv.length === 0) throw generic("Parameter 'qemu.argv' is missing");
  const monitors = strings(a, 'monitor');
  const hubs = strings(a, 'hub')?.map((h) => h.split(',').filter((x) => x !== ''));
  const syntax = a.optEnum('syntax', ['json', 'keyval'] as const);
  const cwd = a.optStr('cwd');
  a.done();
  return {
    argv,
    ...(monitors !== undefined ? { monitors } : {}),
    ...(hubs !== undefined ? { hubs } : {}),
    ...(syntax !== undefined ? { syntax } : {}),
    ...(cwd !== undefined ? { cwd } : {}),
  };
}

function domainRequest(a: Args): DomainRequest {
  const xml = a.str('xml');
  const file = a.optStr('file');
  const logDir = a.optStr('log-dir');
  const tls = a.optBool('tls');
  const tlsVerify = a.optBool('tls-verify');
  const tlsDir = a.optStr('tls-dir');
  const channelDir = a.optStr('channel-dir');
  const q = a.optObj('qemu');
  const qemu = q === undefined ? undefined : qemuRequest(q);
  a.done();
  if (logDir !== undefined && !logDir.startsWith('/')) throw generic("Parameter 'log-dir' must be an absolute path");
  if (qemu?.cwd !== undefined && !qemu.cwd.startsWith('/')) throw generic("Parameter 'qemu.cwd' must be an absolute path");
  return {
    xml,
    ...(file !== undefined ? { file } : {}),
    ...(logDir !== undefined ? { logDir } : {}),
    ...(tls !== undefined ? { tls } : {}),
    ...(tlsVerify !== undefined ? { tlsVerify } : {}),
    ...(tlsDir !== undefined ? { tlsDir } : {}),
    ...(channelDir !== undefined ? { channelDir } : {}),
    ...(qemu !== undefined ? { qemu } : {}),
  };
}

/** A failure as QMP says it; chardev's own errors keep their message. */
function asQmp(e: unknown): QmpError {
  if (e instanceof QmpError) return e;
  if (e instanceof ChardevError) return generic(e.message);
  return generic(e instanceof Error ? e.message : String(e));
}

/** Serve the daemon's control socket at `where` (a path, or an inherited listening fd) for `host`'s domains. */
export async function startControl(where: string | { readonly fd: number; readonly path: string }, host: () => DomainHost): Promise<QmpService> {
  return startQmpService(where, (service) => {
    const c = service.commands;
    c.set('query-version', (a) => {
      a.done();
      return service.versionJson();
    });
    c.set('query-commands', (a) => {
      a.done();
      return ['qmp_capabilities', ...c.keys()].map((name) => ({ name }));
    });
    c.set('x-chardev-resources', (a) => {
      a.done();
      return { ...processResources(), domains: host().size };
    });
    c.set('x-domain-start', async (a) => {
      const request = domainRequest(a);
      try {
        const r = await host().start(request);
        return { name: r.name, lines: [...r.lines], ...(r.qemuPid !== undefined ? { 'qemu-pid': r.qemuPid } : {}) };
      } catch (e) {
        throw asQmp(e);
      }
    });
    c.set('x-domain-stop', async (a) => {
      const name = a.str('domain');
      const timeoutMs = a.optInt('timeout-ms');
      a.done();
      try {
        const exit = await host().stop(name, timeoutMs);
        return exit === undefined ? {} : { 'qemu-status': exit.status };
      } catch (e) {
        throw asQmp(e);
      }
    });
    c.set('x-domain-list', (a) => {
      a.done();
      return host()
        .list()
        .map((d) => ({
          name: d.name,
          started: d.started,
          devices: d.devices,
          ...(d.qemuPid !== undefined ? { 'qemu-pid': d.qemuPid } : {}),
          qmp: d.qmp,
          console: d.console,
        }));
    });
    domainCommands(service, host, DOMAIN_COMMANDS);
  });
}

/** The daemon's own commands: never passed on to a domain. */
const DAEMON_ONLY = new Set(['qmp_capabilities', 'query-version', 'query-commands', 'x-chardev-resources']);

/**
 * Pass `names` on to the domain their `domain` argument names (those the table has not
 * yet): each domain's server answers, exactly as on its own socket.
 */
export function domainCommands(service: QmpService, host: () => DomainHost, names: readonly string[]): void {
  for (const command of names) {
    if (DAEMON_ONLY.has(command) || service.commands.has(command)) continue;
    service.commands.set(command, async (a): Promise<Json> => {
      const name = a.str('domain');
      const rest = a.rest();
      let target;
      try {
        target = host().served(name);
      } catch (e) {
        throw asQmp(e);
      }
      return target.qmp.call(command, rest);
    });
  }
}

/** A domain's event on the control socket: its data says which domain. */
export function domainEvent(service: QmpService, domain: string, event: string, data: JsonObject): void {
  service.broadcast(event, { domain, ...data });
}

/**
 * The listening socket systemd passed (socket activation: `LISTEN_PID` is us, `LISTEN_FDS`
 * ≥ 1; the first is fd 3), or undefined. It must be bound at `path` (the unit's
 * ListenStream=), where clients look. The variables are removed so that no child (QEMU)
 * takes them for its own.
 */
export function inheritedListener(path: string, env: NodeJS.ProcessEnv = process.env): { readonly fd: number; readonly path: string } | undefined {
  const pid = env['LISTEN_PID'];
  const fds = Number(env['LISTEN_FDS'] ?? '0');
  if (pid === undefined || Number(pid) !== process.pid || !Number.isInteger(fds) || fds < 1) return undefined;
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDS'];
  delete env['LISTEN_FDNAMES'];
  return { fd: 3, path };
}
