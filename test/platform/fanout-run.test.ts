/**
 * A fan-out run (src/platform/data-plane-fanout.ts) driven step by step through scripted C
 * calls, so that what a socket takes, and when, is exact: the guest's pipe gives 64 KiB per
 * read, the writer's socket takes everything, the viewer's takes what the script allows.
 * The end-to-end fan-out tests (test/flow/splice.test.ts) use real processes; this one pins
 * down an order of events a real run only sometimes meets.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutRuns, type FanoutLibc } from '../../src/platform/data-plane-fanout.ts';
import type { FromWorker } from '../../src/platform/data-plane.ts';

const GUEST = 10;
const WRITER = 11;
const VIEWER = 12;
const HISTORY = 13;
const EAGAIN = 11;
const ENOMEM = 12;
const KiB = 1024;
const CHUNK = 64 * KiB;

/** The C calls of one run, scripted: buffers are found by a made-up address per `addressOf`. */
class Script implements FanoutLibc {
  readonly stream: Buffer;
  /** Bytes of `stream` the guest has written so far (readable from its pipe). */
  written = 0;
  read = 0;
  /** What the viewer's socket takes before it says EAGAIN. */
  viewerRoom = 0;
  /** The history ring file (fd HISTORY), and how many more bytes its writes take before one fails (ENOMEM). */
  history = Buffer.alloc(0);
  historyRoom = Number.POSITIVE_INFINITY;
  readonly received = new Map<number, Buffer[]>([
    [WRITER, []],
    [VIEWER, []],
  ]);
  #errno = 0;
  #bufs = new Map<number, Buffer>();
  #nextBase = 1 << 20;

  constructor(bytes: number) {
    this.stream = Buffer.alloc(bytes);
    for (let i = 0; i < bytes; i++) this.stream[i] = (i * 31 + (i >> 12)) & 0xff;
  }

  bytesOf(fd: number): Buffer {
    return Buffer.concat(this.received.get(fd) ?? []);
  }

  #span(address: number, len: number): Buffer {
    for (const [base, buf] of this.#bufs) if (address >= base && address + len <= base + buf.length) return buf.subarray(address - base, address - base + len);
    throw new Error(`no buffer holds ${len} bytes at ${address}`);
  }

  #take(fd: number, bytes: Buffer): number {
    const room = fd === VIEWER ? this.viewerRoom : Number.POSITIVE_INFINITY;
    const n = Math.min(bytes.length, room);
    if (n === 0) {
      this.#errno = EAGAIN;
      return -1;
    }
    if (fd === VIEWER) this.viewerRoom -= n;
    this.received.get(fd)?.push(Buffer.from(bytes.subarray(0, n)));
    return n;
  }

  addressOf(buf: Buffer): number {
    const base = this.#nextBase;
    this.#nextBase += 1 << 30;
    this.#bufs.set(base, buf);
    return base;
  }
  readAt(fd: number, address: number, len: number): number {
    assert.equal(fd, GUEST);
    const n = Math.min(len, CHUNK, this.written - this.read);
    if (n === 0) {
      this.#errno = EAGAIN;
      return -1;
    }
    this.stream.copy(this.#span(address, n), 0, this.read, this.read + n);
    this.read += n;
    return n;
  }
  pwriteAt(fd: number, address: number, len: number, offset: number): number {
    assert.equal(fd, HISTORY);
    assert.ok(offset + len <= this.history.length, `a write within the ring (${offset} + ${len} > ${this.history.length})`);
    const n = Math.min(len, this.historyRoom);
    if (n === 0) {
      this.#errno = ENOMEM;
      return -1;
    }
    this.historyRoom -= n;
    this.#span(address, n).copy(this.history, offset);
    return n;
  }
  sendAt(fd: number, address: number, len: number): number {
    return this.#take(fd, this.#span(address, len));
  }
  write(fd: number, buf: Buffer): number {
    return this.#take(fd, buf);
  }
  errno(): number {
    return this.#errno;
  }
  closeFd(): number {
    return 0;
  }
}

function startRun(c: Script, posts: FromWorker[], historyBytes = 0): FanoutRuns {
  const runs = new FanoutRuns({ c, post: (m) => posts.push(m), ended: () => {} });
  runs.start({
    op: 'fanout-start',
    id: 1,
    from: GUEST,
    writer: { sock: WRITER, queueBytes: 256 * KiB },
    viewers: [{ clientId: 7, sock: VIEWER, queueBytes: 256 * KiB, untold: 0 }],
    graceMs: 20,
    noticeBefore: '<',
    noticeAfter: '>',
    ...(historyBytes > 0 ? { history: { fd: HISTORY, bytes: historyBytes } } : {}),
  });
  if (historyBytes > 0) c.history = Buffer.alloc(historyBytes);
  return runs;
}

/** The notices at the start of `data` (`<N>` each): the bytes they tell of, and where the stream goes on. */
function leadingNotices(data: Buffer): { told: number; at: number } {
  let told = 0;
  let at = 0;
  for (;;) {
    const m = /^<(\d+)>/.exec(data.subarray(at, at + 32).toString('latin1'));
    if (m === null) return { told, at };
    told += Number(m[1]);
    at += m[0].length;
  }
}

describe('fan-out run: a viewer whose socket was full', () => {
  it('is sent its next bytes as soon as its socket takes them again, while the guest still streams (no wait for the run to go idle first)', () => {
    const c = new Script(4 * 1024 * KiB);
    const posts: FromWorker[] = [];
    const runs = startRun(c, posts);
    // The guest streams; the viewer's socket takes its first 64 KiB and is then full.
    c.written = c.stream.length;
    c.viewerRoom = CHUNK;
    assert.equal(runs.stepAll(), true, 'the guest has more: the run goes on at once, without a poll');
    assert.equal(c.bytesOf(VIEWER).length, CHUNK);
    // Its reader drains the socket while the run is still busy with the stream.
    c.viewerRoom = Number.POSITIVE_INFINITY;
    const headBefore = c.read;
    runs.stepAll();
    const viewer = c.bytesOf(VIEWER);
    const after = viewer.subarray(CHUNK);
    assert.ok(after.length > c.read - headBefore, `the viewer got ${after.length} bytes during a turn that read ${c.read - headBefore}`);
    // What it missed is told first (in one notice or more: a notice is made when it is due, and
    // what is missed while it waits in a full socket is told by the next), then the stream from its place.
    const { told: missed, at } = leadingNotices(after);
    assert.ok(missed > 0, 'the missed-output notice comes first');
    const from = CHUNK + missed;
    const rest = after.subarray(at);
    assert.ok(rest.equals(c.stream.subarray(from, from + rest.length)), 'the bytes after the notices are the stream from the viewer’s place');
    assert.ok(c.bytesOf(WRITER).equals(c.stream.subarray(0, c.bytesOf(WRITER).length)), 'the writer has the stream from its start');

    runs.stop(1);
    const ended = posts.find((m) => m.op === 'fanout-ended');
    assert.ok(ended !== undefined && ended.op === 'fanout-ended');
    const count = ended.viewers[0];
    assert.ok(count !== undefined);
    assert.equal(count.missed, missed);
    assert.equal(count.sent + count.missed, ended.moved, 'every byte the run read was sent to the viewer or counted missed');
  });

  it('stopped while a notice is half sent and it missed more since: the rest of that notice, then one for the rest of what it missed, then its bytes', () => {
    const c = new Script(4 * 1024 * KiB);
    const posts: FromWorker[] = [];
    const runs = startRun(c, posts);
    c.written = c.stream.length;
    c.viewerRoom = CHUNK;
    runs.stepAll();
    // Its socket takes 3 bytes of the notice now due, then nothing while the stream goes on.
    c.viewerRoom = 3;
    runs.stepAll();
    runs.stop(1);
    const ended = posts.find((m) => m.op === 'fanout-ended');
    assert.ok(ended !== undefined && ended.op === 'fanout-ended');
    const left = ended.viewersLeft[0];
    assert.ok(left !== null && left !== undefined);
    const whole = Buffer.concat([c.bytesOf(VIEWER), Buffer.from(left)]);
    assert.ok(whole.subarray(0, CHUNK).equals(c.stream.subarray(0, CHUNK)));
    const after = whole.subarray(CHUNK);
    const { told, at } = leadingNotices(after);
    const count = ended.viewers[0];
    assert.ok(count !== undefined);
    assert.equal(told, count.missed, 'every byte it missed is told before its next bytes');
    assert.equal(count.untold, 0);
    const rest = after.subarray(at);
    assert.ok(rest.equals(c.stream.subarray(CHUNK + told, ended.moved)), 'then the stream from its place up to what the run read');
  });
});

/** The last min(kept, size) stream bytes of a history ring (written from offset 0 on, wrapping), oldest first. */
function ringTail(ring: Buffer, kept: number): Buffer {
  const size = ring.length;
  const n = Math.min(kept, size);
  const end = kept % size;
  return n <= end ? Buffer.from(ring.subarray(end - n, end)) : Buffer.concat([ring.subarray(size - (n - end)), ring.subarray(0, end)]);
}

describe('fan-out run with a history ring', () => {
  // Larger than a read (64 KiB here) and the MiB the README's examples use; smaller than a read, whose first bytes are skipped.
  for (const size of [100_003, 1024 * KiB, 10_007]) {
    it(`keeps the stream's last ${size} bytes, wrapping`, () => {
      const c = new Script(3 * 1024 * KiB + 12345);
      const posts: FromWorker[] = [];
      const runs = startRun(c, posts, size);
      c.written = c.stream.length;
      c.viewerRoom = Number.POSITIVE_INFINITY;
      while (c.read < c.written) runs.stepAll();
      runs.stop(1);
      const ended = posts.find((m) => m.op === 'fanout-ended');
      assert.ok(ended !== undefined && ended.op === 'fanout-ended');
      assert.equal(ended.moved, c.stream.length);
      assert.equal(ended.historyKept, ended.moved, 'every byte the run read is in the ring');
      assert.equal(ended.historyLeft, null);
      assert.ok(ringTail(c.history, ended.moved).equals(c.stream.subarray(ended.moved - size)), 'the ring holds the last bytes, in order');
    });
  }

  it('a write to the ring that fails ends the run; the ring still holds the last bytes before it, and the rest comes back with the end', () => {
    const size = 100_003;
    const c = new Script(2 * 1024 * KiB);
    const posts: FromWorker[] = [];
    const runs = startRun(c, posts, size);
    c.written = c.stream.length;
    c.viewerRoom = Number.POSITIVE_INFINITY;
    // The ring takes 5 of its sizes and a bit, then refuses (out of memory): mid-read, mid-wrap.
    c.historyRoom = 5 * size + 777;
    for (let i = 0; i < 100 && posts.every((m) => m.op !== 'fanout-ended'); i++) runs.stepAll();
    const ended = posts.find((m) => m.op === 'fanout-ended');
    assert.ok(ended !== undefined && ended.op === 'fanout-ended', 'the run ended');
    assert.equal(ended.end, 'error');
    assert.equal(ended.error, 'history:ENOMEM');
    const kept = ended.historyKept ?? -1;
    assert.equal(kept, 5 * size + 777);
    assert.ok(ringTail(c.history, kept).equals(c.stream.subarray(kept - size, kept)), 'the ring holds the last bytes before the failure, in order');
    const left = ended.historyLeft;
    assert.ok(left !== null && left !== undefined);
    assert.ok(Buffer.from(left).equals(c.stream.subarray(kept, ended.moved)), 'what the ring missed comes back: the history loses nothing');
    // The clients lose nothing either: what they had not been sent yet is handed back.
    const writer = Buffer.concat([c.bytesOf(WRITER), Buffer.from(ended.writerLeft ?? new Uint8Array(0))]);
    assert.ok(writer.equals(c.stream.subarray(0, ended.moved)), 'the writer has every byte the run read');
  });
});

describe('fan-out run with a history ring smaller than a read', () => {
  it('a failed write hands the whole read back: the history then ends with the last bytes of the stream all the same', () => {
    const size = 10_007;
    const c = new Script(1024 * KiB);
    const posts: FromWorker[] = [];
    const runs = startRun(c, posts, size);
    c.written = c.stream.length;
    c.viewerRoom = Number.POSITIVE_INFINITY;
    c.historyRoom = 3 * size + 5;
    for (let i = 0; i < 100 && posts.every((m) => m.op !== 'fanout-ended'); i++) runs.stepAll();
    const ended = posts.find((m) => m.op === 'fanout-ended');
    assert.ok(ended !== undefined && ended.op === 'fanout-ended', 'the run ended');
    assert.equal(ended.error, 'history:ENOMEM');
    const kept = ended.historyKept ?? -1;
    const left = Buffer.from(ended.historyLeft ?? new Uint8Array(0));
    assert.ok(left.equals(c.stream.subarray(kept, ended.moved)), 'what comes back is the stream after what the ring is said to keep');
    assert.ok(left.length >= size, 'a whole read, more than the history holds');
    // As the device rebuilds it: the ring's tail up to `kept`, then the rest; only its last `size` bytes stay.
    const history = Buffer.concat([ringTail(c.history, kept), left]);
    assert.ok(history.subarray(history.length - size).equals(c.stream.subarray(ended.moved - size, ended.moved)), 'the history ends with the last bytes read');
  });
});
