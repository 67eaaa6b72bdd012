/**
 * The daemon's domains: any number of them in one process, each started, served and
 * stopped by the same code `chardev run` and `chardev qemu` use for their one domain
 * (startDomain, serveDomain, launchQemu), so a domain behaves the same hosted or alone:
 * its devices, logs, history, clients, console and QMP sockets, status file.
 *
 * What differs is QEMU's supervision: the daemon starts it detached (launch.ts), so QEMU
 * outlives a daemon restart. Stopping the daemon lets go of its QEMUs and keeps the state
 * file; the next daemon starts the domains' devices again (logs appended to, tcp and udp
 * servers on the ports they had) and takes each QEMU back (adoptQemu), whose `reconnect`
 * brings every port back within a second. A domain whose QEMU ended meanwhile is stopped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LoadedDomain, LoadOptions } from '../config/domain.ts';
import { loadDomain } from '../config/domain.ts';
import { hostDevices } from '../config/names.ts';
import type { DomainChardevsDef } from '../config/types.ts';
import type { JsonObject } from '../control/qmp-json.ts';
import { startDomain, type Domain } from '../core/domain.ts';
import { readStatus } from '../core/status.ts';
import { ChardevError } from '../errors.ts';
import {
  adoptQemu,
  describePorts,
  launchQemu,
  planQemuPorts,
  processStartTime,
  qemuExitMessage,
  type QemuExit,
  type QemuPort,
  type QemuProcess,
} from '../qemu/launch.ts';
import { serveDomain, webAddress, type ServedDomain, type ServeReporter, type WebAddress } from '../control/serve.ts';
import type { WebServer } from '../web/server.ts';
import { readState, writeState, type DomainRecord, type DomainRequest } from './state.ts';
import { DaemonWeb } from './web.ts';

/** How long QEMU gets to quit (QMP quit, else SIGTERM) before SIGKILL, as `chardev qemu` gives it. */
export const QUIT_TIMEOUT_MS = 10000;

/** A hosted domain's lifecycle (before it is running it is only a claimed name). */
type HostedState = 'running' | 'stopping';

interface Hosted {
  state: HostedState;
  readonly name: string;
  readonly started: string;
  readonly request: DomainRequest;
  readonly loaded: LoadedDomain;
  readonly domain: Domain;
  readonly served: ServedDomain;
  qemu: QemuProcess | undefined;
}

export interface DomainSummary {
  readonly name: string;
  readonly started: string;
  readonly devices: number;
  readonly qemuPid?: number;
  readonly qmp: string;
  readonly console: string;
}

export interface StartResult {
  readonly name: string;
  /** What `chardev qemu` would have printed: where each host interface is, the guest ports. */
  readonly lines: readonly string[];
  readonly qemuPid?: number;
}

export interface DomainHostOptions {
  readonly runDir: string;
  /** Where domain logs go unless a request says otherwise. */
  readonly logDir: string;
  readonly statePath: string;
  readonly controlSocket: string;
  readonly report: ServeReporter;
  /** A domain's QMP event (client attached, …), for the control socket. */
  readonly onEvent?: (domain: string, event: string, data: JsonObject) => void;
  /** A domain started or stopped. */
  readonly onChange?: (change: 'started' | 'stopped', name: string) => void;
  /** `--web`: where the one browser console for every domain listens (else 127.0.0.1, a free port, once a domain asks; web.ts). */
  readonly web?: WebAddress;
  /** The browser console started (the first domain asked for it, or startWeb). */
  readonly onWeb?: (server: WebServer) => void;
}

function loadOptions(request: DomainRequest): LoadOptions {
  const o: LoadOptions = { file: request.file ?? '<x-domain-start>' };
  if (request.tls !== undefined) o.tlsDefault = request.tls;
  if (request.tlsVerify !== undefined) o.tlsVerify = request.tlsVerify;
  if (request.tlsDir !== undefined) o.tlsCertDir = request.tlsDir;
  if (request.channelDir !== undefined) o.channelTargetDir = request.channelDir;
  return o;
}

/**
 * The document as a restart starts it: every log and file output appended to (a restart
 * continues the file it wrote), every tcp/udp server on the port it had.
 */
function restartDefinition(def: DomainChardevsDef, bound: Readonly<Record<string, string>>): DomainChardevsDef {
  const copy = structuredClone(def);
  for (const { dev, alias } of hostDevices(copy)) {
    const s = dev.source;
    if (s.log !== undefined) s.log.append = 'on';
    if (s.type === 'file') s.append = 'on';
    const port = bound[alias];
    if (port === undefined) continue;
    if (s.type === 'tcp' && s.mode === 'bind') s.service = port;
    if (s.type === 'udp') s.bindService = port;
  }
  return copy;
}

export class DomainHost {
  readonly #o: DomainHostOptions;
  readonly #domains = new Map<string, Hosted>();
  /** Names being started: a second start of one is refused before anything is made. */
  readonly #claimed = new Set<string>();
  /** Records of domains not taken back (yet): kept in the state file until then. */
  #pendingRecords = new Map<string, DomainRecord>();
  #closing = false;
  readonly #web: DaemonWeb;

  constructor(options: DomainHostOptions) {
    this.#o = options;
    this.#web = new DaemonWeb(
      {
        runDir: options.runDir,
        address: options.web,
        onStarted: (server) => {
          // Domains hosted before it started (none asked for one) are on it too now.
          for (const h of this.#domains.values()) h.served.setSharedWeb(server);
          this.#o.onWeb?.(server);
        },
      },
      {
        get: (name) => {
          const h = this.#domains.get(name);
          return h !== undefined && h.state === 'running' ? h.domain : undefined;
        },
        list: () => this.#running().map((h) => h.domain),
      },
    );
  }

  #running(): Hosted[] {
    return [...this.#domains.values()].filter((h) => h.state === 'running').sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The browser console, started now (`--web`) rather than when the first domain asks. */
  async startWeb(): Promise<WebServer> {
    return this.#web.ensure();
  }

  get size(): number {
    return this.#domains.size;
  }

  /** Start a domain (and its QEMU, if the request has one); resolves once QEMU connected every port. */
  async start(request: DomainRequest): Promise<StartResult> {
    if (this.#closing) throw new ChardevError('ERR_USAGE', 'the daemon is stopping');
    return this.#start(request, undefined);
  }

  async #start(request: DomainRequest, restart: DomainRecord | undefined): Promise<StartResult> {
    const o = this.#o;
    const loaded = loadDomain(request.xml, loadOptions(request));
    const name = loaded.def.name ?? 'domain';
    if (this.#domains.has(name) || this.#claimed.has(name))
      throw new ChardevError('ERR_BACKEND_BUSY', `Requested operation is not valid: domain '${name}' is already running`);
    if (restart === undefined && this.#pendingRecords.has(name)) {
      throw new ChardevError(
        'ERR_BACKEND_BUSY',
        `Requested operation is not valid: domain '${name}' is still in the daemon's state file, waiting to be taken back`,
      );
    }
    const other = readStatus(o.runDir, name);
    if (other !== undefined)
      throw new ChardevError('ERR_BACKEND_BUSY', `Requested operation is not valid: domain '${name}' is already running (pid ${other.pid})`);
    this.#claimed.add(name);
    const started = restart?.started ?? new Date().toISOString();
    const lines: string[] = [];
    const report: ServeReporter = {
      terminal: false,
      info: (l) => {
        lines.push(l);
        o.report.detail(`${name}: ${l}`);
      },
      detail: (l) => o.report.detail(`${name}: ${l}`),
      warn: (l) => o.report.warn(`${name}: ${l}`),
    };
    let domain: Domain | undefined;
    let served: ServedDomain | undefined;
    let qemu: QemuProcess | undefined;
    try {
      const startLoaded = restart === undefined ? loaded : { ...loaded, def: restartDefinition(loaded.def, restart.bound) };
      const logDir = request.logDir ?? o.logDir;
      fs.mkdirSync(logDir, { recursive: true, mode: 0o700 });
      domain = await startDomain(startLoaded, { logDir, onError: (err) => report.warn(err.message) });
      // Where `chardev run` would start a browser console of its own, the daemon's one serves it.
      const devices = [...domain.devices.values()];
      const wanted = webAddress(undefined, devices);
      if (wanted !== undefined) {
        const server = await this.#web.ensure();
        const own = devices.find((d) => d.def.ext.web !== undefined)?.def.ext.web;
        // Said only where the document asks for another address than the one the domain gets.
        const ownPort = own?.port ?? 0;
        if (own !== undefined && ((own.listen ?? '127.0.0.1') !== server.host || (ownPort !== 0 && ownPort !== server.port))) {
          report.warn(
            `<cd:web> ${own.listen ?? ''}:${own.port ?? ''} is not used: the daemon's one browser console serves every domain (chardev daemon --web HOST:PORT)`,
          );
        }
      }
      served = await serveDomain(domain, loaded, {
        runDir: o.runDir,
        web: undefined,
        sharedWeb: this.#web.server ?? null,
        report,
        daemonSocket: o.controlSocket,
        started,
        ...(o.onEvent !== undefined ? { onEvent: (event: string, data: JsonObject) => o.onEvent?.(name, event, data) } : {}),
      });
      if (request.qemu !== undefined) {
        const q = request.qemu;
        let ports: QemuPort[];
        try {
          ports = planQemuPorts(loaded, { monitors: q.monitors ?? [], hubs: q.hubs ?? [] });
        } catch (e) {
          throw e instanceof ChardevError ? e : new ChardevError('ERR_USAGE', (e as Error).message);
        }
        for (const l of describePorts(ports)) report.info(l);
        qemu =
          restart?.qemu !== undefined
            ? await adoptQemu(domain, ports, restart.qemu)
            : await launchQemu(domain, {
                argv: q.argv,
                ports,
                runDir: o.runDir,
                supervision: 'detached',
                ...(q.syntax !== undefined ? { syntax: q.syntax } : {}),
                ...(q.cwd !== undefined ? { cwd: q.cwd } : {}),
              });
        report.info(
          `qemu: ${path.basename(q.argv[0] ?? 'qemu')} ${restart?.qemu !== undefined ? 'taken back' : 'started'} (pid ${qemu.pid}); its output goes to ${domain.domainLog().path}`,
        );
        await qemu.ready;
        report.info(`qemu: every device connected (${ports.length} port${ports.length === 1 ? '' : 's'} and the control socket)`);
        served.setQemuPid(qemu.pid);
      }
    } catch (e) {
      // All or nothing: a QEMU that started is stopped, the devices and sockets go.
      if (qemu !== undefined && restart === undefined) await qemu.stop(QUIT_TIMEOUT_MS);
      else qemu?.release();
      if (served !== undefined) await served.close();
      else await domain?.stop();
      this.#claimed.delete(name);
      throw e;
    }
    const hosted: Hosted = { state: 'running', name, started, request, loaded, domain, served, qemu };
    this.#domains.set(name, hosted);
    // The browser console may have started while this domain did (another domain asked).
    const web = this.#web.server;
    if (web !== undefined) served.setSharedWeb(web);
    this.#claimed.delete(name);
    this.#pendingRecords.delete(name);
    this.#save();
    if (this.#closing) {
      // The daemon stopped while this one started: it is let go like the others (in the state file).
      hosted.state = 'stopping';
      qemu?.release();
      await served.close();
      this.#domains.delete(name);
      throw new ChardevError('ERR_USAGE', 'the daemon is stopping');
    }
    if (qemu !== undefined) {
      const q = qemu;
      void q.exited.then((exit) => this.#qemuExited(hosted, exit));
    }
    o.onChange?.('started', name);
    return { name, lines, ...(qemu !== undefined ? { qemuPid: qemu.pid } : {}) };
  }

  /** QEMU ended by itself (the guest powered off, QEMU failed): the domain stops, as `chardev qemu` does. */
  async #qemuExited(hosted: Hosted, exit: QemuExit): Promise<void> {
    if (hosted.state !== 'running') return;
    hosted.state = 'stopping';
    const how = exit.status === 0 ? 'QEMU exited' : qemuExitMessage(hosted.qemu?.argv[0] ?? 'qemu', exit);
    this.#o.report.info(`${hosted.name}: ${how}; stopping the domain`);
    hosted.qemu = undefined;
    await this.#teardown(hosted);
  }

  /** Stop a domain: its QEMU (QMP quit), then its devices (drained) and sockets. */
  async stop(name: string, timeoutMs = QUIT_TIMEOUT_MS): Promise<QemuExit | undefined> {
    const hosted = this.#domains.get(name);
    if (hosted === undefined) throw new ChardevError('ERR_USAGE', `failed to get domain '${name}'`);
    if (hosted.state === 'stopping') throw new ChardevError('ERR_USAGE', `Requested operation is not valid: domain '${name}' is stopping`);
    hosted.state = 'stopping';
    let exit: QemuExit | undefined;
    try {
      exit = await hosted.qemu?.stop(timeoutMs);
    } finally {
      await this.#teardown(hosted);
    }
    return exit;
  }

  /** The devices and sockets of a domain that is stopping (its QEMU ended or let go). */
  async #teardown(hosted: Hosted): Promise<void> {
    try {
      await hosted.served.close();
    } finally {
      this.#domains.delete(hosted.name);
      this.#save();
      this.#o.onChange?.('stopped', hosted.name);
    }
  }

  list(): DomainSummary[] {
    return [...this.#domains.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((h) => ({
        name: h.name,
        started: h.started,
        devices: h.domain.devices.size,
        ...(h.qemu !== undefined ? { qemuPid: h.qemu.pid } : {}),
        qmp: h.served.qmp.path,
        console: h.served.consoleSocket,
      }));
  }

  /** The domain's own QMP server, for the control socket's device commands. */
  served(name: string): ServedDomain {
    const hosted = this.#domains.get(name);
    if (hosted === undefined || hosted.state !== 'running') throw new ChardevError('ERR_USAGE', `failed to get domain '${name}'`);
    return hosted.served;
  }

  /**
   * Take back what the state file lists (a restart). Each domain on its own: one that cannot
   * start again (its QEMU ended meanwhile, a port taken) is reported and dropped, the others run.
   */
  async restore(): Promise<{ restored: string[]; dropped: string[] }> {
    const state = readState(this.#o.statePath);
    this.#pendingRecords = new Map(state.domains.map((r) => [r.name, r]));
    const restored: string[] = [];
    const dropped: string[] = [];
    await Promise.all(
      state.domains.map(async (record) => {
        try {
          await this.#start(record.request, record);
          restored.push(record.name);
        } catch (e) {
          dropped.push(record.name);
          const q = record.qemu;
          if (q !== undefined && processStartTime(q.pid) === q.startTime) {
            // Its QEMU runs on: kept in the state file for the next daemon, never left unknown.
            this.#o.report.warn(
              `${record.name}: not taken back: ${(e as Error).message}; its QEMU (pid ${q.pid}) runs on and stays in the state file for the next daemon`,
            );
          } else {
            this.#pendingRecords.delete(record.name);
            this.#o.report.warn(`${record.name}: not taken back: ${(e as Error).message}`);
          }
        }
      }),
    );
    this.#save();
    return { restored: restored.sort(), dropped: dropped.sort() };
  }

  /**
   * The daemon stops: every QEMU is let go (it keeps running and connects again to the next
   * daemon), the devices stop (their last output drained), the state file stays.
   */
  async close(): Promise<void> {
    this.#closing = true;
    this.#save();
    await Promise.all(
      [...this.#domains.values()].map(async (h) => {
        h.state = 'stopping';
        h.qemu?.release();
        await h.served.close();
      }),
    );
    this.#domains.clear();
    await this.#web.close();
  }

  #save(): void {
    const records: DomainRecord[] = [...this.#pendingRecords.values()];
    for (const h of this.#domains.values()) {
      if (h.state === 'stopping' && !this.#closing) continue;
      const bound: Record<string, string> = {};
      for (const [alias, port] of h.domain.liveState().boundServices ?? []) bound[alias] = port;
      records.push({ name: h.name, started: h.started, request: h.request, bound, ...(h.qemu !== undefined ? { qemu: h.qemu.record() } : {}) });
    }
    writeState(this.#o.statePath, { version: 1, domains: records.sort((a, b) => a.name.localeCompare(b.name)) });
  }
}
