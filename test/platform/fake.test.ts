/**
 * The in-memory platform used by runtime-core unit tests must behave like the real one
 * where the core can tell the difference.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FakePlatform, PlatformError, type Platform } from '../../src/testing.ts';

describe('FakePlatform', () => {
  it('is a Platform', () => {
    const p: Platform = new FakePlatform();
    assert.equal(typeof p.openPty, 'function');
  });

  it('pty presence follows connect/disconnect', () => {
    const fake = new FakePlatform();
    const { masterFd, slavePath } = fake.openPty();
    const pty = fake.pty(masterFd);
    assert.equal(fake.pty(slavePath), pty);
    assert.equal(fake.ptyHasReader(masterFd), false);
    pty.connect();
    assert.equal(fake.ptyHasReader(masterFd), true);
    pty.disconnect();
    assert.equal(fake.ptyHasReader(masterFd), false);
  });

  it('readers get client bytes, hang up on disconnect, and a new reader serves the next client', () => {
    const fake = new FakePlatform();
    const { masterFd } = fake.openPty();
    const pty = fake.pty(masterFd);
    pty.connect();
    const got: number[] = [];
    let hangups = 0;
    const r1 = fake.openPtyReader(masterFd, { onData: (b) => got.push(...b), onHangup: () => hangups++ });
    pty.send(Uint8Array.from([0, 0xff]));
    assert.deepEqual(got, [0, 0xff]);
    pty.disconnect();
    assert.equal(hangups, 1);
    assert.equal(r1.closed, true);
    pty.connect();
    const r2 = fake.openPtyReader(masterFd, { onData: (b) => got.push(...b) });
    pty.send(Buffer.from('x'));
    assert.deepEqual(got, [0, 0xff, 0x78]);
    r2.close();
    pty.send(Buffer.from('y')); // no reader: held, like the kernel's input queue
    assert.deepEqual(got, [0, 0xff, 0x78]);
    pty.disconnect();
    assert.throws(() => pty.send(Buffer.from('z')), /without connect/);
  });

  it('paused readers leave bytes pending until resumed', () => {
    const fake = new FakePlatform();
    const { masterFd } = fake.openPty();
    const pty = fake.pty(masterFd);
    pty.connect();
    const got: Buffer[] = [];
    const r = fake.openPtyReader(masterFd, { onData: (b) => got.push(b) });
    r.pause();
    pty.send(Buffer.from('ab'));
    pty.send(Buffer.from('c'));
    assert.equal(got.length, 0);
    r.resume();
    assert.equal(Buffer.concat(got).toString(), 'abc');
  });

  it('host output persists for the next client; writers queue while not writable and drop past the cap', async () => {
    const fake = new FakePlatform();
    const { masterFd } = fake.openPty();
    const pty = fake.pty(masterFd);
    let drains = 0;
    const w = fake.openWriter(masterFd, { maxQueuedBytes: 4, onDrain: () => drains++ });
    assert.equal(w.write(Buffer.from('hi')), 2);
    assert.equal(pty.takeOutput().toString(), 'hi');
    pty.setWritable(false);
    assert.equal(w.write(Buffer.from('abc')), 3);
    assert.equal(w.write(Buffer.from('def')), 1);
    assert.equal(w.droppedBytes, 2);
    assert.equal(w.queuedBytes, 4);
    assert.equal(pty.takeOutput().length, 0);
    const drained = w.drained();
    pty.setWritable(true);
    await drained;
    assert.equal(pty.takeOutput().toString(), 'abcd');
    assert.equal(drains, 1);
    w.close();
    assert.equal(w.write(Buffer.from('z')), 0);
  });

  it('failWriters reports a hard error and closes the writer', () => {
    const fake = new FakePlatform();
    fake.addDevice('/dev/ttyS0', { tty: true });
    const fd = fake.openDevice('/dev/ttyS0');
    const errors: PlatformError[] = [];
    const w = fake.openWriter(fd, { onError: (e) => errors.push(e) });
    fake.failWriters(fd, 'EIO');
    assert.equal(errors[0]?.code, 'EIO');
    assert.equal(w.closed, true);
  });

  it('devices: tty and serial settings, parallel claim, QEMU wording for non-parports', () => {
    const fake = new FakePlatform();
    const serial = fake.addDevice('/dev/ttyS0', { tty: true });
    const parport = fake.addDevice('/dev/parport0', { parallel: true });
    fake.addDevice('/dev/null');
    const s = fake.openDevice('/dev/ttyS0');
    const pp = fake.openDevice('/dev/parport0');
    const nul = fake.openDevice('/dev/null');

    assert.equal(fake.isatty(s), true);
    fake.setSerialRaw(s);
    assert.deepEqual(serial.serial, { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 });
    fake.setSerialRaw(s, 9600, { dataBits: 7, parity: 'even', stopBits: 2 });
    assert.deepEqual(serial.serial, { baud: 9600, dataBits: 7, parity: 'even', stopBits: 2 });
    assert.throws(() => fake.setSerialRaw(s, 12345), { code: 'EINVAL' });
    assert.throws(() => fake.setSerialRaw(nul), { code: 'ENOTTY' });

    assert.equal(fake.isParallelPort(pp), true);
    fake.claimParallel(pp);
    assert.equal(parport.claimed, true);
    fake.releaseParallel(pp);
    assert.equal(parport.claimed, false);
    assert.equal(fake.isParallelPort(nul), false);
    assert.throws(() => fake.claimParallel(nul), /^PlatformError: not a parallel port: Inappropriate ioctl for device/);

    assert.throws(() => fake.openDevice('/dev/ttyS9'), { code: 'ENOENT', syscall: 'open', path: '/dev/ttyS9' });
    for (const fd of [s, pp, nul]) fake.close(fd);
    assert.deepEqual(fake.openFds, []);
  });

  it('mkfifo, dup and close mirror the errno behaviour', () => {
    const fake = new FakePlatform();
    fake.mkfifo('/tmp/f', 0o600);
    assert.ok(fake.fifos.has('/tmp/f'));
    assert.throws(
      () => fake.mkfifo('/tmp/f', 0o600),
      (e: unknown) => e instanceof PlatformError && e.code === 'EEXIST' && e.errno === 17,
    );
    const { masterFd } = fake.openPty();
    const copy = fake.dup(masterFd);
    assert.notEqual(copy, masterFd);
    assert.equal(fake.pty(copy), fake.pty(masterFd));
    fake.close(copy);
    fake.close(masterFd);
    assert.throws(() => fake.close(masterFd), { code: 'EBADF' });
    assert.throws(() => fake.ptyHasReader(masterFd), { code: 'EBADF' });
    assert.deepEqual(fake.openFds, []);
  });
});
