/**
 * The daemon's state file: what it hosts, so that the next daemon (a restart, an upgrade,
 * systemd's Restart=) takes every domain back: the document each was started from, the
 * ports its tcp/udp servers were bound to, the QEMU it runs (pid, start time, socket
 * directory). Owner-only, in the daemon's own directory under the run directory; written
 * whole (tmp + rename) on every change, so a crash leaves the previous or the next version.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArgSyntax } from '../qemu/command.ts';
import type { QemuRecord } from '../qemu/launch.ts';

/** Where chardev qemu's QEMU options go in a start request and in the state file. */
export interface QemuRequest {
  /** The QEMU binary and the user's arguments. */
  readonly argv: readonly string[];
  readonly monitors?: readonly string[];
  readonly hubs?: ReadonlyArray<readonly string[]>;
  readonly syntax?: ArgSyntax;
  /** QEMU's working directory: the caller's, so relative paths in its arguments mean what they said. */
  readonly cwd?: string;
}

/** What x-domain-start is given. */
export interface DomainRequest {
  /** The domain document. */
  readonly xml: string;
  /** Where it came from, for messages (`FILE:LINE: …`). */
  readonly file?: string;
  readonly logDir?: string;
  readonly tls?: boolean;
  readonly tlsVerify?: boolean;
  readonly tlsDir?: string;
  readonly channelDir?: string;
  readonly qemu?: QemuRequest;
}

/** One hosted domain as the state file keeps it. */
export interface DomainRecord {
  readonly name: string;
  /** ISO 8601, the first start (a restart keeps it). */
  readonly started: string;
  readonly request: DomainRequest;
  /** Ports the tcp/udp servers were bound to (port 0 in the document), by alias: a restart binds them again. */
  readonly bound: Readonly<Record<string, string>>;
  readonly qemu?: QemuRecord;
}

export interface DaemonState {
  readonly version: 1;
  readonly domains: readonly DomainRecord[];
}

export function readState(file: string): DaemonState {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, domains: [] };
    throw e;
  }
  const state = JSON.parse(text) as DaemonState;
  if (state.version !== 1 || !Array.isArray(state.domains)) throw new Error(`${file}: not a chardev daemon state file (version ${String(state.version)})`);
  return state;
}

export function writeState(file: string, state: DaemonState): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(state, null, 1)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** The daemon's directory in a run directory: its control socket and state file. */
export function daemonDir(runDir: string): string {
  return path.join(runDir, 'daemon');
}

/** The daemon's control socket (QMP) for a run directory. */
export function daemonSocketPath(runDir: string): string {
  return path.join(daemonDir(runDir), 'control.qmp');
}

export function daemonStatePath(runDir: string): string {
  return path.join(daemonDir(runDir), 'state.json');
}
