/**
 * FIFOs, serial termios and the parallel-port probe against the real kernel.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LinuxPlatform, PlatformError } from '../../src/platform/index.ts';
import { serialCflag } from '../../src/platform/linux.ts';
import { hasFlag, run, sttyAll, trackedFds } from './helpers.ts';

const platform = new LinuxPlatform();
const T = { timeout: 10000 };

describe('devices (real)', () => {
  let tmp = '';
  let fdsBefore: string[] = [];
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-dev-'));
    fdsBefore = trackedFds(tmp);
  });
  after(() => {
    assert.deepEqual(trackedFds(tmp), fdsBefore);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('mkfifo creates a FIFO with mode 0600 and reports EEXIST', T, () => {
    const p = path.join(tmp, 'chan');
    platform.mkfifo(p, 0o600);
    const st = fs.statSync(p);
    assert.equal(st.isFIFO(), true);
    assert.equal(st.mode & 0o777, 0o600);
    assert.throws(
      () => platform.mkfifo(p, 0o600),
      (e: unknown) => e instanceof PlatformError && e.code === 'EEXIST' && e.errno === 17 && e.syscall === 'mkfifo' && e.message === `mkfifo ${p}: File exists`,
    );
    assert.throws(() => platform.mkfifo(path.join(tmp, 'no', 'such'), 0o600), { code: 'ENOENT' });
  });

  it('a FIFO opened with openDevice does not block and reads back its own writes', T, () => {
    const p = path.join(tmp, 'loop');
    platform.mkfifo(p, 0o600);
    // QEMU opens pipes read-write, so open never waits for a peer.
    const fd = platform.openDevice(p);
    try {
      fs.writeSync(fd, Buffer.from([0, 1, 0xff]));
      const buf = Buffer.alloc(8);
      const n = fs.readSync(fd, buf);
      assert.deepEqual([...buf.subarray(0, n)], [0, 1, 0xff]);
    } finally {
      platform.close(fd);
    }
  });

  it('openDevice reports ENOENT with path and syscall', T, () => {
    const p = path.join(tmp, 'missing');
    assert.throws(
      () => platform.openDevice(p),
      (e: unknown) => e instanceof PlatformError && e.code === 'ENOENT' && e.path === p && e.message.startsWith(`open ${p}: `),
    );
  });

  it("/dev/null is not a parallel port, with QEMU's message", T, () => {
    const fd = platform.openDevice('/dev/null');
    try {
      assert.equal(platform.isatty(fd), false);
      assert.equal(platform.isParallelPort(fd), false);
      assert.throws(
        () => platform.claimParallel(fd),
        (e: unknown) =>
          e instanceof PlatformError &&
          e.code === 'ENOTTY' &&
          e.path === '/dev/null' &&
          e.message.startsWith('not a parallel port: Inappropriate ioctl for device') &&
          e.message.includes('/dev/null'),
      );
    } finally {
      platform.close(fd);
    }
  });

  it('setSerialRaw on /dev/null fails with ENOTTY (QEMU ignores this; the caller decides)', T, () => {
    const fd = platform.openDevice('/dev/null');
    try {
      assert.throws(() => platform.setSerialRaw(fd), { code: 'ENOTTY', syscall: 'tcgetattr' });
    } finally {
      platform.close(fd);
    }
  });

  describe('setSerialRaw on a pty slave', () => {
    it('applies 115200 8N1 raw with CLOCAL|CREAD', T, async () => {
      const pty = platform.openPty();
      let slave = -1;
      try {
        slave = platform.openDevice(pty.slavePath);
        // Start from a cooked, different line so the asserted flags have to change. (cs7 and
        // parenb cannot be set on a pty: the kernel's pty driver forces CS8 and clears PARENB.)
        const prep = await run('stty', ['-F', pty.slavePath, 'sane', '9600', 'cstopb', '-clocal', 'crtscts']);
        assert.equal(prep.code, 0, prep.stderr);
        const before = await sttyAll(pty.slavePath);
        for (const flag of ['icanon', 'echo', 'opost', 'cstopb', '-clocal', 'crtscts']) assert.ok(hasFlag(before, flag), `${flag}:\n${before}`);

        assert.equal(platform.isatty(slave), true);
        platform.setSerialRaw(slave);
        const out = await sttyAll(pty.slavePath);
        assert.match(out, /speed 115200 baud/);
        for (const flag of [
          'cs8',
          '-parenb',
          '-cstopb',
          'clocal',
          'cread',
          '-crtscts',
          '-icanon',
          '-echo',
          '-opost',
          '-isig',
          '-iexten',
          '-icrnl',
          '-ixon',
          '-istrip',
        ]) {
          assert.ok(hasFlag(out, flag), `expected ${flag} in:\n${out}`);
        }
      } finally {
        if (slave >= 0) platform.close(slave);
        platform.close(pty.masterFd);
      }
    });

    it('applies other speeds and stop bits', T, async () => {
      const pty = platform.openPty();
      const slave = platform.openDevice(pty.slavePath);
      try {
        platform.setSerialRaw(slave, 9600, { dataBits: 7, parity: 'even', stopBits: 2 });
        let out = await sttyAll(pty.slavePath);
        assert.match(out, /speed 9600 baud/);
        assert.ok(hasFlag(out, 'cstopb'), out);
        platform.setSerialRaw(slave, 57600, { stopBits: 1 });
        out = await sttyAll(pty.slavePath);
        assert.match(out, /speed 57600 baud/);
        assert.ok(hasFlag(out, '-cstopb'), out);
      } finally {
        platform.close(slave);
        platform.close(pty.masterFd);
      }
    });

    it('composes c_cflag size, parity and stop bits (not observable on a pty)', () => {
      const CSIZE = 0o60,
        CS5 = 0,
        CS7 = 0o40,
        CS8 = 0o60,
        CSTOPB = 0o100,
        CREAD = 0o200;
      const PARENB = 0o400,
        PARODD = 0o1000,
        CLOCAL = 0o4000,
        CRTSCTS = 0o20000000000,
        HUPCL = 0o2000;
      const dirty = (CS7 | PARENB | PARODD | CSTOPB | CRTSCTS | HUPCL) >>> 0;
      assert.equal(serialCflag(dirty), (CS8 | CREAD | CLOCAL | HUPCL) >>> 0, '8N1 keeps unrelated bits');
      const e72 = serialCflag(0, { dataBits: 7, parity: 'even', stopBits: 2 });
      assert.equal(e72 & CSIZE, CS7);
      assert.equal(e72 & (PARENB | PARODD), PARENB);
      assert.equal(e72 & CSTOPB, CSTOPB);
      const o51 = serialCflag(CSTOPB, { dataBits: 5, parity: 'odd', stopBits: 1 });
      assert.equal(o51 & CSIZE, CS5);
      assert.equal(o51 & (PARENB | PARODD), PARENB | PARODD);
      assert.equal(o51 & CSTOPB, 0);
    });

    it('rejects a speed with no B-constant', T, () => {
      const pty = platform.openPty();
      try {
        assert.throws(() => platform.setSerialRaw(pty.masterFd, 250000), { code: 'EINVAL', syscall: 'cfsetspeed' });
      } finally {
        platform.close(pty.masterFd);
      }
    });
  });

  it('a pty master is not a parallel port either', T, () => {
    const pty = platform.openPty();
    try {
      assert.equal(platform.isParallelPort(pty.masterFd), false);
      assert.throws(() => platform.claimParallel(pty.masterFd), /^PlatformError: not a parallel port: /);
    } finally {
      platform.close(pty.masterFd);
    }
  });

  // No parallel port on this machine: what the real parallel I/O path can show without one is
  // its write(2)/read(2) mapping (the ppdev handshake itself happens in the kernel). A full
  // FIFO stands in for a busy port, a pty master without a slave for a failed negotiation.
  it('writeParallel/readParallel are plain write(2)/read(2): a full fd takes 0 (not an error), an empty one reads empty, EIO is thrown', T, () => {
    const p = path.join(tmp, 'parport-standin');
    platform.mkfifo(p, 0o600);
    const fd = platform.openDevice(p);
    try {
      assert.equal(platform.writeParallel(fd, Buffer.from('page 1')), 6);
      assert.equal(platform.readParallel(fd, 4096).toString(), 'page 1');
      assert.equal(platform.readParallel(fd, 4096).length, 0, 'EAGAIN reads as nothing yet');
      const block = Buffer.alloc(65536, 0x2a);
      let total = 0;
      for (let n = platform.writeParallel(fd, block); n > 0; n = platform.writeParallel(fd, block)) total += n;
      assert.ok(total >= 4096, `filled the FIFO (${total} bytes)`);
      assert.equal(platform.writeParallel(fd, Buffer.from('x')), 0, 'a full fd takes nothing: EAGAIN is 0, not an error');
    } finally {
      platform.close(fd);
    }
    const pty = platform.openPty();
    try {
      assert.throws(
        () => platform.readParallel(pty.masterFd, 16),
        (e: unknown) => e instanceof PlatformError && e.code === 'EIO' && e.syscall === 'read',
      );
    } finally {
      platform.close(pty.masterFd);
    }
    const bad = platform.openDevice('/dev/null');
    platform.close(bad);
    assert.throws(() => platform.writeParallel(bad, Buffer.from('x')), { code: 'EBADF', syscall: 'write' });
  });

  it('close reports EBADF for an fd that is not open', T, () => {
    const fd = platform.openDevice('/dev/null');
    platform.close(fd);
    assert.throws(() => platform.close(fd), { code: 'EBADF', syscall: 'close' });
  });
});
