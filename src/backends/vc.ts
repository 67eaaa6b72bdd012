/**
 * `vc`: the graphical console, here a terminal in the browser served by chardev itself
 * (src/web/). The backend has no transport of its own: browser tabs attach to the
 * device's hub as clients, so it opens when the first tab connects and closes when the
 * last leaves. Output while no tab is open is discarded like a socket server's (the
 * history, if the device keeps one, still shows it to the next tab).
 */
import type { Backend, BackendContext } from '../core/backend.ts';

export function createVcBackend(ctx: BackendContext): Backend {
  let dropped = 0;
  let stopped = false;
  return {
    filename: 'vc',
    get where() {
      return `${ctx.id}: browser console (see the web console URL)`;
    },
    openAtStart: false,
    get droppedBytes() {
      return dropped;
    },
    write(data) {
      if (stopped) return 0;
      if (ctx.hub.size === 0) dropped += data.length;
      return data.length;
    },
    setReading() {
      // Tabs are hub clients: the hub pauses and resumes them.
    },
    stop() {
      stopped = true;
      return Promise.resolve();
    },
  };
}
