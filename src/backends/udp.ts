/**
 * `udp`: QEMU's udp chardev (char-udp.c), a connected datagram socket. Bound to the bind
 * source (default: any address, an ephemeral port) and connected to the connect source
 * (default host: localhost), so the kernel delivers only the peer's datagrams — except ones
 * that arrived between bind and connect, which sit in the queue from any sender: so every
 * datagram's source is checked against the peer too, and others are ignored. Each guest
 * write is one datagram; a send that fails (an ICMP port-unreachable from a peer that is
 * not listening) loses that write and nothing else. Never opened, like QEMU's.
 *
 * Input flow control as in QEMU (can_read 0 leaves datagrams in the socket): while the guest
 * does not read, the socket itself is not read, so datagrams wait in the kernel's receive
 * buffer (what does not fit there the kernel drops, as for QEMU) and arrive in order once
 * the guest reads again. Node's dgram has no pause, so `kernelReading` reaches into Node's
 * own socket state for it; where that is missing (another Node), datagrams that arrive
 * while nobody reads are counted and dropped instead.
 */
import * as dgram from 'node:dgram';
import * as dns from 'node:dns/promises';
import * as net from 'node:net';
import type { UdpSourceDef } from '../config/types.ts';
import type { Backend, BackendContext } from '../core/backend.ts';
import { describeErrno } from '../core/files.ts';
import { bracketHost } from '../protocols/address.ts';
import { ChardevError } from '../errors.ts';

function port(ctx: BackendContext, what: string, service: string | undefined, fallback: number): number {
  if (service === undefined) return fallback;
  const n = Number(service);
  if (!/^\d+$/.test(service) || n > 65535) throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: udp ${what} service '${service}' is not a port number`);
  return n;
}

async function resolve(ctx: BackendContext, host: string, family: 4 | 6 | undefined): Promise<{ address: string; family: 4 | 6 }> {
  const literal = net.isIP(host);
  if (literal === 4 || literal === 6) return { address: host, family: literal };
  try {
    const r = await dns.lookup(host, family === undefined ? {} : { family });
    return { address: r.address, family: r.family === 6 ? 6 : 4 };
  } catch (e) {
    throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: address resolution failed for ${host}: ${describeErrno(e as NodeJS.ErrnoException)}`, { cause: e });
  }
}

/** One spelling per address, so `::1`, `0:0::1` and `::ffff:127.0.0.1` compare as the kernel sees them. */
function canonicalAddress(address: string): string {
  if (net.isIPv6(address)) {
    try {
      return new URL(`http://[${address}]/`).hostname;
    } catch {
      return address.toLowerCase();
    }
  }
  return address;
}

/**
 * Start or stop reading `sock` (libuv's uv_udp_recv_start/stop; while stopped, datagrams wait
 * in the kernel), or undefined where that cannot be done. Why an internal: Node's dgram has
 * no pause, and `setReading(false)` must leave datagrams in the kernel as QEMU does. Node 20's
 * lib/dgram.js keeps the socket's UDPWrap handle in an own property keyed by
 * `Symbol('state symbol')` (`{ handle, receiving, … }`); its own startListening and
 * stopReceiving call `handle.recvStart()` / `handle.recvStop()` (0 or a libuv error) and keep
 * `receiving` in step, which `close()` consults. This does the same, nothing more. Every piece
 * is checked first, so a Node without that shape gets undefined (the caller then counts
 * drops), never an exception; the tests fail if that happens on the Node they run on.
 */
export function kernelReading(sock: dgram.Socket): ((on: boolean) => boolean) | undefined {
  const key = Object.getOwnPropertySymbols(sock).find((s) => s.description === 'state symbol');
  if (key === undefined) return undefined;
  const state: unknown = Reflect.get(sock, key);
  if (typeof state !== 'object' || state === null) return undefined;
  interface RecvHandle {
    recvStart(): unknown;
    recvStop(): unknown;
  }
  const isHandle = (h: unknown): h is RecvHandle =>
    typeof h === 'object' && h !== null && typeof Reflect.get(h, 'recvStart') === 'function' && typeof Reflect.get(h, 'recvStop') === 'function';
  if (!isHandle(Reflect.get(state, 'handle')) || typeof Reflect.get(state, 'receiving') !== 'boolean') return undefined;
  return (on) => {
    // Read again each time: close() sets it to null.
    const handle: unknown = Reflect.get(state, 'handle');
    if (!isHandle(handle)) return false;
    if ((on ? handle.recvStart() : handle.recvStop()) !== 0) return false;
    Reflect.set(state, 'receiving', on);
    return true;
  };
}

export async function createUdpBackend(ctx: BackendContext, source: UdpSourceDef): Promise<Backend> {
  const { id, events } = ctx;
  const remotePort = port(ctx, 'connect', source.connectService, -1);
  if (remotePort < 0) throw new ChardevError('ERR_BACKEND_OPEN', `${id}: chardev: udp: remote port not specified`);
  const remote = await resolve(ctx, source.connectHost ?? 'localhost', undefined);
  const local =
    source.bindHost !== undefined
      ? await resolve(ctx, source.bindHost, remote.family)
      : { address: remote.family === 6 ? '::' : '0.0.0.0', family: remote.family };
  const localPort = port(ctx, 'bind', source.bindService, 0);

  const sock = dgram.createSocket({ type: remote.family === 6 ? 'udp6' : 'udp4' });
  const kernel = kernelReading(sock);
  let stopped = false;
  let reading = false;
  let dropped = 0;
  let failedSends = 0;
  try {
    await new Promise<void>((ok, fail) => {
      sock.once('error', fail);
      sock.bind({ address: local.address, port: localPort }, () => {
        sock.off('error', fail);
        // Node starts reading at bind; nobody reads the device yet, so leave datagrams queued.
        kernel?.(false);
        ok();
      });
    });
    await new Promise<void>((ok, fail) => {
      sock.connect(remotePort, remote.address, (err?: Error) => (err ? fail(err) : ok()));
    });
  } catch (e) {
    sock.close();
    const err = e as NodeJS.ErrnoException;
    throw new ChardevError(
      'ERR_BACKEND_OPEN',
      `${id}: udp ${bracketHost(local.address)}:${localPort} -> ${bracketHost(remote.address)}:${remotePort}: ${describeErrno(err)}`,
      { cause: e },
    );
  }
  const bound = sock.address();
  // Send errors surface both in send callbacks and here; neither may take the process down.
  sock.on('error', () => {});
  const peerAddress = canonicalAddress(remote.address);
  sock.on('message', (msg, rinfo) => {
    if (stopped) return;
    // Queued before connect() narrowed the socket to the peer: not from the peer, not guest input.
    if (rinfo.port !== remotePort || canonicalAddress(rinfo.address) !== peerAddress) return;
    if (reading) events.receive(msg);
    // Only without kernelReading (or if it failed): a datagram read while nobody reads.
    else dropped += msg.length;
  });

  return {
    filename: 'udp',
    where: `${id}: udp ${bracketHost(bound.address)}:${bound.port} -> ${bracketHost(remote.address)}:${remotePort}`,
    openAtStart: false,
    boundService: String(bound.port),
    get droppedBytes() {
      return dropped + failedSends;
    },
    write(data: Uint8Array): number {
      if (stopped) return 0;
      const n = data.length;
      sock.send(Buffer.from(data), (err) => {
        if (err) failedSends += n;
      });
      return n;
    },
    setReading(r: boolean): void {
      reading = r;
      if (!stopped) kernel?.(r);
    },
    stop(): Promise<void> {
      if (stopped) return Promise.resolve();
      stopped = true;
      return new Promise((r) => sock.close(() => r()));
    },
  };
}
