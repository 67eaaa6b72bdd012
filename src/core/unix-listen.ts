/**
 * Listening on a UNIX socket path the way every chardev server does: owner-only from the
 * moment the file exists, a stale file nobody listens on replaced, a live one refused.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { describeErrno, unlinkQuietly } from './files.ts';
import { ChardevError } from '../errors.ts';

/** True when some process accepts connections on `path`. */
export function unixPathIsLive(path: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    // EAGAIN: a listener whose backlog is full is alive too; only "refused" means stale.
    probe.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EAGAIN'));
  });
}

/**
 * Make `path` free for bind: nothing there, or a socket file nobody listens on (removed).
 * `who` starts every message (a chardev id, or `control socket`).
 */
export async function prepareUnixPath(who: string, path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new ChardevError('ERR_BACKEND_OPEN', `${who}: Failed to bind socket to '${path}': the path exists and is not a socket`);
  if (await unixPathIsLive(path)) throw new ChardevError('ERR_BACKEND_BUSY', `${who}: Failed to bind socket to '${path}': another process is listening on it`);
  unlinkQuietly(path);
}

/** Listen on `path`, mode 0600 from creation (bind creates the file under the umask). */
export async function listenUnixOwnerOnly(who: string, server: net.Server, path: string, backlog = 16): Promise<void> {
  await prepareUnixPath(who, path);
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void =>
      reject(new ChardevError('ERR_BACKEND_OPEN', `${who}: Failed to bind socket to '${path}': ${describeErrno(e)}`, { cause: e }));
    server.once('error', onError);
    const old = process.umask(0o177);
    try {
      server.listen({ path, backlog }, () => {
        server.off('error', onError);
        resolve();
      });
    } finally {
      process.umask(old);
    }
  });
  fs.chmodSync(path, 0o600);
}
