/**
 * What `chardev run` and `chardev qemu` share once the arguments are read: the log and run
 * directories, and where a device reaches the network. Serving the started domain is
 * src/control/serve.ts (the daemon serves each of its domains the same way).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Chardev } from '../core/chardev.ts';
import { readStatus } from '../core/status.ts';
import { defaultLogDir } from './args.ts';
import { CliError, EXIT_CHARDEV } from './io.ts';

export { defaultLogDir, parseWebAddress, rootRawArgs, splitOperands, type WebAddress } from './args.ts';
export { DRAIN_MS, serveDomain, webAddress, type ServedDomain, type ServeOptions } from '../control/serve.ts';

/** Create the log directory owner-only (logs hold everything the guest printed); returns it absolute. */
export function ensureLogDir(dir: string | undefined): string {
  const logDir = path.resolve(dir ?? defaultLogDir());
  fs.mkdirSync(logDir, { recursive: true, mode: 0o700 });
  return logDir;
}

/** Refuse to start a domain whose name is already running (its status file names a live process). */
export function refuseRunning(runDir: string, name: string): void {
  const running = readStatus(runDir, name);
  if (running !== undefined) throw new CliError(`Requested operation is not valid: domain '${name}' is already running (pid ${running.pid})`, EXIT_CHARDEV);
}

/**
 * Where a device reaches the network, for the warning before a shell is served on it:
 * a listening tcp socket, a tcp client (the server it connects to gets the shell), udp.
 */
export function networkReach(d: Chardev): string | undefined {
  const s = d.def.source;
  if (s.type === 'tcp') {
    const port = d.boundService ?? s.service ?? '?';
    const at = `${s.host ?? '0.0.0.0'}:${port}`;
    return s.mode === 'bind' ? `anyone who can reach ${s.protocol} ${at}` : `the server at ${at}`;
  }
  if (s.type === 'udp')
    return `whoever sends from ${s.connectHost ?? 'localhost'}:${s.connectService ?? '?'} to udp ${s.bindHost ?? '0.0.0.0'}:${d.boundService ?? s.bindService ?? '?'}`;
  return undefined;
}
