/** A BREAK for a pty's program follows its termios, as a serial line's would (fake platform; the real pty is in test/cli/run-tty.test.ts). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FakePlatform } from '../../src/testing.ts';
import { deliverPtyBreak } from '../../src/core/pty-break.ts';

describe('deliverPtyBreak', () => {
  it('IGNBRK: nothing; BRKINT: flush and SIGINT (no flush with NOFLSH); neither: a NUL byte (PARMRK too)', () => {
    const p = new FakePlatform();
    const pty = p.openPty();
    const fake = p.pty(pty.masterFd);
    const input: Buffer[] = [];
    const send = (b: Buffer): void => void input.push(b);

    fake.breakFlags = { ignbrk: true, brkint: true, parmrk: false, noflsh: false };
    assert.equal(deliverPtyBreak(p, pty, send), 'ignored');
    assert.equal(fake.interrupts + fake.flushes + input.length, 0);

    fake.breakFlags = { ignbrk: false, brkint: true, parmrk: false, noflsh: false };
    assert.equal(deliverPtyBreak(p, pty, send), 'interrupted');
    assert.deepEqual([fake.interrupts, fake.flushes, input.length], [1, 1, 0]);

    fake.breakFlags = { ignbrk: false, brkint: true, parmrk: false, noflsh: true };
    assert.equal(deliverPtyBreak(p, pty, send), 'interrupted');
    assert.deepEqual([fake.interrupts, fake.flushes], [2, 1]);

    for (const parmrk of [false, true]) {
      fake.breakFlags = { ignbrk: false, brkint: false, parmrk, noflsh: false };
      assert.equal(deliverPtyBreak(p, pty, send), 'nul');
    }
    assert.deepEqual(Buffer.concat(input), Buffer.from([0, 0]));
    assert.equal(fake.interrupts, 2);
  });
});
