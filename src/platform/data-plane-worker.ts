/**
 * The data-plane thread's loop (see data-plane.ts): poll(2) over every run's wait and a wake
 * pipe, splice(2) while bytes move. It blocks in poll, so its own event loop never turns:
 * messages are taken with receiveMessageOnPort after the wake pipe says there are some.
 *
 * A run's cycle: splice from the pipe to the destination until it says "again"; then the
 * pipe still holding bytes means the destination is full (wait for POLLOUT on it: the guest
 * is held, as QEMU's flow control wants), an empty pipe means the guest has not written yet
 * (wait for POLLIN on the pipe, for at most the run's grace). Progress goes to the main
 * thread every REPORT_MS at most, never per chunk. A `copy` run (a regular file) splices
 * through a pipe of the thread's own (`stepFile`, data-plane.ts `RunSpec.copy`). A run into
 * a terminal reads into a buffer of its own that may hold bytes between two writes and
 * writes it out (`stepTty`); alone on the thread, such a run writes blocking (`enterBlocking`).
 */
// In a worker the global `performance` is a getter with a check on every use; the loop reads the clock per wake-up.
import { performance } from 'node:perf_hooks';
import { receiveMessageOnPort, workerData } from 'node:worker_threads';
import { libc } from './native.ts';
import { errnoName } from './platform.ts';
import type { FromWorker, ToWorker, WorkerSetup } from './data-plane.ts';
import { FanoutRuns, type FanPoll } from './data-plane-fanout.ts';
import { REPORT_MS, reportAt } from './data-plane-schedule.ts';
import { makePipe, type PipeEnds } from './splice.ts';
import {
  POLLIN,
  POLLOUT,
  FIONREAD,
  SPLICE_F_MOVE,
  SPLICE_F_NONBLOCK,
  EAGAIN,
  EINTR,
  EINVAL,
  EIO,
  SEEK_SET,
  SEEK_END,
  F_GETPIPE_SZ,
  F_SETPIPE_SZ,
  F_GETFL,
  F_SETFL,
  O_NONBLOCK,
} from './linux-abi.ts';

/** Most bytes asked of one splice; the kernel moves what the pipe holds and the destination takes. */
const SPLICE_CHUNK = 16 * 1024 * 1024;
/**
 * Most bytes one read(2) of a `copy` run takes from the pipe, then writes to the file: the
 * guest pipe's size (GUEST_PIPE_BYTES), so one read empties a full pipe before the run has
 * shrunk it (COPY_PIPE_BYTES). Measured against 64, 128 and 256 KiB here: no better per
 * byte, more calls (docs/performance-notes.md).
 */
const COPY_BYTES = 1024 * 1024;
/**
 * What a `copy` run shrinks the guest's pipe to while it runs (its size comes back when the
 * run ends). A file takes every write whole, so the pipe never holds the guest for it; a
 * small one keeps the guest's pages and the copy buffer's in the core's cache. The same C
 * relay (read + write into a 1 GiB file, the bench's guest, alternated, 3 runs each,
 * 2026-12-03): 64 KiB pipe 1.66–1.79 GB/s, 1 MiB pipe 1.61–1.65 GB/s.
 */
const COPY_PIPE_BYTES = 64 * 1024;
/** Attempts to shrink the pipe (EBUSY while it holds more than COPY_PIPE_BYTES) before a copy run gives up. */
const COPY_SHRINK_TRIES = 16;
/**
 * The size of the thread's own pipe for `stepFile`, and so the most one of its cycles moves:
 * the guest pipe's size (GUEST_PIPE_BYTES), so one cycle can take all a full pipe holds.
 */
const FILE_PIPE_BYTES = 1024 * 1024;
/**
 * A via run's splice from the socket that moved less than this most likely took all the
 * socket had (the via pipe holds 1 MiB, in 256 slots), so the run waits for the client
 * without asking the socket once more. If the pipe's slots did stop it short, the bytes left
 * in the socket make the poll return at once: a wasted poll, never a late byte.
 */
const VIA_DRAINED_BYTES = 64 * 1024;
/** Transfers of one run before the others (and the wake pipe) get a look. */
const SPLICES_PER_TURN = 64;

interface Run {
  readonly id: number;
  readonly from: number;
  readonly to: number;
  /** Bytes still allowed, or -1 for no limit. */
  left: number;
  readonly graceMs: number;
  readonly seekEnd: boolean;
  /** read(2) + write(2) through `copyBuf` instead of splice (the destination is a regular file). */
  readonly copy: boolean;
  /** A copy run: the guest pipe's size before the run shrank it (restored at the end), or 0. */
  pipeBytes: number;
  /** A copy run: attempts left to shrink the pipe. */
  shrinkTries: number;
  moved: number;
  reported: number;
  reportedAt: number;
  waits: number;
  /** What the run waits for; undefined: ready to transfer. */
  waitFd: number | undefined;
  waitEvents: number;
  /** While waiting for the source: when the grace runs out (performance.now()). */
  idleAt: number | undefined;
  /** `to` is a terminal (a pty master): moved by `stepTty`, read(2) + write(2) through `ttyBuf`. */
  readonly tty: boolean;
  /** A terminal run's own buffer, allocated by its first read; `[heldAt, heldEnd)` read from `from`, not yet written. */
  ttyBuf: Buffer | undefined;
  /** `ttyBuf`'s address (`Libc.addressOf`): its reads and writes pass numbers, not the Buffer. */
  ttyAt: number;
  /** The last read filled `ttyBuf`: a blocking run's next read takes TTY_STREAM_BYTES. */
  ttyFilled: boolean;
  heldAt: number;
  heldEnd: number;
  /** A terminal run the main thread can kick out of a parked write (`WorkerSetup.parking`): it may write blocking. */
  readonly kickable: boolean;
  /** The master's file status flags before `enterBlocking` cleared O_NONBLOCK, or -1: the master is as it was. */
  ttyFlags: number;
  /** While blocking: the thread's sleeps (`Libc.threadSleeps`) already counted in `waits`. */
  ttySleeps: number;
  /** A tee run (`startTee`): the log beside the client. */
  readonly tee?: TeeState | undefined;
  /** A via run's intermediate pipe (`stepVia`); `moved` counts what left it for `to`, `held` what it holds. */
  readonly via?: { readonly readFd: number; readonly writeFd: number; held: number } | undefined;
}

/**
 * A tee run's own state. Each cycle tees what the guest's pipe holds into `scratch` (no
 * copy: the pipe's pages are shared), splices `scratch` whole to the log (a file takes
 * everything), then splices those same bytes from the guest's pipe to the client. `ahead`
 * counts bytes already in the log but still at the head of the guest's pipe: no new tee
 * until they reached the client (a tee always starts at the pipe's head), so the guest is
 * held by the client exactly as on a plain run, and the log is never more than one tee
 * ahead of it.
 */
interface TeeState {
  readonly log: number;
  readonly scratchRead: number;
  readonly scratchWrite: number;
  /** Bytes in the log so far (the limit `left` counts these). */
  logged: number;
  ahead: number;
  /**
   * 0: the log is a file the run appends to. Otherwise the log is a ring of this many bytes
   * (a history without a `<log>`): the run writes at `logged` modulo it, from 0, so when the
   * run ends the ring's bytes before `logged % ringBytes`, wrapping, are its last ones.
   */
  readonly ringBytes: number;
}

const setup = workerData as WorkerSetup;
const endings = new Int32Array(setup.endings);
const parking = new Int32Array(setup.parking);
const c = libc();
const runs = new Map<number, Run>();
const drainBuf = Buffer.alloc(256);
let pollBuf = Buffer.alloc(8 * 8);
/** The one buffer of every `copy` run (one transfer at a time on this thread); allocated by the first. */
let copyBuf: Buffer | undefined;

function post(m: FromWorker): void {
  setup.port.postMessage(m);
}

/** Fan-out runs (data-plane-fanout.ts): stepped and polled by the same loop. */
const fans = new FanoutRuns({
  c,
  post,
  ended: () => {
    Atomics.add(endings, 0, 1);
    Atomics.notify(endings, 0);
  },
});

function end(run: Run, reason: 'stopped' | 'eof' | 'idle' | 'limit' | 'error', error?: string, unwritten?: Uint8Array): void {
  // The master's description outlives the run (the main thread's reader and writer use it).
  leaveBlocking(run);
  runs.delete(run.id);
  // The pipe is the guest's, not the run's: the next path gets it at its own size. Should the
  // per-user pipe budget refuse that now, it stays small: slower, never a lost byte.
  if (run.pipeBytes > 0) c.fcntlInt(run.from, F_SETPIPE_SZ, run.pipeBytes);
  c.closeFd(run.from);
  c.closeFd(run.to);
  const tee = run.tee;
  if (tee !== undefined) {
    c.closeFd(tee.log);
    c.closeFd(tee.scratchRead);
    c.closeFd(tee.scratchWrite);
  }
  if (run.via !== undefined) {
    c.closeFd(run.via.readFd);
    c.closeFd(run.via.writeFd);
  }
  // A terminal run's bytes read but not written go back in order, whatever ended it.
  const held = unwritten ?? (run.ttyBuf !== undefined && run.heldEnd > run.heldAt ? run.ttyBuf.subarray(run.heldAt, run.heldEnd) : undefined);
  post({
    op: 'ended',
    id: run.id,
    moved: run.moved,
    waits: run.waits,
    end: reason,
    ...(error !== undefined ? { error } : {}),
    ...(tee !== undefined ? { logged: tee.logged, ahead: tee.ahead } : {}),
    // A copy: the message is cloned, and the buffer is reused by the next run.
    ...(held !== undefined ? { unwritten: Uint8Array.from(held) } : {}),
  });
  // A main thread waiting in `DataPlaneRun.stop` takes the message now.
  Atomics.add(endings, 0, 1);
  Atomics.notify(endings, 0);
}

function pipeHolds(fd: number): boolean {
  // FIONREAD through koffi's variadic ioctl fills an int.
  return c.ioctlIntOut(fd, FIONREAD) > 0;
}

/** The guest has not written more yet: wait for it, for at most the run's grace. */
function waitSource(run: Run): void {
  run.waitFd = run.from;
  run.waitEvents = POLLIN;
  run.idleAt = performance.now() + run.graceMs;
}

/**
 * After a read, tee or splice from the guest's pipe gave `n` ≤ 0: end the run (end of file,
 * an error) or wait for the guest (EAGAIN). False on EINTR: try again.
 */
function sourceGaveNothing(run: Run, n: number): boolean {
  if (n === 0) {
    end(run, 'eof');
    return true;
  }
  const errno = c.errno();
  if (errno === EINTR) return false;
  if (errno !== EAGAIN) end(run, 'error', errnoName(errno));
  else waitSource(run);
  return true;
}

function waitRoom(run: Run): void {
  run.waits++;
  run.waitFd = run.to;
  run.waitEvents = POLLOUT;
}

/** Transfer until the run must wait or end. */
function step(run: Run): void {
  if (run.tty) {
    stepTty(run, runs.size === 1 && fans.size === 0);
    // However it left (waiting for the guest, a turn's end, a kick), the master is as it was.
    leaveBlocking(run);
    publishTtyWakeups();
    return;
  }
  run.waitFd = undefined;
  run.idleAt = undefined;
  if (run.tee !== undefined) {
    stepTee(run, run.tee);
    return;
  }
  if (run.copy) {
    stepFile(run);
    return;
  }
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
      if (n < len && run.left !== 0) {
        if (pipeHolds(run.from)) {
          // The destination took part of what the pipe holds: it is full (a pty takes a few
          // KiB at a time). Wait for room now rather than learn it from one more splice.
          waitRoom(run);
        } else {
          // It took all the pipe held: wait for the guest now rather than learn it from one
          // more splice (an interactive byte's hop costs one splice and this ioctl).
          waitSource(run);
        }
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
      waitSource(run);
    }
    return;
  }
  // Still moving: another turn after the others had theirs.
}

/**
 * The pollfds of `stepTty`'s own wait: the wake pipe (POLLIN), then the terminal (POLLOUT),
 * passed by address and read through typed views: that wait comes once per refill, tens of
 * thousands of times a second. Memory of its own (`addressOf`): a small `Buffer.alloc` may
 * live on V8's heap.
 */
const ttyPoll = Buffer.allocUnsafeSlow(16).fill(0);
const ttyPollAt = c.addressOf(ttyPoll);
/** `ttyPoll` as int32s: [0] the wake pipe's fd, [2] the terminal's. */
const ttyPollFds = new Int32Array(ttyPoll.buffer, ttyPoll.byteOffset, 4);
/** `ttyPoll` as uint16s: [2]/[3] the wake pipe's events/revents, [6]/[7] the terminal's. */
const ttyPollEvents = new Uint16Array(ttyPoll.buffer, ttyPoll.byteOffset, 8);
/**
 * A terminal run's buffer: most bytes one read(2) takes from the guest's pipe. A pty master
 * takes a few KiB per write, so this is many writes per read; a read that large wakes the
 * guest (blocked on its full pipe) once per 64 KiB, where a splice of 8 KiB woke it per
 * 8 KiB. Measured 64 KiB, 256 KiB and 1 MiB alike (docs/performance-notes.md); the smallest
 * keeps what a stop hands back to the main thread small.
 */
const TTY_BUF_BYTES = 64 * 1024;
/**
 * A run writing blocking (`enterBlocking`) whose read filled TTY_BUF_BYTES (the guest
 * streams) reads this much from then on: one read, one write and one return to this thread
 * per MiB, the guest woken once per MiB. Side harness, 128 MiB each, alternated, 3 rounds
 * (2026-12-04, another helper's test using one core): 1 MiB 163–171 MB/s at 1.20–1.28 s of
 * CPU per GiB; 64 KiB 143–167 MB/s at 1.52–1.68 s; socat 144–173 MB/s at 1.12–1.44 s.
 */
const TTY_STREAM_BYTES = 1024 * 1024;
/**
 * Fewest bytes held that a run alone on the thread writes blocking: more than a pty takes
 * at once (~13.5–20 KiB), so the write would wait. A smaller chunk (a prompt, a line, an
 * interactive burst) mostly fits, and is written as before, without the four calls that
 * switch the master to blocking and back.
 */
const TTY_BLOCKING_BYTES = 16 * 1024;
/** `stepTty`'s polls not yet added to the shared count (one atomic add per report, not per poll). */
let ttyWakeups = 0;

/**
 * A run into a terminal: read(2) what the guest's pipe holds into the run's own buffer,
 * write(2) it to the master (non-blocking) until it is short, wait for room, write again;
 * read again only once the buffer is empty. Alone on the thread (`alone`) it waits for room
 * right here, on the terminal and the wake pipe only; beside other runs it waits in the
 * loop's poll. Returns to the loop when the wake pipe has a byte (the loop takes the
 * messages, and comes back here), when the source is empty (the loop waits for it with
 * the run's grace), after SPLICES_PER_TURN transfers without a wait, or when the run
 * ended. What the buffer holds when the run ends, for whatever reason, goes back to the
 * main thread in `unwritten` (`end`), to be sent before anything newer.
 */
function stepTty(run: Run, alone: boolean): void {
  run.waitFd = undefined;
  run.idleAt = undefined;
  if (alone) {
    ttyPollFds[0] = setup.wakeFd;
    ttyPollEvents[2] = POLLIN;
    ttyPollFds[2] = run.to;
    ttyPollEvents[6] = POLLOUT;
  }
  if (run.ttyBuf === undefined) {
    run.ttyBuf = Buffer.allocUnsafe(TTY_BUF_BYTES);
    run.ttyAt = c.addressOf(run.ttyBuf);
  }
  let at = run.ttyAt;
  for (let i = 0; i < SPLICES_PER_TURN; i++) {
    if (run.heldAt === run.heldEnd) {
      if (run.left === 0) {
        end(run, 'limit');
        return;
      }
      if (run.ttyFilled && run.ttyFlags >= 0 && run.ttyBuf.length < TTY_STREAM_BYTES) {
        run.ttyBuf = Buffer.allocUnsafe(TTY_STREAM_BYTES);
        run.ttyAt = c.addressOf(run.ttyBuf);
        at = run.ttyAt;
      }
      const size = run.ttyBuf.length;
      const n = c.readAt(run.from, at, run.left > 0 ? Math.min(run.left, size) : size);
      if (n <= 0) {
        if (sourceGaveNothing(run, n)) return;
        continue;
      }
      run.heldAt = 0;
      run.heldEnd = n;
      run.ttyFilled = n === size;
      if (run.left > 0) run.left -= n;
    }
    if (alone && run.ttyFlags < 0 && run.kickable && run.heldEnd - run.heldAt >= TTY_BLOCKING_BYTES && !enterBlocking(run)) {
      // The wake pipe has a byte: the loop takes the messages first.
      return;
    }
    // Parked with bytes not yet reported, the main thread kicks the write after a while (`DataPlane.#checkParked`).
    if (run.ttyFlags >= 0) Atomics.store(parking, 1, run.moved !== run.reported ? 1 : 0);
    const w = c.writeAt(run.to, at + run.heldAt, run.heldEnd - run.heldAt);
    if (w > 0) {
      run.moved += w;
      run.heldAt += w;
      if (run.heldAt === run.heldEnd) {
        if (run.ttyFlags >= 0) reportTty(run, performance.now());
        continue;
      }
      // Short: the terminal is full (it takes a few KiB at a time), or a blocking write was kicked.
    } else {
      const errno = w < 0 ? c.errno() : EIO;
      if (errno === EINTR && run.ttyFlags < 0) continue;
      if (errno !== EAGAIN && errno !== EINTR) {
        end(run, 'error', errnoName(errno));
        return;
      }
    }
    if (run.ttyFlags >= 0) {
      // A blocking write returns short only when kicked (or interrupted): the main thread has
      // a message. The loop takes it, then comes back here if the run is still alone.
      leaveBlocking(run);
      return;
    }
    if (!alone) {
      waitRoom(run);
      return;
    }
    run.waits++;
    if (!ttyWaitRoom(run)) return;
    i = 0;
  }
  // Still moving: another turn after the loop had its look at the messages.
}

/**
 * Clears O_NONBLOCK on a terminal run's master, so that its writes wait for room inside the
 * kernel, as socat's relay does: no return to this thread per refill (a pty takes a few KiB
 * at a time), only per buffer written (TTY_BUF_BYTES, then TTY_STREAM_BYTES). Only for a run alone on the thread (nothing else waits
 * on it) whose master the main thread can kick (`DataPlane.#kickParked`), and only while
 * `stepTty` is writing: the master is the run's own again (O_NONBLOCK as it was) whenever
 * the thread is elsewhere. The main thread's pty reader shares the description; libuv reads
 * it only after EPOLLIN and reads again only after a read that filled its 64 KiB, which a
 * master never gives (its line discipline hands out at most 4 KiB), so it never waits in a
 * read. The run is announced, O_NONBLOCK cleared, then the wake pipe looked at: a wake-up
 * posted before the announcement was seen is found here (false: the loop takes the
 * messages), one posted after it kicks the write.
 */
function enterBlocking(run: Run): boolean {
  const flags = c.fcntlInt(run.to, F_GETFL, 0);
  // Already blocking (not a master chardev opened: those are O_NONBLOCK): left as it is.
  if (flags < 0 || (flags & O_NONBLOCK) === 0) return true;
  Atomics.store(parking, 0, run.id);
  run.ttyFlags = flags;
  run.ttySleeps = c.threadSleeps();
  if (c.fcntlInt(run.to, F_SETFL, flags & ~O_NONBLOCK) < 0 || c.ioctlIntOut(setup.wakeFd, FIONREAD) !== 0) {
    leaveBlocking(run);
    return false;
  }
  return true;
}

/** Undoes `enterBlocking` (a kick may have set O_NONBLOCK already: setting it again is harmless). */
function leaveBlocking(run: Run): void {
  if (run.ttyFlags < 0) return;
  countSleeps(run);
  c.fcntlInt(run.to, F_SETFL, run.ttyFlags);
  run.ttyFlags = -1;
  Atomics.store(parking, 0, 0);
}

/**
 * A blocking run's waits for room are the thread's sleeps while it writes (it sleeps nowhere
 * else then: the guest's pipe is read non-blocking), as a polling run counts its polls.
 */
function countSleeps(run: Run): void {
  const sleeps = c.threadSleeps();
  if (sleeps < 0 || run.ttySleeps < 0) return;
  run.waits += sleeps - run.ttySleeps;
  run.ttySleeps = sleeps;
}

/** Progress of a terminal run, when due (REPORT_MS). */
function reportTty(run: Run, now: number): void {
  if (run.moved !== run.reported && now >= run.reportedAt + REPORT_MS) {
    if (run.ttyFlags >= 0) countSleeps(run);
    run.reported = run.moved;
    run.reportedAt = now;
    post({ op: 'progress', id: run.id, moved: run.moved, waits: run.waits });
    publishTtyWakeups();
  }
}

/**
 * `stepTty`'s wait for room in the terminal (or POLLHUP/POLLERR: the next write says what
 * happened), reporting progress when due. False when the wake pipe has a byte: the run is
 * left ready to transfer, and the loop takes the messages first.
 */
function ttyWaitRoom(run: Run): boolean {
  for (;;) {
    const now = performance.now();
    reportTty(run, now);
    const timeout = run.moved !== run.reported ? Math.max(0, Math.ceil(run.reportedAt + REPORT_MS - now)) : -1;
    if (timeout < 0) publishTtyWakeups();
    const rc = c.pollAt(ttyPollAt, 2, timeout);
    if (timeout !== 0) ttyWakeups++;
    if (rc < 0) {
      if (c.errno() !== EINTR) throw new Error(`poll: ${errnoName(c.errno())}`);
      continue;
    }
    if (rc === 0) {
      // A timer ran out (no room came): counted now, as the loop counts every return.
      publishTtyWakeups();
      continue;
    }
    if (ttyPollEvents[3] !== 0) {
      publishTtyWakeups();
      return false;
    }
    if (ttyPollEvents[7] !== 0) return true;
  }
}

/**
 * Adds `stepTty`'s polls to the shared count: at every report, every timed-out poll, before
 * a wait with no end in sight and on leaving — so the count read while the reader stalls
 * is exact, and only the polls that found room are batched (up to REPORT_MS).
 */
function publishTtyWakeups(): void {
  if (ttyWakeups === 0) return;
  Atomics.add(endings, 1, ttyWakeups);
  ttyWakeups = 0;
}

/**
 * Copy `n` bytes from the scratch pipe to the log. Returns 0, or the errno that stopped it;
 * what did reach the log is counted in `tee.logged` and `tee.ahead` either way.
 */
function logTeed(tee: TeeState, n: number): number {
  if (tee.ringBytes > 0) return ringTeed(tee, n);
  // The log is this device's own file, but the JavaScript path appends through another
  // open file description of it between runs: start at its end.
  c.lseek(tee.log, 0, SEEK_END);
  const done = spliceAll(tee.scratchRead, tee.log, n);
  tee.logged += done;
  tee.ahead += done;
  return done < n ? spliceAllErrno : 0;
}

/**
 * `logTeed` into a ring: `n` bytes from the scratch pipe into the ring file, wrapping at its
 * end (more than the ring holds wraps more than once: the last bytes are what stays).
 */
function ringTeed(tee: TeeState, n: number): number {
  let left = n;
  while (left > 0) {
    const at = tee.logged % tee.ringBytes;
    const k = Math.min(left, tee.ringBytes - at);
    c.lseek(tee.log, at, SEEK_SET);
    const done = spliceAll(tee.scratchRead, tee.log, k);
    tee.logged += done;
    tee.ahead += done;
    left -= done;
    if (done < k) return spliceAllErrno;
  }
  return 0;
}

/** Why the last `spliceAll` stopped short (EIO for a splice that moved nothing). */
let spliceAllErrno = 0;

/**
 * Splices `n` bytes the pipe `from` holds into a file (a blocking splice: a file never waits
 * for room), again after EINTR. Returns what moved; short, `spliceAllErrno` says why.
 */
function spliceAll(from: number, to: number, n: number): number {
  let done = 0;
  while (done < n) {
    const m = c.splice(from, to, n - done, SPLICE_F_MOVE);
    if (m > 0) {
      done += m;
      continue;
    }
    const errno = m === 0 ? EIO : c.errno();
    if (errno === EINTR) continue;
    spliceAllErrno = errno;
    break;
  }
  return done;
}

/** A tee run's transfers: the log first, then the client, until the run must wait or end. */
function stepTee(run: Run, tee: TeeState): void {
  for (let i = 0; i < SPLICES_PER_TURN; i++) {
    if (tee.ahead > 0) {
      const n = c.splice(run.from, run.to, tee.ahead, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        run.moved += n;
        tee.ahead -= n;
        continue;
      }
      const errno = n === 0 ? EIO : c.errno();
      if (errno === EINTR) continue;
      // The bytes are in the pipe (teed): EAGAIN can only mean the client is full.
      if (errno === EAGAIN) waitRoom(run);
      else end(run, 'error', errnoName(errno));
      return;
    }
    if (run.left === 0) {
      end(run, 'limit');
      return;
    }
    const len = run.left > 0 ? Math.min(run.left, SPLICE_CHUNK) : SPLICE_CHUNK;
    const n = c.tee(run.from, tee.scratchWrite, len, SPLICE_F_NONBLOCK);
    if (n > 0) {
      const errno = logTeed(tee, n);
      // `ahead` was 0 before this tee: it is now what this tee put in the log.
      if (run.left > 0) run.left -= tee.ahead;
      if (errno !== 0) {
        // The main thread tells a log error from a client's by the prefix.
        end(run, 'error', `log:${errnoName(errno)}`);
        return;
      }
      continue;
    }
    // The scratch pipe is empty after every cycle: EAGAIN says the guest's pipe is.
    if (sourceGaveNothing(run, n)) return;
  }
}

/**
 * The thread's own pipe for `stepFile` (one transfer at a time on this thread, and empty
 * between two: a cycle writes all it took), made by the first copy run; null: it could not
 * be made, and copy runs read and write instead (`stepCopy`).
 */
let filePipe: PipeEnds | null | undefined;
/** Copy runs whose file refused a splice (EINVAL: its file system has no splice_write): `stepCopy` from then on. */
const copyByWrite = new WeakSet<Run>();

/**
 * `step` for a `copy` run: splice what the guest's pipe holds (up to FILE_PIPE_BYTES) into
 * the thread's own pipe, then splice all of it from there into the file, again. The first
 * splice only moves the guest's pages from one pipe to the other, so the guest's pipe is
 * locked for a moment, not for the copy into the page cache: the guest refills it while
 * this thread writes the file, as it does behind `cat`'s read(2), and each byte is copied
 * once here, where read(2) + write(2) copy it twice (the same relay in C beside `cat > file`,
 * 1 GiB, alternated, 5 rounds: 1.08–1.21× `cat`; docs/performance-notes.md). Only the
 * source is ever waited for: a splice into a regular file blocks until it is done or fails,
 * so between two cycles nothing is held here. What a failed splice left in the thread's
 * pipe goes back to the main thread, in order (`unwritten`).
 */
function stepFile(run: Run): void {
  if (filePipe === undefined) {
    try {
      // Its read end non-blocking: reading out what a failed splice left can never hang the thread.
      filePipe = makePipe({ size: FILE_PIPE_BYTES, nonBlockingRead: true });
    } catch {
      filePipe = null;
    }
  }
  const own = filePipe;
  if (own === null || copyByWrite.has(run)) {
    stepCopy(run);
    return;
  }
  for (let i = 0; i < SPLICES_PER_TURN; i++) {
    if (run.left === 0) {
      end(run, 'limit');
      return;
    }
    const len = run.left > 0 ? Math.min(run.left, FILE_PIPE_BYTES) : FILE_PIPE_BYTES;
    // The thread's pipe is empty: EAGAIN says the guest's pipe is.
    const n = c.splice(run.from, own.writeFd, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n <= 0) {
      if (sourceGaveNothing(run, n)) return;
      continue;
    }
    if (run.seekEnd) c.lseek(run.to, 0, SEEK_END);
    const written = spliceAll(own.readFd, run.to, n);
    if (written < n) {
      const errno = spliceAllErrno;
      const rest = takeFilePipe(own, n - written);
      if (errno === EINVAL && written === 0) {
        // This file takes no splice: write(2) it from now on, starting with these bytes.
        copyByWrite.add(run);
        if (!writeOut(run, rest, rest.length)) return;
        stepCopy(run);
        return;
      }
      run.moved += written;
      end(run, 'error', errnoName(errno), rest);
      return;
    }
    run.moved += n;
    if (run.left > 0) run.left -= n;
  }
}

/**
 * The `n` bytes a failed splice left in the thread's own pipe (what it took less what the
 * file took), read out so that the pipe is empty for the next run. Should a read fail
 * otherwise than on an empty pipe, the pipe is dropped and made again: never does a stale
 * byte reach another file.
 */
function takeFilePipe(own: PipeEnds, n: number): Buffer {
  const rest = Buffer.allocUnsafe(n);
  let got = 0;
  while (got < n) {
    const k = c.read(own.readFd, rest.subarray(got));
    if (k > 0) {
      got += k;
      continue;
    }
    const errno = k < 0 ? c.errno() : 0;
    if (errno === EINTR) continue;
    if (errno !== EAGAIN) {
      c.closeFd(own.readFd);
      c.closeFd(own.writeFd);
      filePipe = undefined;
    }
    break;
  }
  return rest.subarray(0, got);
}

/**
 * `n` bytes of `buf` to a `copy` run's file by write(2), counted in `run.moved`. False when a
 * write failed: the run ended, what did not reach the file handed back in order.
 */
function writeOut(run: Run, buf: Buffer, n: number): boolean {
  let written = 0;
  while (written < n) {
    const w = c.write(run.to, buf.subarray(written, n));
    if (w > 0) {
      written += w;
      continue;
    }
    const errno = w < 0 ? c.errno() : 0;
    if (errno === EINTR) continue;
    // What reached the file counts; the rest goes back to the main thread, in order.
    run.moved += written;
    end(run, 'error', w === 0 ? 'EIO' : errnoName(errno), buf.subarray(written, n));
    return false;
  }
  run.moved += n;
  if (run.left > 0) run.left -= n;
  return true;
}

/**
 * `stepFile` where the thread has no pipe of its own or the file takes no splice: read what
 * the guest's pipe holds (up to COPY_BYTES), write all of it to the file, again.
 */
function stepCopy(run: Run): void {
  copyBuf ??= Buffer.allocUnsafe(COPY_BYTES);
  const buf = copyBuf;
  for (let i = 0; i < SPLICES_PER_TURN; i++) {
    if (run.left === 0) {
      end(run, 'limit');
      return;
    }
    const len = run.left > 0 ? Math.min(run.left, COPY_BYTES) : COPY_BYTES;
    const n = c.read(run.from, len === COPY_BYTES ? buf : buf.subarray(0, len));
    if (n > 0) {
      // Right after a read emptied it, before the guest refills it during the write.
      if (run.shrinkTries > 0) shrinkPipe(run);
      if (run.seekEnd) c.lseek(run.to, 0, SEEK_END);
      if (!writeOut(run, buf, n)) return;
      continue;
    }
    if (sourceGaveNothing(run, n)) return;
  }
}

/** A copy run's COPY_PIPE_BYTES: tried after each read until it took or the tries ran out. */
function shrinkPipe(run: Run): void {
  run.shrinkTries--;
  const size = c.fcntlInt(run.from, F_GETPIPE_SZ, 0);
  if (size <= COPY_PIPE_BYTES) {
    run.shrinkTries = 0;
    return;
  }
  if (c.fcntlInt(run.from, F_SETPIPE_SZ, COPY_PIPE_BYTES) >= 0) {
    run.pipeBytes = size;
    run.shrinkTries = 0;
  }
}

/**
 * A via run's transfers: `via` → `to` (what the pipe holds reaches the guest first), then
 * `from` → `via`, until neither moves. Then the pipe still holding bytes means `to` is full
 * (wait for room there: the pipe fills no further, the socket's buffers fill and TCP holds
 * the client); an empty pipe means the client has not sent more (wait for it, for at most
 * the grace). Whatever the pipe holds when the run ends is the main thread's to deliver.
 * What the pipe holds is counted here (`via.held`: only this run writes to it and reads
 * from it), so an interactive byte costs two splices, in and out: a small take from the
 * socket means it is empty (`VIA_DRAINED_BYTES`).
 */
function stepVia(run: Run): void {
  const via = run.via;
  if (via === undefined) return;
  run.waitFd = undefined;
  run.idleAt = undefined;
  /** The last splice from the socket took less than VIA_DRAINED_BYTES: most likely all there was. */
  let drained = false;
  for (let i = 0; i < SPLICES_PER_TURN; i++) {
    let progressed = false;
    if (via.held > 0) {
      const out = c.splice(via.readFd, run.to, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (out > 0) {
        run.moved += out;
        via.held -= out;
        progressed = true;
      } else if (out < 0) {
        const errno = c.errno();
        if (errno === EINTR) continue;
        if (errno !== EAGAIN) {
          end(run, 'error', errnoName(errno));
          return;
        }
      }
    }
    if (drained && via.held === 0) {
      // Everything reached the guest and the socket was empty a moment ago: wait for the
      // client rather than ask it once more (an interactive byte's hop is then two splices;
      // bytes that came meanwhile make the poll return at once).
      waitSource(run);
      return;
    }
    const got = c.splice(run.from, via.writeFd, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (got > 0) {
      via.held += got;
      drained = got < VIA_DRAINED_BYTES;
      continue;
    }
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
    // Nothing more from the client (or the pipe is full): with the pipe empty, wait for the
    // client; else `to` took less than the pipe held (or nothing), so it is full.
    if (via.held === 0) {
      waitSource(run);
    } else if (progressed) {
      // `to` took some: ask it again before waiting for room.
      continue;
    } else {
      waitRoom(run);
    }
    return;
  }
}

function report(now: number): void {
  for (const run of runs.values()) {
    if (run.moved !== run.reported && now >= reportAt(run)) {
      run.reported = run.moved;
      run.reportedAt = now;
      post({ op: 'progress', id: run.id, moved: run.moved, waits: run.waits, ...(run.tee !== undefined ? { logged: run.tee.logged } : {}) });
    }
  }
}

/** A new run, ready to transfer: what every kind starts with, then what makes it that kind. */
function addRun(
  msg: { readonly id: number; readonly from: number; readonly to: number; readonly graceMs: number },
  left: number,
  kind: Partial<Pick<Run, 'seekEnd' | 'copy' | 'tty' | 'kickable' | 'tee' | 'via'>>,
): void {
  runs.set(msg.id, {
    id: msg.id,
    from: msg.from,
    to: msg.to,
    left,
    graceMs: msg.graceMs,
    seekEnd: false,
    copy: false,
    pipeBytes: 0,
    shrinkTries: kind.copy === true ? COPY_SHRINK_TRIES : 0,
    tty: false,
    ttyBuf: undefined,
    ttyAt: 0,
    ttyFilled: false,
    heldAt: 0,
    heldEnd: 0,
    kickable: false,
    ttyFlags: -1,
    ttySleeps: 0,
    moved: 0,
    reported: 0,
    reportedAt: performance.now(),
    waits: 0,
    waitFd: undefined,
    waitEvents: 0,
    idleAt: undefined,
    // Every kind's fields on every run, in one order: one object shape for the loop's reads.
    tee: undefined,
    via: undefined,
    ...kind,
  });
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
        addRun(msg, msg.limitBytes, { seekEnd: msg.seekEnd, copy: msg.copy, tty: c.isatty(msg.to) === 1, kickable: msg.kickable });
        break;
      case 'startTee':
        // A tee run steps through `stepTee` even into a terminal: the log comes first.
        addRun(msg, msg.limitBytes, {
          tee: { log: msg.log, scratchRead: msg.scratchRead, scratchWrite: msg.scratchWrite, logged: 0, ahead: 0, ringBytes: msg.ringBytes },
        });
        break;
      case 'fanout-start':
        fans.start(msg);
        break;
      case 'start-via':
        // The main thread emptied the pipe after the last run; count anything it left anyway.
        addRun(msg, -1, { via: { readFd: msg.viaRead, writeFd: msg.viaWrite, held: Math.max(0, c.ioctlIntOut(msg.viaRead, FIONREAD)) } });
        break;
      case 'stop': {
        const run = runs.get(msg.id);
        if (run !== undefined) end(run, 'stopped');
        else fans.stop(msg.id);
        break;
      }
      case 'quit':
        for (const run of [...runs.values()]) end(run, 'stopped');
        fans.stopAll();
        return false;
    }
  }
}

/** The runs waiting in this turn's poll (one array for every turn: the loop turns once per wake-up, an interactive byte's hop each). */
const waiting: Run[] = [];
let waitingCount = 0;
const noFanWaits: readonly FanPoll[] = [];

function loop(): void {
  for (;;) {
    let busy = false;
    // A run that ends deletes itself from the map: a Map's iteration goes on past it.
    for (const run of runs.values()) {
      if (run.waitFd === undefined) {
        if (run.via !== undefined) stepVia(run);
        else step(run);
        if (runs.has(run.id) && run.waitFd === undefined) busy = true;
      }
    }
    if (fans.size > 0 && fans.stepAll()) busy = true;
    const now = performance.now();
    report(now);
    if (fans.size > 0) fans.tick(now);
    waitingCount = 0;
    for (const run of runs.values()) if (run.waitFd !== undefined) waiting[waitingCount++] = run;
    // Nothing kept alive by a stale slot past the count.
    if (waiting.length > waitingCount) waiting.length = waitingCount;
    const fanWaits: readonly FanPoll[] = fans.size > 0 ? fans.pollEntries() : noFanWaits;
    const need = 8 * (waiting.length + fanWaits.length + 1);
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
    for (let i = 0; i < fanWaits.length; i++) {
      const w = fanWaits[i] as FanPoll;
      const at = 8 * (waiting.length + 1 + i);
      pollBuf.writeInt32LE(w.fd, at);
      pollBuf.writeInt16LE(w.events, at + 4);
      pollBuf.writeInt16LE(0, at + 6);
    }
    const fanAt = fans.size > 0 ? fans.deadline() : undefined;
    if (fanAt !== undefined) timeout = Math.min(timeout < 0 ? Infinity : timeout, Math.max(0, Math.ceil(fanAt - now)));
    if (busy) timeout = 0;
    const rc = c.poll(pollBuf, waiting.length + fanWaits.length + 1, timeout);
    if (timeout !== 0) Atomics.add(endings, 1, 1);
    if (rc < 0 && c.errno() !== EINTR) throw new Error(`poll: ${errnoName(c.errno())}`);
    if (rc > 0) {
      if (pollBuf.readUInt16LE(6) !== 0 && !takeMessages()) return;
      for (let i = 0; i < waiting.length; i++) {
        const run = waiting[i] as Run;
        // Any event (POLLHUP, POLLERR included): the next splice says what happened.
        if (pollBuf.readUInt16LE(8 * (i + 1) + 6) !== 0 && runs.has(run.id)) run.waitFd = undefined;
      }
      for (let i = 0; i < fanWaits.length; i++) {
        if (pollBuf.readUInt16LE(8 * (waiting.length + 1 + i) + 6) !== 0) fans.polled(fanWaits[i] as FanPoll);
      }
    }
    const later = performance.now();
    for (const run of runs.values()) {
      if (run.waitFd !== undefined && run.idleAt !== undefined && later >= run.idleAt) end(run, 'idle');
    }
    report(later);
    if (fans.size > 0) fans.tick(later);
  }
}

post({ op: 'ready' });
loop();
