/**
 * `stdio` under libvirt: the guest's output goes to the domain log `LOGDIR/DOMAIN.log`
 * (libvirt hands QEMU a virtlogd pipe, never the terminal), input is disabled. The log
 * file is shared by every stdio device of the domain and rotated (see rotating-log.ts).
 */
import type { Backend, BackendContext } from '../core/backend.ts';
import { describeErrno } from '../core/files.ts';
import { ChardevError } from '../errors.ts';

export function createStdioBackend(ctx: BackendContext): Backend {
  const log = ctx.domainLog();
  let failed = false;
  let dropped = 0;
  return {
    filename: 'stdio',
    where: `${ctx.id}: domain log ${log.path}`,
    openAtStart: true,
    get droppedBytes() {
      return dropped;
    },
    write(data) {
      if (!failed) {
        try {
          log.write(data);
          return data.length;
        } catch (e) {
          failed = true;
          ctx.events.error(
            new ChardevError('ERR_BACKEND_WRITE', `${ctx.id}: domain log ${log.path}: ${describeErrno(e as NodeJS.ErrnoException)}; further output discarded`, {
              cause: e,
            }),
          );
        }
      }
      dropped += data.length;
      return data.length;
    },
    setReading: () => {},
    // The domain owns the shared log and closes it after every device has stopped.
    stop: async () => {},
  };
}
