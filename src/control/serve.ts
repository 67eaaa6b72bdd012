/**
 * Serving a started domain, the same whoever hosts it (`chardev run`, `chardev qemu`, the
 * daemon for each of its domains): the console socket, the QMP control socket, the browser
 * console when the domain asks for one, the status file, and the lines saying where each
 * host interface is. Closing it stops the domain (draining first) and everything around it.
 */
import * as path from 'node:path';
import type { LoadedDomain } from '../config/domain.ts';
import { formatDomain } from '../config/format.ts';
import type { Chardev } from '../core/chardev.ts';
import type { Domain } from '../core/domain.ts';
import { removeStatus, writeStatus, type DomainStatus } from '../core/status.ts';
import { startWebServer, type WebServer } from '../web/server.ts';
import { startConsoleServer, type ConsoleServer } from './console-server.ts';
import type { JsonObject } from './qmp-json.ts';
import { startQmpServer, type QmpServer } from './qmp.ts';

/** How long output still queued for a slow reader gets to leave after the guest exits. */
export const DRAIN_MS = 2000;

/** Where a browser console listens. */
export interface WebAddress {
  readonly host: string;
  readonly port: number;
}

/** Where the serving says what it does (the CLI's Reporter is one). */
export interface ServeReporter {
  /**
   * stdout is a terminal: only then is a secret (the web console's token) printed, so it
   * never lands in a log file or the journal.
   */
  readonly terminal: boolean;
  /** Where things are. */
  info(line: string): void;
  /** What happens (clients coming and going). */
  detail(line: string): void;
  warn(line: string): void;
}

/**
 * Where the browser console listens, or undefined for none: `--web`, else the first
 * `<cd:web>` (of a vc device first), else 127.0.0.1 on a free port when the domain has a
 * vc device (its console is only reachable there).
 */
export function webAddress(flag: WebAddress | undefined, devices: readonly Chardev[]): WebAddress | undefined {
  if (flag !== undefined) return flag;
  const vcs = devices.filter((d) => d.type === 'vc');
  const def = vcs.find((d) => d.def.ext.web !== undefined)?.def.ext.web ?? devices.find((d) => d.def.ext.web !== undefined)?.def.ext.web;
  if (vcs.length === 0 && def === undefined) return undefined;
  return { host: def?.listen ?? '127.0.0.1', port: def?.port ?? 0 };
}

/** A started domain being served: close() stops it (draining first) and everything around it. */
export interface ServedDomain {
  /** The domain's own QMP server (its control socket). */
  readonly qmp: QmpServer;
  /** Where `chardev console` attaches. */
  readonly consoleSocket: string;
  /** Say in the status file that `qemuPid` is the domain's QEMU (the daemon's, once started). */
  setQemuPid(qemuPid: number | undefined): void;
  /** The host's shared browser console started after this domain (see `sharedWeb`): say where the domain is on it. */
  setSharedWeb(server: WebServer): void;
  close(): Promise<void>;
}

export interface ServeOptions {
  readonly runDir: string;
  readonly web: WebAddress | undefined;
  /**
   * The host runs one browser console for all its domains (the daemon): the domain starts
   * none of its own, whatever `web` and its devices say, and its status points at the
   * domain's page there. null: the host has none running (yet; see setSharedWeb).
   */
  readonly sharedWeb?: WebServer | null;
  readonly report: ServeReporter;
  /** Hosted by the daemon listening there (said in the status file). */
  readonly daemonSocket?: string;
  /** The domain's QMP events, for whoever hosts it. */
  readonly onEvent?: (event: string, data: JsonObject) => void;
  /** When the domain started (ISO 8601), if before now: a daemon taking it back after a restart. */
  readonly started?: string;
}

/**
 * Serve a started domain: console socket, QMP control socket, the browser console when
 * wanted, the status file; says where each host interface is. On failure what was started
 * here is closed again (the domain itself is the caller's).
 */
export async function serveDomain(domain: Domain, loaded: LoadedDomain, options: ServeOptions): Promise<ServedDomain> {
  const { runDir, report } = options;
  let consoleServer: ConsoleServer | undefined;
  let qmpServer: QmpServer | undefined;
  let webServer: WebServer | undefined;
  let statusWritten = false;
  let status: DomainStatus | undefined;
  const shared = options.sharedWeb ?? undefined;
  const close = async (): Promise<void> => {
    if (statusWritten) removeStatus(runDir, domain.name);
    // Devices first: attached consoles are told the device stopped before their socket goes.
    await domain.stop({ drainMs: DRAIN_MS });
    await consoleServer?.close();
    await qmpServer?.close();
    await webServer?.close();
  };
  try {
    consoleServer = await startConsoleServer(domain, path.join(runDir, `${domain.name}.console`));
    qmpServer = await startQmpServer(domain, {
      path: path.join(runDir, `${domain.name}.qmp`),
      liveXml: () => formatDomain(loaded, { live: true, state: domain.liveState() }),
      inactiveXml: () => formatDomain(loaded),
      ...(options.onEvent !== undefined ? { onEvent: options.onEvent } : {}),
    });
    if (options.sharedWeb === undefined) {
      const web = webAddress(options.web, [...domain.devices.values()]);
      if (web !== undefined) webServer = await startWebServer(domain, web);
    }
    status = {
      name: domain.name,
      pid: process.pid,
      started: options.started ?? new Date().toISOString(),
      consoleSocket: consoleServer.path,
      qmpSocket: qmpServer.path,
      ...(webServer !== undefined ? { webUrl: webServer.url } : shared !== undefined ? { webUrl: shared.domainUrl(domain.name) } : {}),
      inactiveXml: formatDomain(loaded),
      liveXml: formatDomain(loaded, { live: true, state: domain.liveState() }),
      devices: [...domain.devices.values()].map((d) => ({ alias: d.alias, type: d.type, filename: d.filename, where: d.where })),
      ...(options.daemonSocket !== undefined ? { daemonSocket: options.daemonSocket } : {}),
    };
    writeStatus(runDir, status);
    statusWritten = true;
  } catch (e) {
    await consoleServer?.close();
    await qmpServer?.close();
    await webServer?.close();
    throw e;
  }
  for (const line of domain.describe()) report.info(line);
  // The token is a password: shown to a person at a terminal, never written to a log or
  // the journal. The status file (owner-only) and `chardev status` have it.
  const url = (full: string): string => (report.terminal ? full : full.replace(/\?token=[^#&]*/, ''));
  const where = report.terminal ? '' : `; token: chardev status ${domain.name}`;
  const describeWeb = (w: WebServer, domainName: string | undefined): void => {
    for (const d of domain.devices.values()) if (d.type === 'vc') report.info(`web console: ${url(w.urlFor(d.alias, domainName))} (${d.id}${where})`);
    report.info(`web console: ${url(domainName === undefined ? w.url : w.domainUrl(domainName))} (every device; others read-only${where})`);
  };
  if (webServer !== undefined) describeWeb(webServer, undefined);
  if (shared !== undefined) describeWeb(shared, domain.name);
  report.info(`console: chardev console ${domain.name} [DEVICE] (socket ${consoleServer.path})`);
  report.info(`control: ${qmpServer.path} (QMP; chardev status ${domain.name})`);
  for (const d of domain.devices.values()) {
    d.on('client', (change, client) => {
      if (change === 'attached') report.detail(`${d.id}: ${client.kind} client ${client.label} attached as ${client.role}`);
      else if (change === 'detached') report.detail(`${d.id}: ${client.kind} client ${client.label} left`);
      else if (change === 'role') report.detail(`${d.id}: ${client.kind} client ${client.label} is now ${client.role}`);
      else report.detail(`${d.id}: ${client.kind} client ${client.label} took nothing for the stall limit; released`);
    });
  }
  const qmp = qmpServer;
  const consoleSocket = consoleServer.path;
  let sharedNow = shared;
  return {
    qmp,
    consoleSocket,
    setQemuPid: (qemuPid) => {
      if (status === undefined || !statusWritten) return;
      const { qemuPid: _old, ...rest } = status;
      status = qemuPid === undefined ? rest : { ...rest, qemuPid };
      writeStatus(runDir, status);
    },
    setSharedWeb: (server) => {
      if (status === undefined || !statusWritten || sharedNow === server || options.sharedWeb === undefined) return;
      sharedNow = server;
      status = { ...status, webUrl: server.domainUrl(domain.name) };
      writeStatus(runDir, status);
      describeWeb(server, domain.name);
    },
    close,
  };
}
