/**
 * The daemon's browser console: ONE web server for every domain it hosts (each at
 * `/domain/NAME/`, `/` listing them), instead of a server and a port per domain.
 *
 * With `chardev daemon --web HOST:PORT` it starts with the daemon. Without, it starts the
 * first time a hosted domain asks for a browser console (a vc device or `<cd:web>`), on
 * 127.0.0.1 and a free port, as `chardev run` does for a vc device; a daemon whose domains
 * never ask listens on no port at all.
 *
 * Across restarts: the token and the port are kept in RUNDIR/daemon/web.json (owner-only,
 * like the state file), so a bookmarked URL and the browser's cookie keep working. A fixed
 * `--web` port is that port; a free one is the previous port again if it is still free.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { WebAddress } from '../control/serve.ts';
import { ChardevError } from '../errors.ts';
import { startWebServer, type WebDomains, type WebServer } from '../web/server.ts';
import { daemonDir } from './state.ts';

/** What web.json keeps for the next daemon. */
interface SavedWeb {
  readonly version: 1;
  readonly host: string;
  readonly port: number;
  readonly token: string;
}

/** Where the daemon keeps its browser console's token and port (owner-only). */
export function daemonWebPath(runDir: string): string {
  return path.join(daemonDir(runDir), 'web.json');
}

/** The previous daemon's web.json, or undefined (none, or not one we can use: a new token then). */
function readSaved(file: string): SavedWeb | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<SavedWeb>;
    if (s.version !== 1 || typeof s.host !== 'string' || typeof s.port !== 'number' || typeof s.token !== 'string') return undefined;
    if (!/^[A-Za-z0-9_-]{16,}$/.test(s.token) || !Number.isInteger(s.port) || s.port <= 0 || s.port > 65535) return undefined;
    return { version: 1, host: s.host, port: s.port, token: s.token };
  } catch {
    return undefined;
  }
}

function writeSaved(file: string, saved: SavedWeb): void {
  // tmp + rename with mode 0600 from the first byte: the token is never readable by others, even briefly.
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(saved)}\n`, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

export interface DaemonWebOptions {
  readonly runDir: string;
  /** `--web`; undefined: 127.0.0.1 and a free port (the previous one if still free). */
  readonly address: WebAddress | undefined;
  /** The server listens (once per daemon, whoever asked first). */
  readonly onStarted?: (server: WebServer) => void;
}

export class DaemonWeb {
  readonly #o: DaemonWebOptions;
  readonly #domains: WebDomains;
  #starting: Promise<WebServer> | undefined;
  #server: WebServer | undefined;
  #closed = false;

  constructor(options: DaemonWebOptions, domains: WebDomains) {
    this.#o = options;
    this.#domains = domains;
  }

  /** The running server, or undefined while none was needed yet. */
  get server(): WebServer | undefined {
    return this.#server;
  }

  /** Start the server if it is not running (concurrent callers share one start). */
  ensure(): Promise<WebServer> {
    if (this.#closed) return Promise.reject(new ChardevError('ERR_USAGE', 'the daemon is stopping'));
    this.#starting ??= this.#start().catch((e: unknown) => {
      // A failed start (the port taken) is tried again by the next domain that asks.
      this.#starting = undefined;
      throw e;
    });
    return this.#starting;
  }

  async #start(): Promise<WebServer> {
    const file = daemonWebPath(this.#o.runDir);
    const saved = readSaved(file);
    const host = this.#o.address?.host ?? '127.0.0.1';
    const fixed = this.#o.address !== undefined && this.#o.address.port !== 0 ? this.#o.address.port : undefined;
    const token = saved?.token;
    const open = (port: number): Promise<WebServer> => startWebServer(this.#domains, { host, port, ...(token !== undefined ? { token } : {}) });
    let server: WebServer;
    if (fixed !== undefined) server = await open(fixed);
    else if (saved !== undefined && saved.host === host) {
      // The port the last daemon had, so open tabs reconnect and bookmarks work; else any free one.
      try {
        server = await open(saved.port);
      } catch (e) {
        if (!(e instanceof ChardevError && e.code === 'ERR_BACKEND_BUSY')) throw e;
        server = await open(0);
      }
    } else server = await open(0);
    try {
      writeSaved(file, { version: 1, host, port: server.port, token: server.token });
    } catch (e) {
      await server.close();
      throw e;
    }
    if (this.#closed) {
      await server.close();
      throw new ChardevError('ERR_USAGE', 'the daemon is stopping');
    }
    this.#server = server;
    this.#o.onStarted?.(server);
    return server;
  }

  /** Close the server (the daemon stops); web.json stays for the next daemon. */
  async close(): Promise<void> {
    this.#closed = true;
    const starting = this.#starting;
    if (starting === undefined) return;
    try {
      await (await starting).close();
    } catch {
      // It never started: nothing to close.
    }
  }
}
