/**
 * `Libc.readAt` / `sendAt` (src/platform/native.ts): the fan-out run's hot loop names a place
 * in its ring by address (`addressOf` plus an offset) instead of making a view per call. The
 * bytes must come from and land at exactly that place, and a full socket must say EAGAIN.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { libc } from '../../src/platform/native.ts';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const EAGAIN = 11;

function socketPair(): [number, number] {
  const fds = Buffer.alloc(8);
  assert.equal(libc().socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

describe('platform: read and send by address', () => {
  it('sendAt sends the bytes at its address and readAt lands them at its own, nothing outside either span touched', () => {
    const c = libc();
    const [a, b] = socketPair();
    try {
      const from = Buffer.allocUnsafeSlow(64 * 1024);
      for (let i = 0; i < from.length; i++) from[i] = (i * 7 + 3) & 0xff;
      const into = Buffer.allocUnsafeSlow(64 * 1024).fill(0xee);
      const sent = c.sendAt(a, c.addressOf(from) + 1000, 5000, MSG_DONTWAIT | MSG_NOSIGNAL);
      assert.equal(sent, 5000);
      const got = c.readAt(b, c.addressOf(into) + 300, 8000);
      assert.equal(got, 5000);
      assert.deepEqual(into.subarray(300, 5300), from.subarray(1000, 6000));
      assert.ok(into.subarray(0, 300).every((x) => x === 0xee));
      assert.ok(into.subarray(5300).every((x) => x === 0xee));
    } finally {
      c.closeFd(a);
      c.closeFd(b);
    }
  });

  it('sendAt on a socket that takes no more returns -1 with EAGAIN (MSG_DONTWAIT), and a gone peer is EPIPE, not a signal', () => {
    const c = libc();
    const [a, b] = socketPair();
    const buf = Buffer.allocUnsafeSlow(1024 * 1024);
    let n = 0;
    let total = 0;
    while ((n = c.sendAt(a, c.addressOf(buf), buf.length, MSG_DONTWAIT | MSG_NOSIGNAL)) > 0) total += n;
    assert.equal(n, -1);
    assert.equal(c.errno(), EAGAIN);
    assert.ok(total > 0);
    c.closeFd(b);
    assert.equal(c.sendAt(a, c.addressOf(buf), 16, MSG_DONTWAIT | MSG_NOSIGNAL), -1);
    assert.equal(c.errno(), 32);
    c.closeFd(a);
  });
});
