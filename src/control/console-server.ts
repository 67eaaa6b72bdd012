/**
 * `NAME.console`: where `chardev console` sessions attach to a running domain's devices.
 * Each session is one hub client of its device: history first, then live output; input
 * only while it is the writer. See console-protocol.ts for the wire.
 */
import * as net from 'node:net';
import { HubFullError, type ClientSink, type HubClient } from '../core/hub.ts';
import type { Domain } from '../core/domain.ts';
import type { Chardev } from '../core/chardev.ts';
import { unlinkQuietly } from '../core/files.ts';
import { listenUnixOwnerOnly } from '../core/unix-listen.ts';
import {
  decodeResize,
  encodeFrame,
  FRAME_BREAK,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_NOTICE,
  FRAME_RESIZE,
  FrameDecoder,
  LineReader,
  MAX_FRAME_BYTES,
  type ConsoleHello,
  type ConsoleReply,
} from './console-protocol.ts';

/** A client that has not said hello by then is dropped. */
const HELLO_TIMEOUT_MS = 10_000;

export interface ConsoleServer {
  readonly path: string;
  close(): Promise<void>;
}

function parseHello(line: string): ConsoleHello | string {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return 'the first line must be a JSON object';
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'the first line must be a JSON object';
  const o = v as Record<string, unknown>;
  for (const key of ['device', 'label'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'string') return `'${key}' must be a string`;
  }
  for (const key of ['readonly', 'force', 'frames'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') return `'${key}' must be true or false`;
  }
  return o as ConsoleHello;
}

export async function startConsoleServer(domain: Domain, path: string): Promise<ConsoleServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    serve(domain, sock);
  });
  await listenUnixOwnerOnly('console socket', server, path);
  return {
    path,
    close: async () => {
      // Sessions already ended by their device are flushing their goodbye; give them a moment.
      await Promise.all(
        [...sockets].map(
          (s) =>
            new Promise<void>((resolve) => {
              s.once('close', () => resolve());
              s.end();
              setTimeout(() => s.destroy(), 1000).unref();
            }),
        ),
      );
      await new Promise<void>((resolve) => server.close(() => resolve()));
      unlinkQuietly(path);
    },
  };
}

function reply(sock: net.Socket, r: ConsoleReply): void {
  sock.write(`${JSON.stringify(r)}\n`);
}

function serve(domain: Domain, sock: net.Socket): void {
  const lines = new LineReader();
  const timer = setTimeout(() => sock.destroy(), HELLO_TIMEOUT_MS);
  timer.unref();
  const onHello = (chunk: Buffer): void => {
    let got: [string, Buffer] | undefined;
    try {
      got = lines.feed(chunk);
    } catch (e) {
      clearTimeout(timer);
      reply(sock, { ok: false, error: (e as Error).message });
      sock.end();
      return;
    }
    if (got === undefined) return;
    clearTimeout(timer);
    sock.off('data', onHello);
    const [line, rest] = got;
    const hello = parseHello(line);
    if (typeof hello === 'string') {
      reply(sock, { ok: false, error: hello });
      sock.end();
      return;
    }
    let device: Chardev | undefined;
    try {
      device = hello.device === undefined ? domain.primary() : domain.device(hello.device);
    } catch (e) {
      reply(sock, { ok: false, error: (e as Error).message });
      sock.end();
      return;
    }
    if (device === undefined) {
      reply(sock, { ok: false, error: `domain ${domain.name} has no serial or console device` });
      sock.end();
      return;
    }
    attach(domain, device, hello, sock, rest);
  };
  sock.on('data', onHello);
}

function attach(domain: Domain, device: Chardev, hello: ConsoleHello, sock: net.Socket, rest: Buffer): void {
  // Frames (the history first of all) wait until the reply line, which needs the role, is out.
  let held: Buffer[] | undefined = [];
  const out = (frame: Buffer): void => {
    if (held !== undefined) held.push(frame);
    else sock.write(frame);
  };
  let client: HubClient | undefined;
  const sink: ClientSink = {
    send: (data) => {
      for (let off = 0; off < data.length; off += MAX_FRAME_BYTES) out(encodeFrame(FRAME_DATA, data.subarray(off, off + MAX_FRAME_BYTES)));
    },
    get queuedBytes() {
      return sock.writableLength;
    },
    notice: (text) => out(encodeFrame(FRAME_NOTICE, Buffer.from(text))),
    close: (reason) => {
      out(encodeFrame(FRAME_CLOSE, Buffer.from(reason)));
      sock.end();
    },
    pause: () => sock.pause(),
    resume: () => sock.resume(),
  };
  try {
    client = device.hub.attach(sink, {
      kind: 'console',
      label: hello.label ?? 'console',
      ...(hello.readonly !== undefined ? { readonly: hello.readonly } : {}),
      ...(hello.force !== undefined ? { force: hello.force } : {}),
    });
  } catch (e) {
    reply(sock, { ok: false, error: e instanceof HubFullError ? `${device.id}: ${e.message}` : (e as Error).message });
    sock.end();
    return;
  }
  const framed = hello.frames === true;
  reply(sock, { ok: true, domain: domain.name, device: device.alias, label: device.id, role: client.role, ...(framed ? { frames: true } : {}) });
  for (const f of held) sock.write(f);
  held = undefined;
  const c = client;
  // The DATA frames of one read are one input, as raw bytes would be: a guest that takes
  // less stops the device reading its clients, and input after that in the same call is lost.
  let data: Buffer[] = [];
  const flushData = (): void => {
    if (data.length === 0) return;
    const all = data.length === 1 ? (data[0] as Buffer) : Buffer.concat(data);
    data = [];
    c.input(all);
  };
  // Frame types this server does not know are skipped: a newer client's extras are optional.
  const decoder = new FrameDecoder((type, payload) => {
    if (type === FRAME_DATA) data.push(payload);
    else if (type === FRAME_BREAK) {
      // The input before the BREAK reaches the guest before it.
      flushData();
      c.break();
    } else if (type === FRAME_RESIZE) {
      const size = decodeResize(payload);
      if (size !== undefined) c.resize(size);
    }
  });
  const fromClient = (b: Buffer): void => {
    if (!framed) {
      c.input(b);
      return;
    }
    try {
      decoder.feed(b);
    } catch {
      data = [];
      sock.destroy();
      return;
    }
    flushData();
  };
  sock.on('data', fromClient);
  sock.on('close', () => c.detach());
  // The guest may be waiting for this console to take more.
  sock.on('drain', () => c.drained());
  if (rest.length > 0) fromClient(rest);
}
