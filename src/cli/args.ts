/**
 * Argument helpers that `chardev run` and `chardev qemu` share and that must stay cheap to
 * load (they run before any of the library is imported): FILE vs COMMAND, addresses, and
 * where logs and the run directory go.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import { CliError, EXIT_USAGE } from './io.ts';

export interface WebAddress {
  readonly host: string;
  readonly port: number;
}

/** HOST:PORT (`[v6]:PORT`; a bare PORT means 127.0.0.1), or undefined if it is not one. */
function parseHostPort(s: string): WebAddress | undefined {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(s) ?? /^([^\s:/[\]]+):(\d+)$/.exec(s) ?? /^()(\d+)$/.exec(s);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || !(port <= 65535)) return undefined;
  return { host: m[1] === '' || m[1] === undefined ? '127.0.0.1' : m[1], port };
}

/** `--web HOST:PORT` (`[v6]:PORT`; a bare PORT means 127.0.0.1). */
export function parseWebAddress(s: string, command = 'run'): WebAddress {
  const a = parseHostPort(s);
  if (a === undefined) throw new CliError(`${command}: --web must be HOST:PORT (e.g. 127.0.0.1:8080; port 0 picks a free one), not '${s}'`, EXIT_USAGE);
  return a;
}

/** `--telnet HOST:PORT` (`[v6]:PORT`; a bare PORT means 127.0.0.1; port 0 picks a free one). */
export function parseTelnetAddress(s: string): WebAddress {
  const a = parseHostPort(s);
  if (a === undefined) throw new CliError(`run: --telnet must be HOST:PORT (e.g. 127.0.0.1:4555; port 0 picks a free one), not '${s}'`, EXIT_USAGE);
  return a;
}

/**
 * The first directory systemd gave us in `$NAME` (`RuntimeDirectory=`, `LogsDirectory=`
 * set `$RUNTIME_DIRECTORY`, `$LOGS_DIRECTORY`: absolute paths, colon-separated when several).
 */
function systemdDirectory(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const first = env[name]?.split(':')[0];
  return first !== undefined && path.isAbsolute(first) ? first : undefined;
}

/** `$LOGS_DIRECTORY` (systemd), else `$XDG_STATE_HOME/chardev`, else `~/.local/state/chardev`. */
export function defaultLogDir(env: NodeJS.ProcessEnv = process.env): string {
  const systemd = systemdDirectory(env, 'LOGS_DIRECTORY');
  if (systemd !== undefined) return systemd;
  const state = env['XDG_STATE_HOME'];
  const base = state !== undefined && path.isAbsolute(state) ? state : path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'chardev');
}

/**
 * `$RUNTIME_DIRECTORY` (systemd), else `$XDG_RUNTIME_DIR/chardev`, else `/tmp/chardev-UID`
 * — the same choice as the library's `defaultRunDir`, plus systemd's.
 */
export function cliRunDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined) return path.resolve(flag);
  const systemd = systemdDirectory(env, 'RUNTIME_DIRECTORY');
  if (systemd !== undefined) return systemd;
  const xdg = env['XDG_RUNTIME_DIR'];
  if (xdg !== undefined && path.isAbsolute(xdg)) return path.join(xdg, 'chardev');
  return path.join(os.tmpdir(), `chardev-${os.userInfo().uid}`);
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
  if (before > 1) throw new CliError(`${command}: expected at most one FILE before '--', got ${operands.slice(0, before).join(' ')}`, EXIT_USAGE);
  const file = before === 1 ? operands[0] : undefined;
  return file === undefined ? { command: after } : { file, command: after };
}
