/**
 * systemd's readiness protocol (sd_notify(3)): one datagram, `READY=1` and the like, to the
 * unix socket named in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
 * Node has no unix datagram sockets, so the datagram is sent with socket(2) and sendto(2)
 * through koffi; where koffi cannot load, `systemd-notify` sends it instead (then the unit
 * needs `NotifyAccess=all`, since the sender is not the main process).
 */
import { spawnSync } from 'node:child_process';
import { libc } from './native.ts';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): sa_family_t + 108 bytes of path. */
const SOCKADDR_UN_SIZE = 110;

export type NotifyResult =
  /** No `$NOTIFY_SOCKET`: not started by systemd as Type=notify; nothing to do. */
  | { readonly sent: false; readonly reason: 'unset' }
  | { readonly sent: true; readonly via: 'koffi' | 'systemd-notify' }
  | { readonly sent: false; readonly reason: 'failed'; readonly error: string };

/** `struct sockaddr_un` for a `$NOTIFY_SOCKET` value, with its length; undefined if it cannot be one. */
export function notifyAddress(socket: string): { addr: Buffer; len: number } | undefined {
  const abstract = socket.startsWith('@');
  if (!abstract && !socket.startsWith('/')) return undefined;
  const name = Buffer.from(abstract ? `\0${socket.slice(1)}` : socket, 'utf8');
  // A path needs its NUL inside the 108 bytes; an abstract name is counted exactly.
  if (name.length + (abstract ? 0 : 1) > SOCKADDR_UN_SIZE - 2) return undefined;
  const addr = Buffer.alloc(SOCKADDR_UN_SIZE);
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  return { addr, len: 2 + name.length + (abstract ? 0 : 1) };
}

/** Send `state` (lines such as `READY=1`, `STATUS=…`, `STOPPING=1`) to systemd, if it asked for it. */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): NotifyResult {
  const socket = env['NOTIFY_SOCKET'];
  if (socket === undefined || socket === '') return { sent: false, reason: 'unset' };
  const address = notifyAddress(socket);
  if (address === undefined) return { sent: false, reason: 'failed', error: `NOTIFY_SOCKET '${socket}' is not a unix socket path or @name` };
  let viaKoffi: string;
  try {
    const c = libc();
    const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`socket: ${c.strerror(c.errno())}`);
    try {
      const msg = Buffer.from(state, 'utf8');
      const n = c.sendto(fd, msg, msg.length, MSG_NOSIGNAL, address.addr, address.len);
      if (n !== msg.length) throw new Error(`sendto ${socket}: ${n < 0 ? c.strerror(c.errno()) : `short write (${n} of ${msg.length} bytes)`}`);
    } finally {
      c.closeFd(fd);
    }
    return { sent: true, via: 'koffi' };
  } catch (e) {
    viaKoffi = (e as Error).message;
  }
  const r = spawnSync('systemd-notify', [`--pid=${process.pid}`, ...state.split('\n').filter((l) => l !== '')], {
    env: { ...env, NOTIFY_SOCKET: socket },
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 5000,
  });
  if (r.status === 0) return { sent: true, via: 'systemd-notify' };
  const why = r.error !== undefined ? r.error.message : r.stderr?.toString().trim() || `exit status ${String(r.status)}`;
  return { sent: false, reason: 'failed', error: `${viaKoffi}; systemd-notify: ${why}` };
}
