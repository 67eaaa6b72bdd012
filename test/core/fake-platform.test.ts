/**
 * The runtime core and the pty/dev backends against the in-memory FakePlatform: no kernel,
 * no real pty, no socat. Fast and deterministic (poll intervals run on mocked timers where
 * the test is about timing), in the spirit of serialport's binding-mock tests.
 */
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDomain, type Domain, type DomainOptions } from '../../src/core/domain.ts';
import '../../src/backends/index.ts';
import type { Chardev } from '../../src/core/chardev.ts';
import { ChardevError } from '../../src/errors.ts';
import { PARALLEL_MAX_QUEUED_BYTES } from '../../src/backends/parallel.ts';
import { FakePlatform, PlatformError, type FakePty } from '../../src/testing.ts';
import { collect, eventLog, load, payload, waitFor, writeAll } from './helpers.ts';

/** Small, so a real-timer test waits milliseconds, not QEMU's second. */
const POLL = 5;
/** Per-test bound: everything here is in-memory, so anything slower is a hang. */
const QUICK = { timeout: 2000 };

/** Let queued microtasks (the pty's first check, a replayed OPENED) run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Ref'd timers only: getActiveResourcesInfo() does not list unref'd ones (the pty poll). */
const activeTimeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

interface PtyRun {
  readonly domain: Domain;
  readonly dev: Chardev;
  /** The fake's handle on the slave side: the "client" that opens /dev/pts/N. */
  readonly pty: FakePty;
}

/**
 * startDomain, with a stop registered for the end of the test: a failed assertion must not
 * leave the domain's keep-alive interval holding the test process open.
 */
async function start(t: TestContext, devices: string, options: DomainOptions): Promise<Domain> {
  const domain = await startDomain(load(devices), options);
  t.after(() => domain.stop());
  return domain;
}

async function startPty(t: TestContext, platform: FakePlatform, options: DomainOptions = {}): Promise<PtyRun> {
  const domain = await start(t, `<serial type='pty'/>`, { platform, ptyPollMs: POLL, ...options });
  await settle();
  const dev = domain.device('serial0');
  const pty = platform.pty(dev.ptyPath ?? assert.fail('pty backend reported no slave path'));
  return { domain, dev, pty };
}

/** Mock setInterval/clearInterval for this test only: poll timing becomes exact. */
function mockIntervals(t: TestContext): (ms: number) => void {
  t.mock.timers.enable({ apis: ['setInterval'] });
  return (ms) => t.mock.timers.tick(ms);
}

/** startPty on mocked intervals, then a client opens the slave and the next poll opens the device. */
async function openPty(t: TestContext, platform: FakePlatform): Promise<PtyRun> {
  const tick = mockIntervals(t);
  const run = await startPty(t, platform);
  run.pty.connect();
  tick(POLL);
  assert.equal(run.dev.isOpen, true);
  return run;
}

describe('pty backend on the fake platform', () => {
  it('reports the fake slave path: where line, filename, ptyPath, live state; not open without a reader', QUICK, async (t) => {
    const fake = new FakePlatform();
    const { domain, dev } = await startPty(t, fake);
    assert.equal(dev.ptyPath, '/dev/pts/fake0');
    assert.equal(dev.filename, 'pty:/dev/pts/fake0');
    assert.equal(dev.where, 'char device redirected to /dev/pts/fake0 (label charserial0)');
    assert.deepEqual(domain.describe(), ['char device redirected to /dev/pts/fake0 (label charserial0)']);
    assert.deepEqual(domain.liveState().ptyPaths, new Map([['serial0', '/dev/pts/fake0']]));
    assert.equal(dev.isOpen, false);
    assert.equal(fake.openFds.length, 1, 'only the master fd is held');
  });

  it('no reader: writes count as fully written, are discarded (counters.dropped), never reach a later reader, no open', QUICK, async (t) => {
    const tick = mockIntervals(t);
    const fake = new FakePlatform();
    const { domain, dev, pty } = await startPty(t, fake);
    const events = eventLog(dev);
    assert.equal(dev.write(Buffer.from('lost in the void')), 16);
    assert.equal(dev.write(Uint8Array.from([0, 0xff, 0x0a])), 3);
    tick(POLL * 20);
    assert.deepEqual(events, []);
    assert.equal(dev.isOpen, false);
    assert.deepEqual(dev.counters, { bytesFromGuest: 19, bytesToGuest: 0, dropped: 19 });

    pty.connect();
    tick(POLL);
    assert.deepEqual(events, ['open']);
    assert.equal(pty.takeOutput().length, 0, 'discarded output must not sit in the pty for the next reader');
    await domain.stop();
  });

  it("a reader that appears gets 'open' at the next poll, within one interval", QUICK, async (t) => {
    const tick = mockIntervals(t);
    const fake = new FakePlatform();
    const { domain, dev, pty } = await startPty(t, fake);
    const events = eventLog(dev);
    tick(2);
    pty.connect();
    tick(POLL - 3); // 4 ms after start: the first poll is at 5
    assert.deepEqual(events, [], 'no poll has run since the reader appeared');
    assert.equal(dev.isOpen, false);
    tick(1);
    assert.deepEqual(events, ['open']);
    assert.equal(dev.isOpen, true);
    tick(POLL * 10);
    assert.deepEqual(events, ['open'], 'one OPENED per connection');
    await domain.stop();
    assert.deepEqual(events, ['open', 'close'], 'stop sends CLOSED for an open device');
  });

  it("a write right after a reader appears re-polls: 'open' at once and the bytes reach the reader, not the discard path", QUICK, async (t) => {
    const tick = mockIntervals(t);
    const fake = new FakePlatform();
    const { domain, dev, pty } = await startPty(t, fake);
    const events = eventLog(dev);
    tick(POLL - 1);
    pty.connect(); // the next poll is 1 ms away; the guest writes first
    assert.deepEqual(events, []);
    assert.equal(dev.write(Buffer.from('boot banner\n')), 12);
    assert.deepEqual(events, ['open'], 'the write noticed the reader before the timer did');
    assert.equal(dev.isOpen, true);
    assert.equal(pty.takeOutput().toString(), 'boot banner\n');
    assert.deepEqual(dev.counters, { bytesFromGuest: 12, bytesToGuest: 0, dropped: 0 });
    tick(POLL * 4);
    assert.deepEqual(events, ['open'], 'the poll does not open it a second time');
    await domain.stop();
  });

  it("reader input reaches 'data'; hang-up closes and polling resumes; a second reader opens again", QUICK, async (t) => {
    const tick = mockIntervals(t);
    const fake = new FakePlatform();
    const { domain, dev, pty } = await startPty(t, fake);
    const events = eventLog(dev);
    const input = collect(dev);

    pty.connect();
    tick(POLL);
    assert.deepEqual(events, ['open']);
    pty.send(Buffer.from('hello'));
    pty.send(Uint8Array.from([0x00, 0xff]));
    assert.deepEqual(input.bytes(), Buffer.from([...Buffer.from('hello'), 0x00, 0xff]));
    assert.equal(dev.counters.bytesToGuest, 7);
    assert.equal(dev.write(Buffer.from('to client')), 9);
    assert.equal(pty.takeOutput().toString(), 'to client');

    pty.disconnect();
    assert.deepEqual(events, ['open', 'close']);
    assert.equal(dev.isOpen, false);
    assert.equal(dev.write(Buffer.from('while away')), 10);
    assert.equal(dev.counters.dropped, 10);

    // Polling restarted at the hang-up: the next check is one interval later.
    tick(POLL - 1);
    pty.connect();
    assert.deepEqual(events, ['open', 'close']);
    tick(1);
    assert.deepEqual(events, ['open', 'close', 'open']);
    assert.equal(pty.takeOutput().length, 0, 'output from while nobody was there is gone');
    pty.send(Buffer.from('again'));
    assert.equal(input.bytes().toString('latin1'), 'hello\x00\xffagain');
    assert.deepEqual(dev.counters, { bytesFromGuest: 19, bytesToGuest: 12, dropped: 10 });
    await domain.stop();
  });

  it("input flow control: no 'data' listener, no reading; a listener starts it, removing the last stops it", QUICK, async (t) => {
    const { domain, dev, pty } = await openPty(t, new FakePlatform());

    pty.send(Buffer.from('abc'));
    assert.equal(dev.counters.bytesToGuest, 0, 'bytes wait in the (fake) kernel while nobody listens');
    const got: Buffer[] = [];
    const listener = (b: Buffer): void => void got.push(b);
    dev.on('data', listener);
    assert.equal(Buffer.concat(got).toString(), 'abc', 'adding a listener resumes the reader');
    assert.equal(dev.counters.bytesToGuest, 3);

    dev.off('data', listener);
    pty.send(Buffer.from('de'));
    assert.equal(Buffer.concat(got).toString(), 'abc');
    assert.equal(dev.counters.bytesToGuest, 3);
    dev.on('data', listener);
    assert.equal(Buffer.concat(got).toString(), 'abcde');
    assert.equal(dev.counters.bytesToGuest, 5);
    await domain.stop();
  });

  it(
    'a reader that stops reading holds the guest: write() takes what fits in flight (256 KiB), then nothing; writable follows its drain; every byte arrives in order',
    QUICK,
    async (t) => {
      const { domain, dev, pty } = await openPty(t, new FakePlatform());
      pty.setWritable(false); // every write to the master would say EAGAIN now
      let writable = 0;
      dev.on('writable', () => void writable++);

      const a = Buffer.alloc(200 * 1024, 'a');
      const b = Buffer.alloc(200 * 1024, 'b');
      assert.equal(dev.write(a), a.length, 'within the in-flight bound, all is taken');
      assert.equal(dev.write(b), 56 * 1024, 'the rest of the bound, and no more: the guest must wait');
      assert.equal(dev.write(b.subarray(56 * 1024)), 0, 'nothing while the reader takes nothing');
      assert.equal(writable, 0);
      assert.equal(pty.takeOutput().length, 0, 'nothing reached the reader while it was blocked');
      const [reader, ...others] = dev.hub.clients();
      assert.equal(others.length, 0);
      assert.equal(reader?.kind, 'pty');
      assert.equal(reader?.bytesMissed, 0, 'the writer misses nothing');
      assert.equal(dev.counters.bytesFromGuest, 256 * 1024);

      // The frontend keeps the rest and goes on when told.
      const rest = writeAll(dev, b.subarray(56 * 1024));
      pty.setWritable(true);
      await rest;
      assert.ok(writable >= 1, "'writable' fired once the reader drained");
      const out = pty.takeOutput();
      assert.ok(out.equals(Buffer.concat([a, b])), 'every byte, in order, nothing dropped, no notice');
      assert.equal(dev.counters.dropped, 0);
      assert.equal(dev.hub.clients()[0]?.bytesMissed, 0);

      await domain.stop();
      assert.equal(dev.write(Buffer.from('late')), 0, 'a stopped device accepts nothing');
    },
  );

  it('stop({ drainMs }) waits for the reader to take what the guest wrote last', QUICK, async (t) => {
    const fake = new FakePlatform();
    const { domain, dev, pty } = await startPty(t, fake);
    pty.connect();
    await waitFor(() => dev.isOpen, 'open', 1000);
    assert.equal(dev.write(Buffer.from('last words\n')), 11);
    let stopped = false;
    const stopping = domain.stop({ drainMs: 1500 }).then(() => {
      stopped = true;
    });
    await sleep(30);
    assert.equal(stopped, false, 'still unread by the client: stop waits');
    assert.equal(pty.takeOutput().toString(), 'last words\n');
    await stopping;
    assert.equal(stopped, true);
    assert.deepEqual(fake.openFds, []);
  });

  it('stop releases every fd the fake handed out and clears every timer (ref and unref)', QUICK, async (t) => {
    const baseline = activeTimeouts();
    const setSpy = t.mock.method(globalThis, 'setInterval');
    const clearSpy = t.mock.method(globalThis, 'clearInterval');
    const fake = new FakePlatform();
    const { domain, dev, pty } = await startPty(t, fake);
    assert.equal(fake.openFds.length, 1);
    assert.equal(activeTimeouts(), baseline + 1, "the domain's keep-alive is the only ref'd timer");

    pty.connect();
    await waitFor(() => dev.isOpen, 'open', 1000);
    pty.disconnect(); // polling starts again: a second interval
    assert.equal(dev.isOpen, false);
    await domain.stop();

    assert.deepEqual(fake.openFds, []);
    assert.equal(activeTimeouts(), baseline);
    const polls = setSpy.mock.calls.filter((c) => c.arguments[1] === POLL).map((c) => c.result);
    assert.equal(polls.length, 2, 'one poll interval before the first reader, one after its hang-up');
    const cleared = new Set<unknown>(clearSpy.mock.calls.map((c) => c.arguments[0]));
    polls.forEach((p, i) => assert.ok(cleared.has(p), `poll interval ${i} was cleared`));
    // Nothing left that could still emit: a reader appearing now changes nothing.
    pty.connect();
    await sleep(POLL * 4);
    assert.equal(dev.isOpen, false);
    assert.deepEqual(fake.openFds, []);
  });
});

describe('Chardev on the fake platform', () => {
  it("a late 'open' listener gets OPENED replayed (asynchronously) when the device is already open", QUICK, async (t) => {
    const tick = mockIntervals(t);
    const fake = new FakePlatform();
    const { domain, dev, pty } = await startPty(t, fake);
    let early = 0;
    dev.on('open', () => early++);
    await settle();
    assert.equal(early, 0, 'closed device: nothing to replay');

    pty.connect();
    tick(POLL);
    assert.equal(early, 1);
    let late = 0;
    dev.on('open', () => late++);
    assert.equal(late, 0, 'not during on(): the caller finishes its setup first');
    let removed = 0;
    const gone = (): void => void removed++;
    dev.on('open', gone).off('open', gone);
    await settle();
    assert.equal(late, 1);
    assert.equal(removed, 0, 'a listener removed before the replay is not called');
    assert.equal(early, 1, 'existing listeners are not called again');
    await domain.stop();
  });

  it("a run-time error goes to 'error' listeners, else to the domain's onError", QUICK, async (t) => {
    const tick = mockIntervals(t);
    const fake = new FakePlatform();
    const fallback: ChardevError[] = [];
    const domain = await start(t, `<serial type='pty'/><serial type='pty'/>`, {
      platform: fake,
      ptyPollMs: POLL,
      onError: (e) => fallback.push(e),
    });
    await settle();
    const quiet = domain.device('serial0');
    const heard = domain.device('serial1');
    const own: ChardevError[] = [];
    heard.on('error', (e) => own.push(e));
    const ptyOf = (d: Chardev): FakePty => fake.pty(d.ptyPath ?? assert.fail('no pty path'));
    for (const d of [quiet, heard]) ptyOf(d).connect();
    tick(POLL);

    fake.failWriters(ptyOf(quiet).masterFd, 'EIO');
    assert.equal(fallback.length, 1);
    assert.ok(fallback[0] instanceof ChardevError);
    assert.equal(fallback[0].code, 'ERR_BACKEND_OPEN');
    assert.equal(fallback[0].message, 'charserial0: pty /dev/pts/fake0: write fake: EIO');
    assert.ok(fallback[0].cause instanceof PlatformError);
    assert.equal(fallback[0].cause.code, 'EIO');
    assert.equal(own.length, 0);

    fake.failWriters(ptyOf(heard).masterFd, 'ENXIO');
    assert.equal(own.length, 1);
    assert.equal(own[0]?.message, 'charserial1: pty /dev/pts/fake1: write fake: ENXIO');
    assert.equal(fallback.length, 1, 'a device with its own listener does not reach onError');
    await domain.stop();
    assert.deepEqual(fake.openFds, []);
  });
});

describe('dev backend on the fake platform', () => {
  // createSerial stats the real path before opening it through the platform, so a fake
  // serial device must live at a path that is a character device on this host.
  const CHAR_DEV = '/dev/null';

  it('a serial tty is set raw 115200 8N1, opens at start, carries bytes both ways under flow control', QUICK, async (t) => {
    const fake = new FakePlatform();
    const line = fake.addDevice(CHAR_DEV, { tty: true });
    const domain = await start(t, `<serial type='dev'><source path='${CHAR_DEV}'/></serial>`, { platform: fake });
    const dev = domain.device('serial0');
    assert.deepEqual(line.serial, { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 });
    assert.equal(dev.where, `charserial0: serial device ${CHAR_DEV}`);
    assert.equal(dev.filename, 'serial');
    assert.equal(dev.isOpen, true, 'a serial device is open from the start');
    assert.equal(fake.openFds.length, 1);

    assert.equal(dev.write(Buffer.from('AT\r')), 3);
    assert.equal(line.takeOutput().toString(), 'AT\r');
    const far = [...line.readers][0] ?? assert.fail('the backend opened no reader on the tty');
    assert.equal(far.paused, true, 'no data listener yet');
    line.send(Buffer.from('OK\r\n'));
    assert.equal(dev.counters.bytesToGuest, 0);
    const input = collect(dev);
    assert.equal(input.bytes().toString(), 'OK\r\n');

    const events = eventLog(dev);
    line.hangup();
    assert.deepEqual(events, ['close'], 'EOF on the line is CHR_EVENT_CLOSED');
    await domain.stop();
    assert.deepEqual(fake.openFds, []);
    assert.equal(far.closed, true);
  });

  it("a serial line that cannot take more refuses output (not a drop) and says 'writable' when it can again", QUICK, async (t) => {
    const fake = new FakePlatform();
    const line = fake.addDevice(CHAR_DEV, { tty: true });
    const domain = await start(t, `<serial type='dev'><source path='${CHAR_DEV}'/></serial>`, { platform: fake });
    const dev = domain.device('serial0');
    let writable = 0;
    dev.on('writable', () => writable++);
    line.setWritable(false);
    const big = Buffer.alloc(2 * 1024 * 1024, 0x55);
    const n = dev.write(big);
    assert.ok(n > 0 && n < big.length, `the writer's bound cut the write (took ${n})`);
    assert.equal(dev.counters.dropped, 0, 'a refusal is the frontend’s to retry, not a drop');
    assert.equal(writable, 0);
    line.setWritable(true);
    assert.equal(writable, 1, "'writable' once the line took the queue");
    assert.equal(line.takeOutput().length, n, 'every accepted byte went out');
    assert.equal(dev.write(Buffer.from('more')), 4);
    assert.equal(writable, 1, 'no refusal, no second event');
    await domain.stop();
  });

  it('a serial device that is not a tty is output-only and its line settings are left alone', QUICK, async (t) => {
    const fake = new FakePlatform();
    const sink = fake.addDevice(CHAR_DEV);
    const domain = await start(t, `<serial type='dev'><source path='${CHAR_DEV}'/></serial>`, { platform: fake });
    const dev = domain.device('serial0');
    assert.equal(dev.where, `charserial0: serial device ${CHAR_DEV} (not a tty: output only)`);
    assert.equal(sink.serial, undefined, 'no termios on a non-tty');
    assert.equal(dev.write(Buffer.from('into the void')), 13);
    assert.equal(sink.takeOutput().toString(), 'into the void');
    await domain.stop();
    assert.deepEqual(fake.openFds, []);
  });

  it("a parallel device on something that is not a parallel port fails with QEMU's message, leaving no fd", QUICK, async () => {
    const fake = new FakePlatform();
    fake.addDevice('/dev/ttyS7', { tty: true });
    await assert.rejects(startDomain(load(`<parallel type='dev'><source path='/dev/ttyS7'/></parallel>`), { platform: fake }), (e: unknown) => {
      assert.ok(e instanceof ChardevError);
      assert.equal(e.code, 'ERR_BACKEND_OPEN');
      assert.equal(e.message, 'charparallel0: /dev/ttyS7: not a parallel port: Inappropriate ioctl for device (ioctl PPCLAIM on /dev/ttyS7)');
      return true;
    });
    assert.deepEqual(fake.openFds, []);
  });

  it('a parallel port gets every byte the guest writes, in order, through write(2) on the claimed port', QUICK, async (t) => {
    const fake = new FakePlatform();
    const port = fake.addDevice('/dev/parport0', { parallel: true });
    const domain = await start(t, `<parallel type='dev'><source path='/dev/parport0'/></parallel>`, { platform: fake });
    const dev = domain.device('parallel0');
    assert.equal(port.claimed, true);
    assert.equal(dev.where, 'charparallel0: parallel port /dev/parport0');
    assert.equal(dev.filename, 'parallel');
    assert.equal(dev.isOpen, true);
    assert.equal(dev.write(Buffer.from('page')), 4);
    assert.equal(port.takeOutput().toString(), 'page', 'the printer got the bytes, not a discard');
    const job = payload(20_000);
    await writeAll(dev, job);
    await dev.drained();
    assert.deepEqual(port.takeOutput(), job);
    assert.ok(
      port.writeSizes.every((n) => n <= 256),
      'each write(2) carries at most 256 bytes of handshake',
    );
    assert.equal(dev.counters.dropped, 0);
    await domain.stop();
    assert.equal(port.claimed, false);
    assert.deepEqual(fake.openFds, []);
  });

  it("a busy peripheral holds the guest: write() returns short, nothing is dropped, 'writable' follows", QUICK, async (t) => {
    const fake = new FakePlatform();
    const port = fake.addDevice('/dev/parport0', { parallel: true });
    const domain = await start(t, `<parallel type='dev'><source path='/dev/parport0'/></parallel>`, { platform: fake });
    const dev = domain.device('parallel0');
    let writable = 0;
    dev.on('writable', () => writable++);
    port.setRoom(100); // takes 100 bytes, then BUSY stays high (out of paper)
    const job = payload(200_000);
    let took = dev.write(job);
    assert.ok(took > 0 && took < job.length, `the write was cut short (took ${took})`);
    took += dev.write(job.subarray(took));
    assert.equal(took, 100 + PARALLEL_MAX_QUEUED_BYTES, 'the port took 100 bytes, a fixed 64 KiB waits');
    await sleep(50);
    assert.equal(dev.write(job.subarray(took)), 0, 'nothing more while the port is busy');
    assert.equal(port.takeOutput().length, 100);
    assert.equal(writable, 0);
    assert.equal(dev.counters.dropped, 0, 'a busy port is not a drop');
    port.setRoom(undefined); // paper in
    await waitFor(() => writable === 1, "'writable' after the port took the queue");
    await writeAll(dev, job.subarray(took));
    await dev.drained();
    assert.deepEqual(port.takeOutput(), job.subarray(100));
    assert.equal(dev.counters.dropped, 0);
    await domain.stop();
  });

  it('input: a peripheral with a reverse channel is read while the frontend reads; one without says so once and output goes on', QUICK, async (t) => {
    const fake = new FakePlatform();
    const talker = fake.addDevice('/dev/parport0', { parallel: true, reverse: true });
    fake.addDevice('/dev/parport1', { parallel: true });
    const errors: ChardevError[] = [];
    const domain = await start(
      t,
      `<parallel type='dev'><source path='/dev/parport0'/></parallel><parallel type='dev'><source path='/dev/parport1'/></parallel>`,
      { platform: fake, onError: (e) => errors.push(e) },
    );
    const dev = domain.device('parallel0');
    talker.send(Buffer.from('status: ready'));
    await sleep(20);
    assert.equal(dev.counters.bytesToGuest, 0, 'not read while nobody reads');
    const input = collect(dev);
    await waitFor(() => input.bytes().length === 13, 'the peripheral’s bytes');
    assert.equal(input.bytes().toString(), 'status: ready');

    const mute = domain.device('parallel1');
    const none = collect(mute);
    await waitFor(() => errors.length > 0, 'the no-input notice');
    assert.deepEqual(
      errors.map((e) => e.message),
      ['charparallel1: parallel port /dev/parport1: no input from it: the peripheral has no IEEE 1284 reverse channel; output goes on'],
    );
    assert.equal(mute.write(Buffer.from('still prints')), 12);
    assert.equal(fake.device('/dev/parport1').takeOutput().toString(), 'still prints');
    await sleep(150);
    assert.equal(errors.length, 1, 'said once');
    assert.equal(none.bytes().length, 0);
    await domain.stop();
  });

  it('a port that vanishes is reported once; later output is discarded and counted, never holding the guest', QUICK, async (t) => {
    const fake = new FakePlatform();
    const port = fake.addDevice('/dev/parport0', { parallel: true });
    const errors: ChardevError[] = [];
    const domain = await start(t, `<parallel type='dev'><source path='/dev/parport0'/></parallel>`, { platform: fake, onError: (e) => errors.push(e) });
    const dev = domain.device('parallel0');
    port.failWrites('ENODEV');
    assert.equal(dev.write(Buffer.from('lost')), 4);
    assert.equal(dev.write(Buffer.from('also lost')), 9);
    assert.deepEqual(
      errors.map((e) => [e.code, e.message]),
      [['ERR_BACKEND_WRITE', 'charparallel0: parallel port /dev/parport0: ENODEV; further output discarded']],
    );
    assert.equal(dev.counters.dropped, 13);
    await dev.drained();
    await domain.stop();
    assert.deepEqual(fake.openFds, []);
  });

  it('start is all-or-nothing: a later device failing releases the fds, claim and timer of the ones before', QUICK, async (t) => {
    const setSpy = t.mock.method(globalThis, 'setInterval');
    const clearSpy = t.mock.method(globalThis, 'clearInterval');
    const fake = new FakePlatform();
    const port = fake.addDevice('/dev/parport0', { parallel: true });
    fake.addDevice('/dev/lp-not-really');
    const opened: number[] = [];
    const openDevice = fake.openDevice.bind(fake);
    fake.openDevice = (p: string): number => {
      const fd = openDevice(p);
      opened.push(fd);
      return fd;
    };
    await assert.rejects(
      startDomain(
        load(
          `<serial type='pty'/>` +
            `<parallel type='dev'><source path='/dev/parport0'/></parallel>` +
            `<parallel type='dev'><source path='/dev/lp-not-really'/></parallel>`,
        ),
        { platform: fake, ptyPollMs: POLL },
      ),
      /^ChardevError: charparallel1: \/dev\/lp-not-really: not a parallel port: /,
    );
    assert.equal(opened.length, 2, 'both parallel devices got as far as open()');
    assert.deepEqual(fake.openFds, [], 'pty master and every device fd closed again');
    assert.equal(port.claimed, false, 'the first port was released');
    const polls = setSpy.mock.calls.filter((c) => c.arguments[1] === POLL).map((c) => c.result);
    assert.equal(polls.length, 1, 'the pty had started polling');
    assert.ok(new Set<unknown>(clearSpy.mock.calls.map((c) => c.arguments[0])).has(polls[0]), 'and its poll was cleared');
  });
});
