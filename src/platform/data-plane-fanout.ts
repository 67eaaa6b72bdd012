/**
 * Fan-out runs on the data-plane thread (data-plane-worker.ts runs the loop; data-plane.ts
 * `startFanout` is the main thread's side): one guest pipe to a writer and any number of
 * viewers, with the hub's rules (core/hub.ts) and without a byte entering V8.
 *
 * The guest's bytes are read once into a ring of the run's own; every client has its place
 * in it and is sent what lies between its place and the head, non-blocking. The writer may
 * be at most its queue (`writer.queueBytes`) behind the head, and the guest is read only
 * into that room: a writer that is behind holds the guest, as the JavaScript path's
 * `room()` does. A viewer further behind than its queue misses the oldest bytes of it (its
 * place moves up), counted; it is told with the hub's notice (the count, framed as its
 * transport frames notices) before its next bytes, as `Hub.broadcast` tells it.
 *
 * Why a copy and not tee(2): measured here (the bench's fan-out floors in C, 2026-12), tee
 * into a pipe per client and splice(2) to each socket reached 1.65–2.16× one client, the
 * same work by one read into a ring and one send per client 2.56–2.88×, every viewer keeping
 * up: a socket takes a copy at once, where it takes a pipe's pages one reference at a time.
 *
 * Nothing is held back when a run ends: what lies between each client's place and the head
 * (handed to it, not yet in its socket) is returned with the final counts, and the main
 * thread queues it on that client's transport ahead of anything later — so a stop is
 * synchronous, exact and ordered, like a single-destination run's.
 */
import type { FanoutStartMsg, FanoutViewerCount, FromWorker } from './data-plane.ts';
import type { Libc } from './native.ts';
import { errnoName } from './platform.ts';
import { POLLIN, POLLOUT, EAGAIN, EINTR } from './linux-abi.ts';
import { reportAt } from './data-plane-schedule.ts';

/** Guest cycles of one run before the other runs (and the wake pipe) get a look. */
const CYCLES_PER_TURN = 16;
/** send(2) flags: never block (the socket is non-blocking already), and a gone reader is EPIPE, not SIGPIPE. */
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const SEND_FLAGS = MSG_DONTWAIT | MSG_NOSIGNAL;

interface Out {
  readonly sock: number;
  /** How far behind the head it may be: the writer holds the guest there, a viewer misses beyond it. */
  readonly queueBytes: number;
  /** Its place in the stream: bytes before it are in its socket, or were missed. */
  at: number;
  /**
   * The socket said EAGAIN at the last try: a run with nothing else to do waits for its
   * POLLOUT too. Every guest cycle tries it again all the same: the loop polls only when the
   * run waits, and a viewer whose socket drained meanwhile must have its next bytes before it
   * falls a whole queue behind (one EAGAIN per full socket per cycle is the cost).
   */
  full: boolean;
}

interface Viewer extends Out {
  readonly clientId: number;
  /** No socket: the client had bytes queued in Node at the start; it misses everything this run moves. */
  readonly excluded: boolean;
  /** Its socket failed: it gets nothing more (the main thread sees it leave). */
  gone: boolean;
  sent: number;
  missed: number;
  untold: number;
  /** The rest of a notice being sent, before any more of the stream. */
  notice: Buffer | undefined;
}

interface Fan {
  readonly id: number;
  readonly from: number;
  readonly ring: Buffer;
  /** The ring's address (`Libc.addressOf`): reads and sends name a place in it without a view per call. */
  readonly ringAt: number;
  /** Bytes read from the guest so far: the stream position the ring ends at. */
  head: number;
  readonly writer: Out;
  readonly viewers: Viewer[];
  readonly graceMs: number;
  readonly noticeBefore: string;
  readonly noticeAfter: string;
  waits: number;
  reported: number;
  reportedAt: number;
  /** Waiting for the guest (its pipe empty): when the grace runs out. */
  idleAt: number | undefined;
  /** The writer is a whole queue behind: the guest is held until its socket takes more. */
  held: boolean;
  /** Something to do without waiting. */
  ready: boolean;
  /** FanoutStartMsg.history's ring, or -1; closed with the run. */
  readonly historyFd: number;
  readonly historyBytes: number;
}

/** The C calls a fan-out run makes (a test scripts them: test/platform/fanout-run.test.ts). */
export type FanoutLibc = Pick<Libc, 'addressOf' | 'readAt' | 'sendAt' | 'pwriteAt' | 'write' | 'errno' | 'closeFd'>;

export interface FanoutHost {
  readonly c: FanoutLibc;
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

  constructor(host: FanoutHost) {
    this.#host = host;
  }

  get size(): number {
    return this.#fans.size;
  }

  start(msg: FanoutStartMsg): void {
    const viewers = msg.viewers.map((v) => client(v.sock, v.queueBytes, v.clientId, v.untold));
    // A read goes only into the writer's room, so the ring holds the farthest-behind
    // client's queue and one read more without overwriting a byte someone still needs.
    const farthest = Math.max(msg.writer.queueBytes, ...viewers.map((v) => v.queueBytes));
    // Memory of its own outside V8's heap, so its address stays valid while the run holds it.
    const ring = Buffer.allocUnsafeSlow(farthest + msg.writer.queueBytes);
    this.#fans.set(msg.id, {
      id: msg.id,
      from: msg.from,
      ring,
      ringAt: this.#host.c.addressOf(ring),
      head: 0,
      // The writer has a viewer's shape (its viewer fields unused), so the hot loop sees one kind of object.
      writer: client(msg.writer.sock, msg.writer.queueBytes, -1, 0),
      viewers,
      graceMs: msg.graceMs,
      noticeBefore: msg.noticeBefore,
      noticeAfter: msg.noticeAfter,
      waits: 0,
      reported: 0,
      reportedAt: performance.now(),
      idleAt: undefined,
      held: false,
      ready: true,
      historyFd: msg.history?.fd ?? -1,
      historyBytes: msg.history?.bytes ?? 0,
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
      for (const v of fan.viewers) if (v.full && !v.gone && !v.excluded) entries.push({ fd: v.sock, events: POLLOUT, fan });
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
      const mine = [fan.idleAt, fan.head !== fan.reported ? reportAt(fan) : undefined];
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
      if (fan.head !== fan.reported && now >= reportAt(fan)) this.#report(fan, now);
    }
  }

  #report(fan: Fan, now: number): void {
    fan.reported = fan.head;
    fan.reportedAt = now;
    this.#host.post({ op: 'fanout-progress', id: fan.id, moved: fan.head, waits: fan.waits, viewers: counts(fan) });
  }

  #step(fan: Fan): void {
    fan.ready = false;
    fan.idleAt = undefined;
    for (let i = 0; i < CYCLES_PER_TURN; i++) {
      if (!this.#sendAll(fan)) return;
      const k = this.#take(fan);
      if (k === undefined) return;
      if (k === 0) {
        // The guest has nothing, or the writer is a queue behind: sent above, so wait.
        this.#sendAll(fan);
        return;
      }
    }
    fan.ready = true;
  }

  /** Send every client what it has to go, as far as its socket takes. False if the run ended (the writer's socket failed). */
  #sendAll(fan: Fan): boolean {
    const err = this.#send(fan, fan.writer, undefined);
    if (err !== undefined) {
      this.#end(fan, 'error', err);
      return false;
    }
    for (const v of fan.viewers) {
      if (v.gone || v.excluded) continue;
      // A viewer whose socket failed is leaving: the main thread sees it go and stops the run.
      if (this.#send(fan, v, v) !== undefined) {
        v.gone = true;
        v.missed += fan.head - v.at;
        v.at = fan.head;
      }
    }
    return true;
  }

  /** Errno name on failure. `viewer` is `o` when it is a viewer: its notice goes first, its bytes are counted. */
  #send(fan: Fan, o: Out, viewer: Viewer | undefined): string | undefined {
    const c = this.#host.c;
    const size = fan.ring.length;
    o.full = false;
    for (;;) {
      if (viewer !== undefined && viewer.notice === undefined && viewer.untold > 0 && viewer.at < fan.head) {
        // Told before anything more reaches it, however often it missed meanwhile.
        viewer.notice = noticeOf(fan, viewer);
      }
      const notice = viewer?.notice;
      let n: number;
      if (notice !== undefined) n = c.write(o.sock, notice);
      else {
        if (o.at >= fan.head) return undefined;
        const off = o.at % size;
        n = c.sendAt(o.sock, fan.ringAt + off, Math.min(size - off, fan.head - o.at), SEND_FLAGS);
      }
      if (n > 0) {
        if (viewer !== undefined && notice !== undefined) viewer.notice = n === notice.length ? undefined : notice.subarray(n);
        else {
          o.at += n;
          if (viewer !== undefined) viewer.sent += n;
        }
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
  }

  /**
   * One guest cycle: read into the writer's room in the ring (never past the ring's end in
   * one read). Returns the bytes taken (0: nothing to take now, the run waits), or
   * undefined when the run ended.
   */
  #take(fan: Fan): number | undefined {
    const c = this.#host.c;
    const w = fan.writer;
    const room = w.queueBytes - (fan.head - w.at);
    if (room <= 0) {
      // The writer is a whole queue behind: the guest waits for it, as QEMU's flow control wants.
      if (!fan.held) fan.waits++;
      fan.held = true;
      return 0;
    }
    const off = fan.head % fan.ring.length;
    const k = c.readAt(fan.from, fan.ringAt + off, Math.min(room, fan.ring.length - off));
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
      fan.held = false;
      fan.idleAt = performance.now() + fan.graceMs;
      return 0;
    }
    fan.held = false;
    fan.head += k;
    if (fan.historyFd >= 0) {
      const kept = keep(c, fan, off, k);
      if (kept < fan.head) {
        this.#end(fan, 'error', `history:${errnoName(c.errno())}`, kept);
        return undefined;
      }
    }
    for (const v of fan.viewers) {
      if (v.excluded || v.gone) {
        v.missed += k;
        if (!v.gone) v.untold += k;
        v.at = fan.head;
        continue;
      }
      const behind = fan.head - v.at - v.queueBytes;
      if (behind > 0) {
        // Its queue overflowed: the oldest of it is missed (the ring is about to reuse it).
        v.at += behind;
        v.missed += behind;
        v.untold += behind;
      }
    }
    return k;
  }

  /** `historyKept`: how far the history ring has the stream (`keep`); all of it unless a write failed. */
  #end(fan: Fan, reason: 'stopped' | 'eof' | 'idle' | 'error', error?: string, historyKept = fan.head): void {
    this.#fans.delete(fan.id);
    const c = this.#host.c;
    const writerLeft = copyOut(fan, fan.writer.at, []);
    const viewersLeft = fan.viewers.map((v) => {
      if (v.excluded || v.gone) return null;
      // The rest of a notice it was being sent goes first; what it missed since (or before
      // its place, if no notice was under way) is told after it, ahead of the bytes after it.
      const told = v.notice !== undefined ? [v.notice] : [];
      v.notice = undefined;
      if (v.untold > 0 && v.at < fan.head) told.push(noticeOf(fan, v));
      // Handed to it now, ahead of anything later: counted as sent like the rest.
      v.sent += fan.head - v.at;
      return copyOut(fan, v.at, told);
    });
    c.closeFd(fan.from);
    if (fan.historyFd >= 0) c.closeFd(fan.historyFd);
    for (const o of [fan.writer, ...fan.viewers]) if (o.sock >= 0) c.closeFd(o.sock);
    this.#host.post({
      op: 'fanout-ended',
      id: fan.id,
      moved: fan.head,
      waits: fan.waits,
      viewers: counts(fan),
      writerLeft,
      viewersLeft,
      ...(fan.historyFd >= 0 ? { historyKept, historyLeft: copyOut(fan, historyKept, []) } : {}),
      end: reason,
      ...(error !== undefined ? { error } : {}),
    });
    this.#host.ended();
  }
}

/**
 * The `k` bytes just read (at `off` in the run's ring, ending at `head`) into the history
 * ring at their stream positions modulo its size; of more than it holds, only the last (the
 * rest would be written over). Returns how far the ring has the stream: `head`, or less when
 * a write failed; then the ring's last `historyBytes` before that point are still the
 * stream's and what follows it is this read's rest, which the run hands back (`historyLeft`):
 * with none of it skipped, the writes so far went only over bytes older than those; with
 * some skipped, the whole read is handed back, and it is more than the history holds.
 */
function keep(c: FanoutLibc, fan: Fan, off: number, k: number): number {
  const size = fan.historyBytes;
  const skip = Math.max(0, k - size);
  let pos = fan.head - k + skip;
  let addr = fan.ringAt + off + skip;
  let left = k - skip;
  while (left > 0) {
    const at = pos % size;
    const w = c.pwriteAt(fan.historyFd, addr, Math.min(left, size - at), at);
    if (w <= 0) {
      if (w < 0 && c.errno() === EINTR) continue;
      return skip > 0 ? fan.head - k : pos;
    }
    pos += w;
    addr += w;
    left -= w;
  }
  return fan.head;
}

/** A client of a run: every one, the writer too, made here with the same fields in the same order (one shape for V8). */
function client(sock: number, queueBytes: number, clientId: number, untold: number): Viewer {
  return { sock, queueBytes, at: 0, full: false, clientId, excluded: sock < 0, gone: false, sent: 0, missed: 0, untold, notice: undefined };
}

function counts(fan: Fan): FanoutViewerCount[] {
  return fan.viewers.map((v) => ({ clientId: v.clientId, sent: v.sent, missed: v.missed, untold: v.untold }));
}

/** The missed-output notice for what `v` missed so far, which it now counts as told. */
function noticeOf(fan: Fan, v: Viewer): Buffer {
  const text = Buffer.from(`${fan.noticeBefore}${v.untold}${fan.noticeAfter}`);
  v.untold = 0;
  return text;
}

/** Stream bytes from `from` up to the head (still in the run's ring), after `head` (a viewer's notice), copied out; null for none. */
function copyOut(fan: Fan, from: number, head: Buffer[]): Uint8Array | null {
  const n = fan.head - from;
  const parts = [...head];
  const off = from % fan.ring.length;
  const first = Math.min(n, fan.ring.length - off);
  if (first > 0) parts.push(fan.ring.subarray(off, off + first));
  if (n > first) parts.push(fan.ring.subarray(0, n - first));
  if (parts.length === 0) return null;
  const out = Buffer.concat(parts);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
