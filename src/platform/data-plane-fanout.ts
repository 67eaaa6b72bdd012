/**
 * Fan-out runs on the data-plane thread (data-plane-worker.ts runs the loop; data-plane.ts
 * `startFanout` is the main thread's side): one guest pipe to a writer and any number of
 * viewers, with the hub's rules (core/hub.ts) and without a byte entering V8.
 *
 * A cycle: tee(2) the guest's pipe into the writer's pipe (W) — what W takes (k bytes) is
 * what leaves the guest's pipe this cycle, so a writer that is behind (W full) holds the
 * guest, as the JavaScript path's `room()` does; tee the same k bytes into each viewer's
 * pipe (pages shared by reference, no copy): what does not fit there is missed by that
 * viewer, counted (its bounded queue is its pipe); then drop the k bytes from the guest's
 * pipe by splicing them into /dev/null. Each pipe is spliced to its socket non-blocking
 * (zero copy on a TCP or UNIX socket). A viewer that missed output gets the hub's notice
 * (the count, framed as its transport frames notices) written into its pipe before any
 * further output, as `Hub.broadcast` tells it before its next chunk.
 *
 * Nothing is held back when a run ends: the bytes still in the writer's and viewers' pipes
 * (handed to them, not yet in their sockets) are read out and returned with the final
 * counts, and the main thread queues them on those clients' transports ahead of anything
 * later — so a stop is synchronous, exact and ordered, like a single-destination run's.
 */
import * as fs from 'node:fs';
import type { FanoutStartMsg, FanoutViewerCount, FromWorker } from './data-plane.ts';
import type { Libc } from './native.ts';
import { errnoName } from './platform.ts';
import { POLLIN, POLLOUT, FIONREAD, SPLICE_F_MOVE, SPLICE_F_NONBLOCK, EAGAIN, EINTR } from './linux-abi.ts';

/** Most bytes asked of one tee or splice; the pipes' room bounds what moves. */
const CHUNK = 16 * 1024 * 1024;
/** Guest cycles of one run before the other runs (and the wake pipe) get a look. */
const CYCLES_PER_TURN = 16;
const REPORT_MS = 20;
const QUIET_REPORT_MS = 1;

interface Out {
  readonly sock: number;
  readonly pipeR: number;
  readonly pipeW: number;
  /** Bytes in the pipe, not yet in the socket. */
  inPipe: number;
  /** The socket said EAGAIN: wait for POLLOUT before splicing again. */
  full: boolean;
}

interface Viewer extends Out {
  readonly clientId: number;
  /** No pipe: the client had bytes queued in Node at the start; it misses everything this run moves. */
  readonly excluded: boolean;
  /** Its socket failed: it gets nothing more (the main thread sees it leave). */
  gone: boolean;
  sent: number;
  missed: number;
  untold: number;
}

interface Fan {
  readonly id: number;
  readonly from: number;
  readonly writer: Out;
  readonly viewers: Viewer[];
  readonly graceMs: number;
  readonly noticeBefore: string;
  readonly noticeAfter: string;
  moved: number;
  waits: number;
  reported: number;
  reportedAt: number;
  /** Waiting for the guest (its pipe empty): when the grace runs out. */
  idleAt: number | undefined;
  /** The writer's pipe is full: the guest is held until the writer's socket takes more. */
  held: boolean;
  /** Something to do without waiting. */
  ready: boolean;
}

export interface FanoutHost {
  readonly c: Libc;
  post(m: FromWorker): void;
  /** A run ended: wake a main thread waiting in `stop`. */
  ended(): void;
}

/** One entry of the loop's poll set. */
export interface FanPoll {
  readonly fd: number;
  readonly events: number;
  readonly fan: Fan;
}

export class FanoutRuns {
  readonly #host: FanoutHost;
  readonly #fans = new Map<number, Fan>();
  #nullFd = -1;

  constructor(host: FanoutHost) {
    this.#host = host;
  }

  get size(): number {
    return this.#fans.size;
  }

  start(msg: FanoutStartMsg): void {
    if (this.#nullFd < 0) this.#nullFd = fs.openSync('/dev/null', 'w');
    const out = (sock: number, pipeR: number, pipeW: number): Out => ({ sock, pipeR, pipeW, inPipe: 0, full: false });
    this.#fans.set(msg.id, {
      id: msg.id,
      from: msg.from,
      writer: out(msg.writer.sock, msg.writer.pipeR, msg.writer.pipeW),
      viewers: msg.viewers.map((v) => ({
        ...out(v.sock, v.pipeR, v.pipeW),
        clientId: v.clientId,
        excluded: v.pipeR < 0,
        gone: false,
        sent: 0,
        missed: 0,
        untold: v.untold,
      })),
      graceMs: msg.graceMs,
      noticeBefore: msg.noticeBefore,
      noticeAfter: msg.noticeAfter,
      moved: 0,
      waits: 0,
      reported: 0,
      reportedAt: performance.now(),
      idleAt: undefined,
      held: false,
      ready: true,
    });
  }

  /** False if no fan-out run has this id. */
  stop(id: number): boolean {
    const fan = this.#fans.get(id);
    if (fan === undefined) return false;
    this.#end(fan, 'stopped');
    return true;
  }

  stopAll(): void {
    for (const fan of [...this.#fans.values()]) this.#end(fan, 'stopped');
  }

  /** Work every run that can go on; true if some run can go on at once. */
  stepAll(): boolean {
    let busy = false;
    for (const fan of [...this.#fans.values()]) {
      if (!fan.ready) continue;
      this.#step(fan);
      if (this.#fans.has(fan.id) && fan.ready) busy = true;
    }
    return busy;
  }

  /** What the runs wait for. */
  pollEntries(): FanPoll[] {
    const entries: FanPoll[] = [];
    for (const fan of this.#fans.values()) {
      if (fan.ready) continue;
      if (fan.held) entries.push({ fd: fan.writer.sock, events: POLLOUT, fan });
      else entries.push({ fd: fan.from, events: POLLIN, fan });
      if (fan.writer.full && !fan.held) entries.push({ fd: fan.writer.sock, events: POLLOUT, fan });
      for (const v of fan.viewers) if (v.full && v.inPipe > 0 && !v.gone) entries.push({ fd: v.sock, events: POLLOUT, fan });
    }
    return entries;
  }

  /** poll(2) said something about `entry` (any event: the next transfer says what happened). */
  polled(entry: FanPoll): void {
    const fan = entry.fan;
    if (!this.#fans.has(fan.id)) return;
    fan.ready = true;
    if (entry.fd === fan.writer.sock) fan.writer.full = false;
    for (const v of fan.viewers) if (v.sock === entry.fd) v.full = false;
  }

  /** The earliest time a run needs the loop back (grace, report), or undefined. */
  deadline(): number | undefined {
    let at: number | undefined;
    for (const fan of this.#fans.values()) {
      const mine = [fan.idleAt, fan.moved !== fan.reported ? reportAt(fan) : undefined];
      for (const t of mine) if (t !== undefined) at = at === undefined ? t : Math.min(at, t);
    }
    return at;
  }

  /** Runs whose guest stayed quiet for their grace end; due progress is reported. */
  tick(now: number): void {
    for (const fan of [...this.#fans.values()]) {
      if (!fan.ready && fan.idleAt !== undefined && now >= fan.idleAt) {
        this.#end(fan, 'idle');
        continue;
      }
      if (fan.moved !== fan.reported && now >= reportAt(fan)) this.#report(fan, now);
    }
  }

  #report(fan: Fan, now: number): void {
    fan.reported = fan.moved;
    fan.reportedAt = now;
    this.#host.post({ op: 'fanout-progress', id: fan.id, moved: fan.moved, waits: fan.waits, viewers: counts(fan) });
  }

  #step(fan: Fan): void {
    fan.ready = false;
    fan.idleAt = undefined;
    for (let i = 0; i < CYCLES_PER_TURN; i++) {
      if (!this.#flushAll(fan)) return;
      const k = this.#take(fan);
      if (k === undefined) return;
      if (k === 0) {
        // The guest has nothing, or the writer's pipe is full: flushed above, so wait.
        this.#flushAll(fan);
        return;
      }
    }
    fan.ready = true;
  }

  /** Splice every pipe into its socket as far as it goes. False if the run ended (the writer's socket failed). */
  #flushAll(fan: Fan): boolean {
    const err = this.#flush(fan.writer);
    if (err !== undefined) {
      this.#end(fan, 'error', err);
      return false;
    }
    for (const v of fan.viewers) {
      if (v.gone || v.excluded) continue;
      // A viewer whose socket failed is leaving: the main thread sees it go and stops the run.
      if (this.#flush(v) !== undefined) v.gone = true;
    }
    return true;
  }

  /** Errno name on failure. */
  #flush(o: Out): string | undefined {
    const c = this.#host.c;
    while (o.inPipe > 0 && !o.full) {
      const n = c.splice(o.pipeR, o.sock, CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        o.inPipe -= n;
        continue;
      }
      const errno = c.errno();
      if (n < 0 && errno === EINTR) continue;
      if (n < 0 && errno === EAGAIN) {
        o.full = true;
        return undefined;
      }
      return n === 0 ? 'EPIPE' : errnoName(errno);
    }
    return undefined;
  }

  /**
   * One guest cycle: the bytes the writer's pipe takes leave the guest's pipe, after each
   * viewer got what fits of them. Returns the bytes taken (0: nothing to take now, the run
   * waits), or undefined when the run ended.
   */
  #take(fan: Fan): number | undefined {
    const c = this.#host.c;
    const w = fan.writer;
    const k = c.tee(fan.from, w.pipeW, CHUNK, SPLICE_F_NONBLOCK);
    if (k === 0) {
      this.#end(fan, 'eof');
      return undefined;
    }
    if (k < 0) {
      const errno = c.errno();
      if (errno === EINTR) return this.#take(fan);
      if (errno !== EAGAIN) {
        this.#end(fan, 'error', errnoName(errno));
        return undefined;
      }
      if (c.ioctlIntOut(fan.from, FIONREAD) > 0) {
        // The writer's pipe is full: the guest waits for the writer, as QEMU's flow control wants.
        if (!fan.held) fan.waits++;
        fan.held = true;
      } else {
        fan.held = false;
        fan.idleAt = performance.now() + fan.graceMs;
      }
      return 0;
    }
    fan.held = false;
    w.inPipe += k;
    for (const v of fan.viewers) this.#give(v, fan, k);
    // The k bytes are in every pipe that had room: drop them from the guest's.
    let left = k;
    while (left > 0) {
      const n = c.splice(fan.from, this.#nullFd, left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        left -= n;
        continue;
      }
      if (n < 0 && c.errno() === EINTR) continue;
      // The bytes tee'd are in the pipe and only this thread reads it: this cannot fail.
      throw new Error(`fan-out: dropping ${left} bytes teed from the guest's pipe: ${n === 0 ? 'EOF' : errnoName(c.errno())}`);
    }
    fan.moved += k;
    return k;
  }

  /** The k bytes at the head of the guest's pipe, to one viewer: what fits in its pipe, the rest missed. */
  #give(v: Viewer, fan: Fan, k: number): void {
    if (v.excluded || v.gone) {
      v.missed += k;
      if (!v.gone) v.untold += k;
      return;
    }
    if (v.untold > 0) {
      // Told before anything more reaches it; a pipe write this small is all or nothing.
      const text = Buffer.from(`${fan.noticeBefore}${v.untold}${fan.noticeAfter}`);
      let wrote = 0;
      try {
        wrote = fs.writeSync(v.pipeW, text);
      } catch {
        // EAGAIN: its pipe is full; it misses these too.
      }
      if (wrote !== text.length) {
        v.missed += k;
        v.untold += k;
        return;
      }
      v.inPipe += wrote;
      v.untold = 0;
    }
    const c = this.#host.c;
    let t = c.tee(fan.from, v.pipeW, k, SPLICE_F_NONBLOCK);
    if (t < 0) t = 0;
    v.sent += t;
    v.inPipe += t;
    if (t < k) {
      v.missed += k - t;
      v.untold += k - t;
    }
  }

  #end(fan: Fan, reason: 'stopped' | 'eof' | 'idle' | 'error', error?: string): void {
    this.#fans.delete(fan.id);
    const c = this.#host.c;
    const writerLeft = drain(c, fan.writer);
    const viewersLeft = fan.viewers.map((v) => (v.excluded || v.gone ? null : drain(c, v)));
    c.closeFd(fan.from);
    for (const o of [fan.writer, ...fan.viewers]) {
      c.closeFd(o.sock);
      if (o.pipeR >= 0) c.closeFd(o.pipeR);
      if (o.pipeW >= 0) c.closeFd(o.pipeW);
    }
    this.#host.post({
      op: 'fanout-ended',
      id: fan.id,
      moved: fan.moved,
      waits: fan.waits,
      viewers: counts(fan),
      writerLeft,
      viewersLeft,
      end: reason,
      ...(error !== undefined ? { error } : {}),
    });
    this.#host.ended();
  }
}

function counts(fan: Fan): FanoutViewerCount[] {
  return fan.viewers.map((v) => ({ clientId: v.clientId, sent: v.sent, missed: v.missed, untold: v.untold }));
}

function reportAt(fan: Fan): number {
  const regular = fan.reportedAt + REPORT_MS;
  return fan.idleAt === undefined ? regular : Math.min(regular, fan.idleAt - fan.graceMs + QUIET_REPORT_MS);
}

/** What a pipe still holds for its socket, read out (at most the pipe's size). */
function drain(c: Libc, o: Out): Uint8Array | null {
  if (o.inPipe <= 0 || o.pipeR < 0) return null;
  const buf = Buffer.alloc(o.inPipe);
  let got = 0;
  while (got < buf.length) {
    const n = c.read(o.pipeR, buf.subarray(got));
    if (n > 0) got += n;
    else if (n < 0 && c.errno() === EINTR) continue;
    else break;
  }
  return got > 0 ? new Uint8Array(buf.buffer, buf.byteOffset, got) : null;
}
