/**
 * `npm start` and `npx chardev` put npm and a `sh -c` between whoever started them and
 * chardev. A SIGTERM or SIGHUP sent to npm (a service manager, a `kill` of the pid the caller
 * has) kills npm and reaches neither the shell nor chardev: `chardev run` and `chardev qemu`
 * would go on, with their guest. So when npm started us, we watch it and stop, as on a
 * signal, once it is gone. (^C at a terminal reaches the whole process group: no need there.)
 */
import * as fs from 'node:fs';

/** How often npm is looked for. */
const WATCH_MS = 500;

/** Field 22 of /proc/PID/stat (start time in clock ticks), with the parent pid; undefined if gone. */
function stat(pid: number): { ppid: number; start: string; comm: string } | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm is in parentheses and may hold spaces or ')': the fields after the last ')' are plain.
    const close = s.lastIndexOf(')');
    const comm = s.slice(s.indexOf('(') + 1, close);
    const f = s.slice(close + 2).split(' ');
    return { ppid: Number(f[1]), start: f[19] ?? '', comm };
  } catch {
    return undefined;
  }
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/**
 * Call `onGone` once npm, which started this process (through its `sh -c`), has exited.
 * Does nothing unless npm's environment says it started us. Returns a function that stops
 * watching.
 */
export function watchNpmParent(onGone: () => void, env: NodeJS.ProcessEnv = process.env): () => void {
  if (env['npm_lifecycle_event'] === undefined && env['npm_command'] === undefined) return () => {};
  // npm itself is the nearest ancestor (within a few) whose command line is npm's.
  let pid = process.ppid;
  let npm: { pid: number; start: string } | undefined;
  for (let i = 0; i < 4 && pid > 1; i++) {
    const st = stat(pid);
    if (st === undefined) break;
    if (st.comm === 'npm' || /(^|\/)npm(-cli\.js)?( |$)|^npm (exec|start|run)/.test(cmdline(pid))) {
      npm = { pid, start: st.start };
      break;
    }
    pid = st.ppid;
  }
  if (npm === undefined) return () => {};
  const watched = npm;
  const timer = setInterval(() => {
    const st = stat(watched.pid);
    // Gone, or its pid already reused by another process (another start time).
    if (st === undefined || st.start !== watched.start) {
      clearInterval(timer);
      onGone();
    }
  }, WATCH_MS);
  timer.unref();
  return () => clearInterval(timer);
}
