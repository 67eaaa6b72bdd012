/** `null`: every write succeeds and is discarded; no input; never opens (QEMU char-null.c). */
import type { Backend, BackendContext } from '../core/backend.ts';

export function createNullBackend(ctx: BackendContext): Backend {
  return {
    filename: 'null',
    where: `${ctx.id}: null (output discarded)`,
    openAtStart: false,
    droppedBytes: 0,
    discardsOutput: true,
    write: (data) => data.length,
    setReading: () => {},
    stop: async () => {},
  };
}
