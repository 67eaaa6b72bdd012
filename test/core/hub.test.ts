/** The client hub and the history ring, on in-memory sinks: roles, replay, bounded queues. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { HistoryRing } from '../../src/core/history.ts';
import { Hub, HubFullError, type ClientSink, type HubOptions } from '../../src/core/hub.ts';

/** A sink whose queue drains only when told to, like a socket whose peer stopped reading. */
class MemorySink implements ClientSink {
  sent: Buffer[] = [];
  notices: string[] = [];
  closed: string | undefined;
  paused = false;
  queued = 0;
  /** When false, sent bytes stay queued (a stalled peer). */
  draining = true;
  send(data: Buffer): void {
    this.sent.push(Buffer.from(data));
    if (!this.draining) this.queued += data.length;
  }
  get queuedBytes(): number {
    return this.queued;
  }
  notice(text: string): void {
    this.notices.push(text);
  }
  close(reason: string): void {
    this.closed = reason;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  text(): string {
    return Buffer.concat(this.sent).toString();
  }
}

function hub(over: Partial<HubOptions> = {}) {
  const input: Buffer[] = [];
  const events: string[] = [];
  let breaks = 0;
  const h = new Hub({
    maxClients: 4,
    queueBytes: 100,
    slowPolicy: 'drop',
    onInput: (b) => input.push(b),
    onBreak: () => breaks++,
    onFirstAttach: () => events.push('first'),
    onLastDetach: () => events.push('last'),
    onChange: (e, c) => events.push(`${e}:${c.label}:${c.role}`),
    ...over,
  });
  return { h, input: () => Buffer.concat(input).toString(), events, breaks: () => breaks };
}

describe('HistoryRing', () => {
  it('keeps the last N bytes in order, across wrap-around, without growing', () => {
    const r = new HistoryRing(8);
    r.append(Buffer.from('abc'));
    assert.equal(r.snapshot().toString(), 'abc');
    r.append(Buffer.from('defgh'));
    assert.equal(r.snapshot().toString(), 'abcdefgh');
    r.append(Buffer.from('ij'));
    assert.equal(r.snapshot().toString(), 'cdefghij');
    r.append(Buffer.from('0123456789XY'));
    assert.equal(r.snapshot().toString(), '456789XY');
    assert.equal(r.totalBytes, 22);
    assert.equal(r.read(3).toString(), '456');
    assert.equal(r.snapshot().toString(), '789XY');
  });

  it('equals the tail of everything appended, for any sequence of appends (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 30 }), (size, chunks) => {
        const r = new HistoryRing(size);
        for (const c of chunks) r.append(c);
        const all = Buffer.concat(chunks);
        assert.deepEqual(r.snapshot(), all.subarray(Math.max(0, all.length - size)));
      }),
      { numRuns: 300 },
    );
  });

  it('appendTail (a kernel-path run: its total and the tail read back) equals appending every chunk (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.array(fc.tuple(fc.uint8Array({ maxLength: 100 }), fc.boolean(), fc.integer({ min: 0, max: 200 })), { maxLength: 30 }),
        (size, chunks) => {
          const whole = new HistoryRing(size);
          const tails = new HistoryRing(size);
          for (const [c, asTail, extra] of chunks) {
            whole.append(c);
            // A tail of at least `size` bytes, or all of them, as Chardev reads it back.
            if (asTail) tails.appendTail(c.subarray(Math.max(0, c.length - Math.min(c.length, size + (extra % 3)))), c.length);
            else tails.append(c);
          }
          assert.deepEqual(tails.snapshot(), whole.snapshot());
          assert.equal(tails.totalBytes, whole.totalBytes);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('Hub', () => {
  it('the first client writes, later ones view; only the writer’s input and BREAK reach the guest', () => {
    const { h, input, events, breaks } = hub();
    const a = new MemorySink();
    const b = new MemorySink();
    const ca = h.attach(a, { kind: 'tcp', label: 'A' });
    const cb = h.attach(b, { kind: 'tcp', label: 'B' });
    assert.equal(ca.role, 'writer');
    assert.equal(cb.role, 'viewer');
    assert.deepEqual(b.notices, ['read-only: A is the writer (attach with force to take over)']);
    h.broadcast(Buffer.from('out'));
    assert.equal(a.text(), 'out');
    assert.equal(b.text(), 'out');
    ca.input(Buffer.from('from-a '));
    cb.input(Buffer.from('from-b'));
    cb.break();
    ca.break();
    assert.equal(input(), 'from-a ');
    assert.equal(breaks(), 1);
    assert.equal(h.inputDropped, 6);
    assert.deepEqual(events, ['attached:A:writer', 'first', 'attached:B:viewer']);
  });

  it('force takes over and tells both; the writer leaving promotes the oldest who may write', () => {
    const { h, events } = hub();
    const [a, b, c, d] = [new MemorySink(), new MemorySink(), new MemorySink(), new MemorySink()];
    const ca = h.attach(a, { kind: 'tcp', label: 'A' });
    const cb = h.attach(b, { kind: 'console', label: 'B', readonly: true });
    const cc = h.attach(c, { kind: 'console', label: 'C', force: true });
    assert.equal(ca.role, 'viewer');
    assert.equal(cc.role, 'writer');
    assert.deepEqual(a.notices, ['C took over; you are a read-only viewer now']);
    const cd = h.attach(d, { kind: 'browser', label: 'D' });
    assert.equal(cd.role, 'viewer');
    cc.detach();
    // B is read-only for good: A, attached before D, is next.
    assert.equal(ca.role, 'writer');
    assert.equal(cb.role, 'viewer');
    assert.deepEqual(a.notices.at(-1), 'C left; you are the writer now');
    h.takeOver(cd);
    assert.equal(cd.role, 'writer');
    assert.equal(ca.role, 'viewer');
    for (const x of [ca, cb, cd]) x.detach();
    assert.equal(events.at(-1), 'last');
    assert.equal(h.size, 0);
  });

  it('history is replayed to each client before live output', () => {
    const history = new HistoryRing(1024);
    const { h } = hub({ history });
    history.append(Buffer.from('boot log\n'));
    const a = new MemorySink();
    h.attach(a, { kind: 'tcp', label: 'A' });
    history.append(Buffer.from('live\n'));
    h.broadcast(Buffer.from('live\n'));
    assert.equal(a.text(), 'boot log\nlive\n');
    const late = new MemorySink();
    h.attach(late, { kind: 'console', label: 'late' });
    assert.equal(late.text(), 'boot log\nlive\n');
  });

  it('a stalled client misses output within its bound and is told when it reads again; the others get everything', () => {
    const { h } = hub({ queueBytes: 10 });
    const fast = new MemorySink();
    const slow = new MemorySink();
    slow.draining = false;
    h.attach(fast, { kind: 'tcp', label: 'fast' });
    const cs = h.attach(slow, { kind: 'tcp', label: 'slow' });
    for (let i = 0; i < 10; i++) h.broadcast(Buffer.from('0123'));
    assert.equal(fast.text(), '0123'.repeat(10));
    assert.equal(slow.queuedBytes, 8, 'never more than the bound is queued');
    assert.equal(cs.bytesMissed, 32);
    slow.queued = 0; // the peer read what was queued
    h.broadcast(Buffer.from('next'));
    assert.deepEqual(slow.notices.at(-1), '32 bytes of output were dropped while this client was not reading');
    assert.equal(slow.text(), '01230123next');
  });

  it("policy 'disconnect' ends a stalled viewer's session; maxClients refuses the next", () => {
    const { h } = hub({ queueBytes: 4, slowPolicy: 'disconnect', maxClients: 2 });
    const writer = new MemorySink();
    h.attach(writer, { kind: 'tcp', label: 'writer' });
    const slow = new MemorySink();
    slow.draining = false;
    h.attach(slow, { kind: 'tcp', label: 'slow' });
    assert.throws(() => h.attach(new MemorySink(), { kind: 'tcp', label: 'x' }), HubFullError);
    h.broadcast(Buffer.from('1234'));
    h.broadcast(Buffer.from('5'));
    assert.match(slow.closed ?? '', /output queue full \(4 bytes\): disconnected/);
    assert.equal(h.size, 1);
    assert.equal(writer.text(), '12345');
  });

  it('input flow control pauses every client, including ones that attach while paused', () => {
    const { h } = hub();
    const a = new MemorySink();
    h.attach(a, { kind: 'tcp', label: 'A' });
    h.setReading(false);
    const b = new MemorySink();
    h.attach(b, { kind: 'tcp', label: 'B' });
    assert.equal(a.paused && b.paused, true);
    h.setReading(true);
    assert.equal(a.paused || b.paused, false);
  });
});

describe('Hub flow control (QEMU: the connected client gets every byte; the guest waits)', () => {
  it('nobody holding: room is unlimited; viewers never hold', () => {
    const { h } = hub({ holdBytes: 10 });
    assert.equal(h.room(1000), Number.POSITIVE_INFINITY);
    const v = new MemorySink();
    v.draining = false;
    h.attach(v, { kind: 'console', label: 'ro', readonly: true });
    h.broadcast(Buffer.from('x'.repeat(50)));
    assert.equal(h.room(1000), Number.POSITIVE_INFINITY, 'a read-only viewer is not waited for');
  });

  it("the writer's in-flight bound gives room; refusing arms onWritable, once, when it drains", () => {
    let writable = 0;
    const { h } = hub({ holdBytes: 10, onWritable: () => void writable++ });
    const w = new MemorySink();
    w.draining = false;
    const c = h.attach(w, { kind: 'tcp', label: 'w' });
    assert.equal(h.room(4), 10);
    h.broadcast(Buffer.from('0123456'));
    assert.equal(h.room(4), 3, 'what is left of the bound');
    h.broadcast(Buffer.from('789'));
    assert.equal(h.room(1), 0);
    assert.equal(c.info().bytesMissed, 0, 'the writer misses nothing');
    c.drained(); // still full: not yet
    assert.equal(writable, 0);
    w.queued = 0;
    c.drained();
    c.drained();
    assert.equal(writable, 1, 'once per refusal');
    assert.equal(w.text(), '0123456789');
  });

  it('the writer leaving or being demoted lets the guest go on; the new writer holds it', () => {
    let writable = 0;
    const { h } = hub({ holdBytes: 4, queueBytes: 4, onWritable: () => void writable++ });
    const a = new MemorySink();
    a.draining = false;
    const ca = h.attach(a, { kind: 'tcp', label: 'A' });
    const b = new MemorySink();
    const cb = h.attach(b, { kind: 'console', label: 'B' });
    h.broadcast(Buffer.from('1234'));
    assert.equal(h.room(1), 0);
    h.takeOver(cb);
    assert.equal(writable, 1, 'A was demoted: it no longer holds the guest');
    assert.equal(h.room(1), 4, "B's queue drains at once");
    h.broadcast(Buffer.from('5'));
    assert.equal(ca.info().bytesMissed, 1, 'A is a viewer now: it misses what does not fit');
    b.draining = false;
    h.broadcast(Buffer.from('6789'));
    assert.equal(h.room(1), 0);
    cb.detach();
    assert.equal(ca.info().role, 'writer', 'A is promoted');
    assert.equal(writable, 1, "and A's queue is full: the guest still waits, now for A");
    a.queued = 0;
    ca.drained();
    assert.equal(writable, 2);
  });

  it("stall limit 'drop': a writer that takes nothing for the limit is released and told; it holds again once caught up", async () => {
    let writable = 0;
    const { h, events } = hub({ holdBytes: 4, queueBytes: 8, stall: { limitMs: 100, action: 'drop' }, onWritable: () => void writable++ });
    const w = new MemorySink();
    w.draining = false;
    const c = h.attach(w, { kind: 'tcp', label: 'w' });
    h.broadcast(Buffer.from('1234'));
    assert.equal(h.room(1), 0);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(writable, 1);
    assert.ok(events.includes('stalled:w:writer'), events.join(' '));
    assert.match(w.notices.at(-1) ?? '', /took no output for 0\.1 s/);
    assert.equal(c.info().released, true);
    assert.equal(h.room(100), Number.POSITIVE_INFINITY, 'the guest goes on');
    h.broadcast(Buffer.from('5678'));
    h.broadcast(Buffer.from('9'));
    assert.equal(c.info().bytesMissed, 1, 'released: misses what does not fit its queue');
    w.queued = 0;
    c.drained();
    assert.equal(c.info().released, false, 'caught up: it holds the guest again');
    assert.equal(h.room(100), 4);
  });

  it('a slow writer that keeps taking something is never released', async () => {
    const { h, events } = hub({ holdBytes: 100, stall: { limitMs: 100, action: 'disconnect' } });
    const w = new MemorySink();
    w.draining = false;
    h.attach(w, { kind: 'tcp', label: 'w' });
    h.broadcast(Buffer.alloc(100));
    assert.equal(h.room(1), 0);
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 20));
      w.queued -= 1; // one byte every 20 ms
    }
    assert.equal(w.closed, undefined);
    assert.ok(!events.some((e) => e.startsWith('stalled')), events.join(' '));
    h.closeAll('end');
  });

  it("stall limit 'disconnect': the stalled writer's session ends and the guest goes on", async () => {
    let writable = 0;
    const { h } = hub({ holdBytes: 4, stall: { limitMs: 100, action: 'disconnect' }, onWritable: () => void writable++ });
    const w = new MemorySink();
    w.draining = false;
    h.attach(w, { kind: 'tcp', label: 'w' });
    h.broadcast(Buffer.from('1234'));
    assert.equal(h.room(1), 0);
    await new Promise((r) => setTimeout(r, 400));
    assert.match(w.closed ?? '', /took no output for 0\.1 s: disconnected/);
    assert.equal(h.size, 0);
    assert.equal(writable, 1);
  });
});

describe('Hub: the writer’s terminal size', () => {
  it('reaches the guest from the writer only; a new writer brings its own size; sizes of 0 are ignored', () => {
    const sizes: string[] = [];
    const { h } = hub({ onResize: (s) => sizes.push(`${s.cols}x${s.rows}`) });
    const a = h.attach(new MemorySink(), { kind: 'browser', label: 'a' });
    const b = h.attach(new MemorySink(), { kind: 'browser', label: 'b' });
    a.resize({ cols: 100, rows: 30 });
    b.resize({ cols: 80, rows: 24 });
    a.resize({ cols: 100, rows: 30 });
    a.resize({ cols: 0, rows: 30 });
    assert.deepEqual(sizes, ['100x30'], 'the viewer’s size, a repeat and a zero size do not reach the guest');
    assert.deepEqual(h.writer?.size, { cols: 100, rows: 30 });
    h.takeOver(b);
    assert.deepEqual(sizes, ['100x30', '80x24'], 'the new writer’s size');
    b.detach();
    assert.deepEqual(sizes, ['100x30', '80x24', '100x30'], 'promoted back: its size again');
  });
});
