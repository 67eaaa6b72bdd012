/**
 * `file`: guest output written to a file, truncated at start unless append='on';
 * no input (libvirt never passes QEMU's input-path). Opens at creation. Rotated by size
 * under `<cd:rotate>`.
 */
import type { FileSourceDef } from '../config/types.ts';
import type { Backend, BackendContext } from '../core/backend.ts';
import { describeErrno } from '../core/files.ts';
import { RotatingLog } from '../core/rotating-log.ts';
import { ChardevError } from '../errors.ts';

export function createFileBackend(ctx: BackendContext, source: FileSourceDef): Backend {
  const file = source.path;
  if (file === undefined) throw new ChardevError('ERR_BACKEND_OPEN', `${ctx.id}: file: no filename given`);
  const rotate = ctx.dev.ext.rotate;
  const out = new RotatingLog(ctx.id, file, rotate === undefined ? undefined : { maxBytes: rotate.sizeBytes, backups: rotate.backups }, {
    append: source.append === 'on',
    what: 'file',
    onError: (err) => ctx.events.error(err),
  });
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
        out.write(data);
      } catch (e) {
        // A full disk must not stop the guest: report once, then discard like a dead file.
        failed = true;
        dropped += data.length;
        ctx.events.error(new ChardevError('ERR_BACKEND_WRITE', `${ctx.id}: file ${file}: ${describeErrno(e as NodeJS.ErrnoException)}; further output discarded`, { cause: e }));
      }
      return data.length;
    },
    setReading: () => {},
    async stop(abort) {
      out.close(abort);
    },
  };
}
