/**
 * What `chardev run` and `chardev qemu` share: where logs and the run directory are, the
 * command-line split between FILE and the guest command, and serving a started domain (the
 * console socket, the QMP control socket, the browser console, the status file) until it
 * stops.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { LoadedDomain } from '../config/domain.ts';
import { formatDomain } from '../config/format.ts';
import type { Chardev } from '../core/chardev.ts';
import type { Domain } from '../core/domain.ts';
import { readStatus, removeStatus, writeStatus } from '../core/status.ts';
import { startConsoleServer, type ConsoleServer } from '../control/console-server.ts';
import { startQmpServer, type QmpServer } from '../control/qmp.ts';
import { startWebServer, type WebServer } from '../web/server.ts';
import { CliError } from './io.ts';

/** How long output still queued for a slow reader gets to leave after the guest exits. */
export const DRAIN_MS = 2000;

export interface WebAddress {
  readonly host: string;
  readonly port: number;
}

/** `--web HOST:PORT` (`[v6]:PORT`; a bare PORT means 127.0.0.1). */
export function parseWebAddress(s: string, command = 'run'): WebAddress {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(s) ?? /^([^\s:/[\]]+):(\d+)$/.exec(s) ?? /^()(\d+)$/.exec(s);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || !(port <= 65535)) throw new CliError(`${command}: --web must be HOST:PORT (e.g. 127.0.0.1:8080; port 0 picks a free one), not '${s}'`, 2);
  return { host: m[1] === '' || m[1] === undefined ? '127.0.0.1' : m[1], port };
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

/** `$XDG_STATE_HOME/chardev`, else `~/.local/state/chardev` (XDG base directory spec). */
export function defaultLogDir(env: NodeJS.ProcessEnv = process.env): string {
  const state = env['XDG_STATE_HOME'];
  const base = state !== undefined && path.isAbsolute(state) ? state : path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'chardev');
}

/** Create the log directory owner-only (logs hold everything the guest printed); returns it absolute. */
export function ensureLogDir(dir: string | undefined): string {
  const logDir = path.resolve(dir ?? defaultLogDir());
  fs.mkdirSync(logDir, { recursive: true, mode: 0o700 });
  return logDir;
}

/** The argv the root command was parsed from; commander drops `--` from operands, which we need to split FILE from COMMAND. */
export function rootRawArgs(cmd: Command): string[] {
  let root: Command = cmd;
  while (root.parent !== null) root = root.parent;
  const raw = (root as unknown as { rawArgs?: unknown }).rawArgs;
  return Array.isArray(raw) ? raw.filter((a): a is string => typeof a === 'string') : [];
}

/** Split commander's operands into FILE and COMMAND using where `--` was. */
export function splitOperands(operands: readonly string[], raw: readonly string[], command = 'run'): { file?: string; command: string[] } {
  const dash = raw.indexOf('--');
  if (dash < 0) {
    const [file, ...rest] = operands;
    return file === undefined ? { command: rest } : { file, command: rest };
  }
  const after = raw.slice(dash + 1);
  const before = operands.length - after.length;
  if (before > 1) throw new CliError(`${command}: expected at most one FILE before '--', got ${operands.slice(0, before).join(' ')}`, 2);
  const file = before === 1 ? operands[0] : undefined;
  return file === undefined ? { command: after } : { file, command: after };
}

/** Refuse to start a domain whose name is already running (its status file names a live process). */
export function refuseRunning(runDir: string, name: string): void {
  const running = readStatus(runDir, name);
  if (running !== undefined) throw new CliError(`Requested operation is not valid: domain '${name}' is already running (pid ${running.pid})`);
}

/** A started domain being served: close() stops it (draining first) and everything around it. */
export interface ServedDomain {
  close(): Promise<void>;
}

export interface ServeOptions {
  readonly runDir: string;
  readonly web: WebAddress | undefined;
  readonly write: (s: string) => void;
}

/**
 * Serve a started domain: console socket, QMP control socket, the browser console when
 * wanted, the status file; prints where each host interface is. On failure what was started
 * here is closed again (the domain itself is the caller's).
 */
export async function serveDomain(domain: Domain, loaded: LoadedDomain, options: ServeOptions): Promise<ServedDomain> {
  const { runDir, write } = options;
  let consoleServer: ConsoleServer | undefined;
  let qmpServer: QmpServer | undefined;
  let webServer: WebServer | undefined;
  let statusWritten = false;
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
    });
    const web = webAddress(options.web, [...domain.devices.values()]);
    if (web !== undefined) webServer = await startWebServer(domain, web);
    writeStatus(runDir, {
      name: domain.name,
      pid: process.pid,
      started: new Date().toISOString(),
      consoleSocket: consoleServer.path,
      qmpSocket: qmpServer.path,
      ...(webServer !== undefined ? { webUrl: webServer.url } : {}),
      inactiveXml: formatDomain(loaded),
      liveXml: formatDomain(loaded, { live: true, state: domain.liveState() }),
      devices: [...domain.devices.values()].map((d) => ({ alias: d.alias, type: d.type, filename: d.filename, where: d.where })),
    });
    statusWritten = true;
  } catch (e) {
    await consoleServer?.close();
    await qmpServer?.close();
    await webServer?.close();
    throw e;
  }
  for (const line of domain.describe()) write(`${line}\n`);
  if (webServer !== undefined) {
    for (const d of domain.devices.values()) if (d.type === 'vc') write(`web console: ${webServer.urlFor(d.alias)} (${d.id})\n`);
    write(`web console: ${webServer.url} (every device; others read-only)\n`);
  }
  write(`console: chardev console ${domain.name} [DEVICE] (socket ${consoleServer.path})\n`);
  write(`control: ${qmpServer.path} (QMP; chardev status ${domain.name})\n`);
  return { close };
}
