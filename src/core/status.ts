/**
 * Where a running domain says what it is, for other chardev processes: one owner-only
 * status file per domain in the run directory, like libvirt's `/run/libvirt/qemu/NAME.xml`.
 * `chardev dumpxml` reads it for a running domain; it holds both XML forms, so the
 * reader never needs the original file or the process. A file whose pid is gone is stale.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ChardevError } from '../errors.ts';

export interface DomainStatus {
  readonly name: string;
  readonly pid: number;
  /** ISO 8601. */
  readonly started: string;
  /** The document the domain was started from, as `dumpxml --inactive` prints it. */
  readonly inactiveXml: string;
  /** As `dumpxml --live` prints it: pty paths, tty=, aliases, bound ports. */
  readonly liveXml: string;
  /** Where `chardev console` attaches (console-protocol.ts). */
  readonly consoleSocket?: string;
  /** The QMP control socket. */
  readonly qmpSocket?: string;
  /** The browser console's index page, access token included (the file is owner-only). */
  readonly webUrl?: string;
  /** The control socket of the daemon hosting the domain (`pid` is the daemon's); absent for a domain's own process. */
  readonly daemonSocket?: string;
  /** The QEMU the daemon runs for the domain. */
  readonly qemuPid?: number;
  readonly devices: ReadonlyArray<{ readonly alias: string; readonly type: string; readonly filename: string; readonly where: string }>;
}

/** `$XDG_RUNTIME_DIR/chardev`, else `/tmp/chardev-UID`. */
export function defaultRunDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env['XDG_RUNTIME_DIR'];
  if (xdg !== undefined && path.isAbsolute(xdg)) return path.join(xdg, 'chardev');
  return path.join(os.tmpdir(), `chardev-${os.userInfo().uid}`);
}

/**
 * Create the run directory owner-only. In a shared /tmp someone else may have made it
 * first to read our status or plant sockets, so an existing one must be ours and private.
 */
export function ensureRunDir(dir: string): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
    throw new ChardevError('ERR_USAGE', `run directory ${dir} must be a directory owned by this user with mode 0700`);
  }
  return dir;
}

function statusPath(dir: string, name: string): string {
  if (name.includes('/') || name === '' || name === '.' || name === '..') {
    throw new ChardevError('ERR_USAGE', `'${name}' cannot be a domain name here (it would not be a plain file name)`);
  }
  return path.join(dir, `${name}.json`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, it is just not ours.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The status of a running domain, or undefined (a stale file is removed on the way). */
export function readStatus(dir: string, name: string): DomainStatus | undefined {
  const file = statusPath(dir, name);
  let status: DomainStatus;
  try {
    status = JSON.parse(fs.readFileSync(file, 'utf8')) as DomainStatus;
  } catch {
    return undefined;
  }
  if (typeof status.pid !== 'number' || !alive(status.pid)) {
    fs.rmSync(file, { force: true });
    return undefined;
  }
  return status;
}

/** Running domains' names, sorted. */
export function listStatus(dir: string): string[] {
  let names: string[];
  try {
    names = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -5));
  } catch {
    return [];
  }
  return names.filter((n) => readStatus(dir, n) !== undefined).sort();
}

/**
 * Claim the name and write the status, atomically (tmp + rename). A domain of the same
 * name that is still running is an error, as libvirt refuses to start a running domain.
 */
export function writeStatus(dir: string, status: DomainStatus): string {
  const file = statusPath(dir, status.name);
  const other = readStatus(dir, status.name);
  if (other !== undefined && other.pid !== process.pid) {
    throw new ChardevError('ERR_BACKEND_BUSY', `Requested operation is not valid: domain '${status.name}' is already running (pid ${other.pid})`);
  }
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(status, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
  return file;
}

/** Remove our own status file (not one a later process of the same name wrote). */
export function removeStatus(dir: string, name: string): void {
  const file = statusPath(dir, name);
  try {
    const status = JSON.parse(fs.readFileSync(file, 'utf8')) as DomainStatus;
    if (status.pid === process.pid) fs.rmSync(file, { force: true });
  } catch {
    // Already gone.
  }
}
