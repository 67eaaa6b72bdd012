/**
 * `file`: guest output written to a file, truncated at start unless append='on';
 * no input (libvirt never passes QEMU's input-path). Opens at creation.
 */
import type { FileSourceDef } from '../config/types.ts';
import type { Backend, BackendContext } from '../core/backend.ts';
import { closeQuietly, openOutputFile, unlinkQuietly, writeAllSync } from '../core/files.ts';
import { ChardevError } from '../errors.ts';

export function createFileBackend(ctx: BackendContext, source: FileSourceDef): Backend {
  const file = source.path;
  if (file === undefined) throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: file: no filename given`);
  const { fd, created } = openOutputFile(ctx.id, 'file', file, source.append === 'on');
  let failed = false;
  let dropped = 0;
  return {
    filename: 'file',
    where: `${ctx.id}: file ${file}`,
    openAtStart: true,
    get droppedBytes() {
      return dropped;
    },
    write(data) {
      if (failed) {
        dropped += data.length;
        return data.length;
      }
      try {
        writeAllSync(fd, data);
      } catch (e) {
        // A full disk must not stop the guest: report once, then discard like a dead file.
        failed = true;
        dropped += data.length;
        ctx.events.error(new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: file ${file}: ${(e as Error).message}; further output discarded`, { cause: e }));
      }
      return data.length;
    },
    setReading: () => {},
    async stop(abort) {
      closeQuietly(fd);
      if (abort && created) unlinkQuietly(file);
    },
  };
}
