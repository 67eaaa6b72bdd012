/**
 * The data-plane thread's loop (see data-plane.ts): poll(2) over every run's wait and a wake
 * pipe, splice(2) while bytes move. It blocks in poll, so its own event loop never turns:
 * messages are taken with receiveMessageOnPort after the wake pipe says there are some.
 *
 * A run's cycle: splice from the pipe to the destination until it says "again"; then the
 * pipe still holding bytes means the destination is full (wait for POLLOUT on it: the guest
 * is held, as QEMU's flow control wants), an empty pipe means the guest has not written yet
 * (wait for POLLIN on the pipe, for at most the run's grace). Progress goes to the main
 * thread every REPORT_MS at most, never per chunk.
 */
import { receiveMessageOnPort, workerData } from 'node:worker_threads';
import { libc } from './native.ts';
import { errnoName } from './platform.ts';
import type { FromWorker, ToWorker, WorkerSetup } from './data-plane.ts';

const POLLIN = 0x001;
const POLLOUT = 0x004;
const FIONREAD = 0x541b;
const SPLICE_F_MOVE = 1;
const SPLICE_F_NONBLOCK = 2;
const EAGAIN = 11;
const EINTR = 4;
const SEEK_END = 2;
/** Most bytes asked of one splice; the kernel moves what the pipe holds and the destination takes. */
const SPLICE_CHUNK = 16 * 1024 * 1024;
/** Transfers of one run before the others (and the wake pipe) get a look. */
const SPLICES_PER_TURN = 64;
/** Most time between two progress reports of a run that moves bytes. */
const REPORT_MS = 20;
/**
 * A run whose source has been empty this long reports what it moved at once: the guest
 * paused or finished, and whoever waits for its last byte (`onMoved`) should not wait
 * REPORT_MS. A streaming guest refills the pipe within microseconds, so this costs no
 * message per chunk.
 */
const QUIET_REPORT_MS = 1;

interface Run {
  readonly id: number;
  readonly from: number;
  readonly to: number;
  /** Bytes still allowed, or -1 for no limit. */
  left: number;
  readonly graceMs: number;
  readonly seekEnd: boolean;
  moved: number;
  reported: number;
  reportedAt: number;
  waits: number;
  /** What the run waits for; undefined: ready to transfer. */
  waitFd: number | undefined;
  waitEvents: number;
  /** While waiting for the source: when the grace runs out (performance.now()). */
  idleAt: number | undefined;
  /** A via run's intermediate pipe (`stepVia`); `moved` counts what left it for `to`. */
  readonly via?: { readonly readFd: number; readonly writeFd: number };
}

const setup = workerData as WorkerSetup;
const endings = new Int32Array(setup.endings);
const c = libc();
const runs = new Map<number, Run>();
const drainBuf = Buffer.alloc(256);
let pollBuf = Buffer.alloc(8 * 8);

function post(m: FromWorker): void {
  setup.port.postMessage(m);
}

function end(run: Run, reason: 'stopped' | 'eof' | 'idle' | 'limit' | 'error', error?: string): void {
  runs.delete(run.id);
  c.closeFd(run.from);
  c.closeFd(run.to);
  if (run.via !== undefined) {
    c.closeFd(run.via.readFd);
    c.closeFd(run.via.writeFd);
  }
  post({ op: 'ended', id: run.id, moved: run.moved, waits: run.waits, end: reason, ...(error !== undefined ? { error } : {}) });
  // A main thread waiting in `DataPlaneRun.stop` takes the message now.
  Atomics.add(endings, 0, 1);
  Atomics.notify(endings, 0);
}

function pipeHolds(fd: number): boolean {
  // FIONREAD through koffi's variadic ioctl fills an int.
  return c.ioctlIntOut(fd, FIONREAD) > 0;
}

function waitRoom(run: Run): void {
  run.waits++;
  run.waitFd = run.to;
  run.waitEvents = POLLOUT;
}

/** Transfer until the run must wait or end. */
function step(run: Run): void {
  run.waitFd = undefined;
  run.idleAt = undefined;
  for (let i = 0; i < SPLICES_PER_TURN; i++) {
    if (run.left === 0) {
      end(run, 'limit');
      return;
    }
    if (run.seekEnd) c.lseek(run.to, 0, SEEK_END);
    const len = run.left > 0 ? Math.min(run.left, SPLICE_CHUNK) : SPLICE_CHUNK;
    const n = c.splice(run.from, run.to, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      run.moved += n;
      if (run.left > 0) run.left -= n;
      if (n < len && run.left !== 0 && pipeHolds(run.from)) {
        // The destination took part of what the pipe holds: it is full (a pty takes a few
        // KiB at a time). Wait for room now rather than learn it from one more splice.
        waitRoom(run);
        return;
      }
      continue;
    }
    if (n === 0) {
      end(run, 'eof');
      return;
    }
    const errno = c.errno();
    if (errno === EINTR) continue;
    if (errno !== EAGAIN) {
      end(run, 'error', errnoName(errno));
      return;
    }
    if (pipeHolds(run.from)) {
      // The destination is full: the guest waits until it has room.
      waitRoom(run);
    } else {
      run.waitFd = run.from;
      run.waitEvents = POLLIN;
      run.idleAt = performance.now() + run.graceMs;
    }
    return;
  }
  // Still moving: another turn after the others had theirs.
}

/**
 * A via run's transfers: `via` → `to` (what the pipe holds reaches the guest first), then
 * `from` → `via`, until neither moves. Then the pipe still holding bytes means `to` is full
 * (wait for room there: the pipe fills no further, the socket's buffers fill and TCP holds
 * the client); an empty pipe means the client has not sent more (wait for it, for at most
 * the grace). Whatever the pipe holds when the run ends is the main thread's to deliver.
 */
function stepVia(run: Run): void {
  const via = run.via;
  if (via === undefined) return;
  run.waitFd = undefined;
  run.idleAt = undefined;
  for (let i = 0; i < SPLICES_PER_TURN; i++) {
    let progressed = false;
    const out = c.splice(via.readFd, run.to, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (out > 0) {
      run.moved += out;
      progressed = true;
    } else if (out < 0) {
      const errno = c.errno();
      if (errno === EINTR) continue;
      if (errno !== EAGAIN) {
        end(run, 'error', errnoName(errno));
        return;
      }
    }
    const got = c.splice(run.from, via.writeFd, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (got > 0) continue;
    if (got === 0) {
      end(run, 'eof');
      return;
    }
    const errno = c.errno();
    if (errno === EINTR) continue;
    if (errno !== EAGAIN) {
      end(run, 'error', errnoName(errno));
      return;
    }
    if (progressed) continue;
    if (pipeHolds(via.readFd)) {
      waitRoom(run);
    } else {
      run.waitFd = run.from;
      run.waitEvents = POLLIN;
      run.idleAt = performance.now() + run.graceMs;
    }
    return;
  }
}

/** When the run's unreported bytes are due to be reported. */
function reportAt(run: Run): number {
  const regular = run.reportedAt + REPORT_MS;
  return run.idleAt === undefined ? regular : Math.min(regular, run.idleAt - run.graceMs + QUIET_REPORT_MS);
}

function report(now: number): void {
  for (const run of runs.values()) {
    if (run.moved !== run.reported && now >= reportAt(run)) {
      run.reported = run.moved;
      run.reportedAt = now;
      post({ op: 'progress', id: run.id, moved: run.moved, waits: run.waits });
    }
  }
}

/** Returns false once told to quit. */
function takeMessages(): boolean {
  while (c.read(setup.wakeFd, drainBuf) === drainBuf.length) {
    // More wake bytes than the buffer holds: read on until the pipe is empty.
  }
  for (;;) {
    const m = receiveMessageOnPort(setup.port) as { message: ToWorker } | undefined;
    if (m === undefined) return true;
    const msg = m.message;
    switch (msg.op) {
      case 'start':
        runs.set(msg.id, {
          id: msg.id,
          from: msg.from,
          to: msg.to,
          left: msg.limitBytes,
          graceMs: msg.graceMs,
          seekEnd: msg.seekEnd,
          moved: 0,
          reported: 0,
          reportedAt: performance.now(),
          waits: 0,
          waitFd: undefined,
          waitEvents: 0,
          idleAt: undefined,
        });
        break;
      case 'start-via':
        runs.set(msg.id, {
          id: msg.id,
          from: msg.from,
          to: msg.to,
          left: -1,
          graceMs: msg.graceMs,
          seekEnd: false,
          moved: 0,
          reported: 0,
          reportedAt: performance.now(),
          waits: 0,
          waitFd: undefined,
          waitEvents: 0,
          idleAt: undefined,
          via: { readFd: msg.viaRead, writeFd: msg.viaWrite },
        });
        break;
      case 'stop': {
        const run = runs.get(msg.id);
        if (run !== undefined) end(run, 'stopped');
        break;
      }
      case 'quit':
        for (const run of [...runs.values()]) end(run, 'stopped');
        return false;
    }
  }
}

function loop(): void {
  for (;;) {
    let busy = false;
    for (const run of [...runs.values()]) {
      if (run.waitFd === undefined) {
        if (run.via !== undefined) stepVia(run);
        else step(run);
        if (runs.has(run.id) && run.waitFd === undefined) busy = true;
      }
    }
    const now = performance.now();
    report(now);
    const waiting = [...runs.values()].filter((r) => r.waitFd !== undefined);
    const need = 8 * (waiting.length + 1);
    if (pollBuf.length < need) pollBuf = Buffer.alloc(need * 2);
    pollBuf.writeInt32LE(setup.wakeFd, 0);
    pollBuf.writeInt16LE(POLLIN, 4);
    pollBuf.writeInt16LE(0, 6);
    let timeout = -1;
    for (let i = 0; i < waiting.length; i++) {
      const run = waiting[i] as Run;
      pollBuf.writeInt32LE(run.waitFd ?? -1, 8 * (i + 1));
      pollBuf.writeInt16LE(run.waitEvents, 8 * (i + 1) + 4);
      pollBuf.writeInt16LE(0, 8 * (i + 1) + 6);
      if (run.idleAt !== undefined) timeout = Math.min(timeout < 0 ? Infinity : timeout, Math.max(0, Math.ceil(run.idleAt - now)));
    }
    for (const run of runs.values()) {
      if (run.moved !== run.reported) timeout = Math.min(timeout < 0 ? Infinity : timeout, Math.max(0, Math.ceil(reportAt(run) - now)));
    }
    if (busy) timeout = 0;
    const rc = c.poll(pollBuf, waiting.length + 1, timeout);
    if (timeout !== 0) Atomics.add(endings, 1, 1);
    if (rc < 0 && c.errno() !== EINTR) throw new Error(`poll: ${errnoName(c.errno())}`);
    if (rc > 0) {
      if (pollBuf.readUInt16LE(6) !== 0 && !takeMessages()) return;
      for (let i = 0; i < waiting.length; i++) {
        const run = waiting[i] as Run;
        // Any event (POLLHUP, POLLERR included): the next splice says what happened.
        if (pollBuf.readUInt16LE(8 * (i + 1) + 6) !== 0 && runs.has(run.id)) run.waitFd = undefined;
      }
    }
    const later = performance.now();
    for (const run of [...runs.values()]) {
      if (run.waitFd !== undefined && run.idleAt !== undefined && later >= run.idleAt) end(run, 'idle');
    }
    report(later);
  }
}

post({ op: 'ready' });
loop();
