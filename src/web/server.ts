/**
 * The browser console: an HTTP server whose page is one window per domain — a tab per device
 * (xterm.js, served from the package itself), switched with Ctrl+Alt+1…9 — and a WebSocket
 * per device the window has opened. Each is one hub client of its device, like a
 * `chardev console` session: the history first, then live output; its keys reach the guest
 * only while it is the writer. `vc` devices are interactive; every other device can be
 * watched read-only. `/console/ALIAS` is the same page with one device alone.
 *
 * Security: a token generated at start is required on every request (query `?token=` or
 * the cookie the page load sets) — wrong or missing gets 401, also on the WebSocket
 * upgrade; a WebSocket's Origin must be this server's own (else 403), so another site open
 * in the same browser cannot drive the guest. Only a fixed list of static files is served.
 *
 * Paths, under a domain's prefix (`/`, or `/domain/NAME/` for any domain the server has):
 * `` (the window), `console/ALIAS` (one device), `devices` (JSON: the window's tabs),
 * `ws/ALIAS` (the WebSocket). docs/browser.md is the wire reference: binary frames are guest
 * bytes both ways; text frames are JSON control messages (hello, notice, role, counters,
 * error from the server; resize, break, take, counters from the page).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, WebSocket } from 'ws';
import type { Chardev } from '../core/chardev.ts';
import type { Domain } from '../core/domain.ts';
import { ChardevError } from '../errors.ts';
import { WIRE_VERSION, serveTab } from './tab.ts';

export { CLOSE_DEVICE_GONE, CLOSE_HUB_FULL, WIRE_VERSION, parsePageMessage } from './tab.ts';

/**
 * The domains a server shows. One domain is the common case (`startWebServer(domain)`); a
 * process with several passes this: each is at `/domain/NAME/`, and `/` is the default
 * domain's window, or a list of the domains when there is no default.
 */
export interface WebDomains {
  /** The domain at `/`; undefined: `/` lists `list()`. */
  readonly default?: Domain | undefined;
  get(name: string): Domain | undefined;
  list(): readonly Domain[];
}

/** Where a request's path leads. */
type Route =
  | { readonly kind: 'domain'; readonly domain: Domain; readonly rest: string }
  | { readonly kind: 'list' }
  | { readonly kind: 'redirect'; readonly to: string };

function isDomain(d: Domain | WebDomains): d is Domain {
  return 'devices' in d && 'device' in d;
}

export interface WebServerOptions {
  /** Address to bind; default 127.0.0.1 (loopback only). */
  readonly host?: string;
  /** Default 0: a free port (see `url`). */
  readonly port?: number;
  /** The access token; default: generated now (24 random bytes, base64url). */
  readonly token?: string;
}

export interface WebServer {
  /** The index page, token included: `http://127.0.0.1:PORT/?token=…`. */
  readonly url: string;
  /** `http://HOST:PORT` (what a WebSocket's Origin must be). */
  readonly origin: string;
  readonly host: string;
  readonly port: number;
  readonly token: string;
  /** The console page of one device (of the default domain, or of `domain`), token included. */
  urlFor(alias: string, domain?: string): string;
  /** A domain's window (`/domain/NAME/`), token included: where a server of several domains sends a user for one. */
  domainUrl(domain: string): string;
  /** Drop every open tab's connection at once, without a closing handshake (as a network failure would). Returns how many. */
  dropConnections(): number;
  /** Close every tab (going away) and the listening socket. Idempotent. */
  close(): Promise<void>;
}

/** Keystrokes and pastes; a tab sending more in one frame is cut off. */
const MAX_IN_FRAME = 1024 * 1024;
/** A tab that does not answer a ping within this long is dropped. */
const PING_MS = 30_000;
/** How long tabs get to finish the closing handshake at close(). */
const CLOSE_GRACE_MS = 1000;

const WEB_DIR = path.dirname(fileURLToPath(import.meta.url));

/** The only files under /static/: name → [file, content type]. Nothing else is ever read. */
function staticFiles(): ReadonlyMap<string, readonly [string, string]> {
  const require = createRequire(import.meta.url);
  // `main` is lib/*.js in both packages; their roots are one level up.
  const xterm = path.dirname(path.dirname(require.resolve('@xterm/xterm')));
  const fit = path.dirname(path.dirname(require.resolve('@xterm/addon-fit')));
  const js = 'text/javascript; charset=utf-8';
  const css = 'text/css; charset=utf-8';
  return new Map([
    ['xterm.mjs', [path.join(xterm, 'lib', 'xterm.mjs'), js]],
    ['xterm.css', [path.join(xterm, 'css', 'xterm.css'), css]],
    ['addon-fit.mjs', [path.join(fit, 'lib', 'addon-fit.mjs'), js]],
    ['console.js', [path.join(WEB_DIR, 'static', 'console.js'), js]],
    ['console.css', [path.join(WEB_DIR, 'static', 'console.css'), css]],
  ]);
}
const CONSOLE_HTML = path.join(WEB_DIR, 'static', 'console.html');

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
/** `host:port` as it appears in a URL (IPv6 in brackets). */
function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function sameToken(given: string | undefined, token: string): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Refuse an upgrade with a plain HTTP status; the socket never becomes a WebSocket. */
function refuseUpgrade(socket: Duplex, status: number, text: string): void {
  socket.on('error', () => {});
  if (socket.writable) {
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
    );
  }
  setTimeout(() => socket.destroy(), 1000).unref();
}

export async function startWebServer(source: Domain | WebDomains, options: WebServerOptions = {}): Promise<WebServer> {
  const domains: WebDomains = isDomain(source) ? { default: source, get: (n) => (n === source.name ? source : undefined), list: () => [source] } : source;
  const host = options.host ?? '127.0.0.1';
  if (host === '' || /[\s/]/.test(host)) throw new ChardevError('ERR_USAGE', `web console: '${host}' is not an address to listen on`);
  const token = options.token ?? randomBytes(24).toString('base64url');
  if (!/^[A-Za-z0-9_-]{16,}$/.test(token)) throw new ChardevError('ERR_USAGE', 'web console: the token must be at least 16 URL-safe characters');
  const files = staticFiles();
  const cache = new Map<string, Buffer>();
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_IN_FRAME, perMessageDeflate: false });
  const server = http.createServer();
  let port = 0;
  let closing: Promise<void> | undefined;
  // Dead tabs (a laptop lid shut) would hold a client slot for ever: ping, and drop the silent.
  const alive = new WeakSet<WebSocket>();
  // Ports do not separate cookies, so the name carries ours.
  const cookieName = (): string => `chardev_token_${port}`;
  const origin = (): string => `http://${hostPort(host, port)}`;
  /** Where links point: the bound address, or for a wildcard one this machine's name. */
  const urlHost = (): string => hostPort(isWildcard(host) ? os.hostname() : host, port);

  /** Origins a page of ours can have: the bound address, and loopback's other names when loopback. */
  const originAllowed = (originHeader: string | undefined, hostHeader: string | undefined): boolean => {
    if (originHeader === undefined) return false;
    const allowed = new Set([origin(), `http://${urlHost()}`]);
    if (isLoopback(host)) for (const h of ['127.0.0.1', 'localhost', '::1']) allowed.add(`http://${hostPort(h, port)}`);
    // Listening everywhere, the page's own address is whatever the browser used (the token still guards).
    if (isWildcard(host) && hostHeader !== undefined) allowed.add(`http://${hostHeader.toLowerCase()}`);
    return allowed.has(originHeader.toLowerCase());
  };

  /** The address the page's WebSocket goes to: the one the browser used, if it looks like one. */
  const wsHost = (req: http.IncomingMessage): string => {
    const h = req.headers.host;
    return h !== undefined && /^[A-Za-z0-9.:[\]-]+$/.test(h) ? h : urlHost();
  };

  const authorized = (req: http.IncomingMessage, url: URL): boolean =>
    sameToken(url.searchParams.get('token') ?? undefined, token) || sameToken(cookieValue(req.headers.cookie, cookieName()), token);

  const parse = (req: http.IncomingMessage): URL | undefined => {
    try {
      return new URL(req.url ?? '/', 'http://chardev.invalid');
    } catch {
      return undefined;
    }
  };

  const headers = (req: http.IncomingMessage, type: string): http.OutgoingHttpHeaders => ({
    'Content-Type': type,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    // The token is in the URL: never hand it to another site.
    'Referrer-Policy': 'no-referrer',
    'X-Frame-Options': 'DENY',
    // xterm.js sets inline styles; everything else comes from here.
    'Content-Security-Policy': `default-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self' ws://${wsHost(req)}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`,
  });

  const reply = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    status: number,
    type: string,
    body: string | Buffer,
    extra: http.OutgoingHttpHeaders = {},
  ): void => {
    const data = typeof body === 'string' ? Buffer.from(body) : body;
    res.writeHead(status, { ...headers(req, type), 'Content-Length': data.length, ...extra });
    res.end(req.method === 'HEAD' ? undefined : data);
  };
  const text = (req: http.IncomingMessage, res: http.ServerResponse, status: number, msg: string): void =>
    reply(req, res, status, 'text/plain; charset=utf-8', `${msg}\n`);

  const readCached = (file: string): Buffer => {
    let b = cache.get(file);
    if (b === undefined) {
      b = fs.readFileSync(file);
      cache.set(file, b);
    }
    return b;
  };

  const findDevice = (domain: Domain, alias: string): Chardev | undefined => {
    try {
      return domain.device(alias);
    } catch {
      return undefined;
    }
  };

  /** `/` for the default domain, `/domain/NAME/` for the others. */
  const prefixOf = (domain: Domain): string => (domains.default === domain ? '/' : `/domain/${encodeURIComponent(domain.name)}/`);

  const consoleUrl = (alias: string, domainName?: string): string => {
    const d = domainName === undefined ? domains.default : domains.get(domainName);
    const prefix = d === undefined ? `/domain/${encodeURIComponent(domainName ?? '')}/` : prefixOf(d);
    return `http://${urlHost()}${prefix}console/${encodeURIComponent(alias)}?token=${token}`;
  };

  /** Where a path leads: a domain and the rest of the path (`/`, `/console/ALIAS`, …); undefined: nowhere. */
  const route = (p: string): Route | undefined => {
    const m = /^\/domain\/([^/]+)(\/.*)?$/.exec(p);
    if (m === null) {
      if (domains.default !== undefined) return { kind: 'domain', domain: domains.default, rest: p };
      return p === '/' || p === '/index.html' ? { kind: 'list' } : undefined;
    }
    let name: string;
    try {
      name = decodeURIComponent(m[1] ?? '');
    } catch {
      return undefined;
    }
    const domain = domains.get(name);
    if (domain === undefined) return undefined;
    // The page finds its paths relative to its own: the prefix ends in a slash.
    if (m[2] === undefined) return { kind: 'redirect', to: `/domain/${m[1] ?? ''}/` };
    return { kind: 'domain', domain, rest: m[2] };
  };

  const domainList = (): string => {
    const rows = domains
      .list()
      .map(
        (d) =>
          `<li><a href="/domain/${escapeHtml(encodeURIComponent(d.name))}/">${escapeHtml(d.name)}</a> (${d.devices.size} device${d.devices.size === 1 ? '' : 's'})</li>`,
      )
      .join('\n');
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chardev: domains</title>
<link rel="stylesheet" href="/static/console.css"></head>
<body class="index"><h1>Domains</h1>
<ul>
${rows}
</ul>
</body></html>
`;
  };

  /** The window's tabs, in the order Ctrl+Alt+1…9 numbers them (see docs/browser.md). */
  const deviceList = (domain: Domain): string =>
    JSON.stringify({
      version: WIRE_VERSION,
      domain: domain.name,
      devices: [...domain.devices.values()].map((d) => ({ alias: d.alias, id: d.id, type: d.type, interactive: d.type === 'vc', clients: d.hub.size })),
    });

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    res.on('error', () => {});
    const url = parse(req);
    if (url === undefined) return text(req, res, 400, 'bad request');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return reply(req, res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { Allow: 'GET, HEAD' });
    }
    if (!authorized(req, url)) return text(req, res, 401, 'a valid token is required (the URL chardev printed at start has it)');
    const cookie = { 'Set-Cookie': `${cookieName()}=${token}; Path=/; HttpOnly; SameSite=Strict` };
    try {
      const staticMatch = /^\/static\/([A-Za-z0-9._-]+)$/.exec(url.pathname);
      if (staticMatch !== null) {
        const entry = files.get(staticMatch[1] ?? '');
        return entry === undefined ? text(req, res, 404, 'not found') : reply(req, res, 200, entry[1], readCached(entry[0]));
      }
      const r = route(url.pathname);
      if (r === undefined) return text(req, res, 404, 'not found');
      switch (r.kind) {
        case 'list':
          return reply(req, res, 200, 'text/html; charset=utf-8', domainList(), cookie);
        case 'redirect':
          return reply(req, res, 301, 'text/plain; charset=utf-8', 'moved\n', { Location: `${r.to}${url.search}` });
        case 'domain':
          break;
      }
      const { domain, rest } = r;
      // The cookie lets the page's own requests (scripts, the device list, the WebSockets) through without the query.
      if (rest === '/' || rest === '/index.html') return reply(req, res, 200, 'text/html; charset=utf-8', readCached(CONSOLE_HTML), cookie);
      if (rest === '/devices') return reply(req, res, 200, 'application/json; charset=utf-8', deviceList(domain));
      const consoleMatch = /^\/console\/([^/]+)$/.exec(rest);
      if (consoleMatch !== null) {
        let alias: string;
        try {
          alias = decodeURIComponent(consoleMatch[1] ?? '');
        } catch {
          return text(req, res, 400, 'bad device name');
        }
        if (findDevice(domain, alias) === undefined) return text(req, res, 404, `no device '${alias}' in domain ${domain.name}`);
        return reply(req, res, 200, 'text/html; charset=utf-8', readCached(CONSOLE_HTML), cookie);
      }
      return text(req, res, 404, 'not found');
    } catch (e) {
      return text(req, res, 500, `internal error: ${(e as Error).message}`);
    }
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    if (closing !== undefined) return refuseUpgrade(socket, 503, 'shutting down');
    const url = parse(req);
    if (url === undefined) return refuseUpgrade(socket, 400, 'bad request');
    if (!authorized(req, url)) return refuseUpgrade(socket, 401, 'a valid token is required');
    if (!originAllowed(req.headers.origin, req.headers.host)) return refuseUpgrade(socket, 403, 'foreign origin');
    const r = route(url.pathname);
    const domain = r?.kind === 'domain' ? r.domain : undefined;
    const m = r?.kind === 'domain' ? /^\/ws\/([^/]+)$/.exec(r.rest) : null;
    let alias: string | undefined;
    try {
      alias = m === null ? undefined : decodeURIComponent(m[1] ?? '');
    } catch {
      alias = undefined;
    }
    const device = alias === undefined || domain === undefined ? undefined : findDevice(domain, alias);
    if (device === undefined || domain === undefined) return refuseUpgrade(socket, 404, 'no such device');
    if (device.stopped) return refuseUpgrade(socket, 410, 'the device was stopped');
    const flag = (name: string): boolean => ['1', 'true', 'yes', 'on'].includes(url.searchParams.get(name) ?? '');
    try {
      wss.handleUpgrade(req, socket, head, (ws) => {
        alive.add(ws);
        ws.on('pong', () => alive.add(ws));
        const sock = req.socket as Socket;
        serveTab(domain, device, ws, {
          label: `browser ${sock.remoteAddress ?? '?'}:${sock.remotePort ?? '?'}`,
          readonly: device.type !== 'vc' || flag('readonly'),
          force: flag('force'),
        });
      });
    } catch {
      socket.destroy();
    }
  });
  server.on('clientError', (_err, socket: Duplex) => {
    socket.on('error', () => {});
    socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      reject(
        new ChardevError(
          e.code === 'EADDRINUSE' ? 'ERR_BACKEND_BUSY' : 'ERR_BACKEND_OPEN',
          `web console: cannot listen on ${hostPort(host, options.port ?? 0)}: ${e.message}`,
          { cause: e },
        ),
      );
    };
    server.once('error', onError);
    server.listen({ host, port: options.port ?? 0 }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', () => {});
  port = (server.address() as AddressInfo).port;

  const pinger = setInterval(() => {
    for (const ws of wss.clients) {
      // A paused tab (the guest takes no input now) reads no pongs either; it is not dead.
      if (ws.isPaused) {
        alive.add(ws);
        continue;
      }
      if (!alive.has(ws)) {
        ws.terminate();
        continue;
      }
      alive.delete(ws);
      try {
        ws.ping();
      } catch {
        ws.terminate();
      }
    }
  }, PING_MS);
  pinger.unref();

  return {
    url: `http://${urlHost()}/?token=${token}`,
    origin: origin(),
    host,
    port,
    token,
    urlFor: consoleUrl,
    domainUrl: (name) => `http://${urlHost()}/domain/${encodeURIComponent(name)}/?token=${token}`,
    dropConnections: () => {
      const n = wss.clients.size;
      for (const ws of [...wss.clients]) ws.terminate();
      return n;
    },
    close: () => {
      closing ??= (async () => {
        clearInterval(pinger);
        const tabs = [...wss.clients];
        await Promise.all(
          tabs.map(
            (ws) =>
              new Promise<void>((resolve) => {
                if (ws.readyState === WebSocket.CLOSED) return resolve();
                ws.once('close', () => resolve());
                const t = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
                t.unref();
                try {
                  ws.close(1001, 'chardev is shutting down');
                } catch {
                  ws.terminate();
                }
              }),
          ),
        );
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await new Promise<void>((resolve) => wss.close(() => resolve()));
      })();
      return closing;
    },
  };
}
