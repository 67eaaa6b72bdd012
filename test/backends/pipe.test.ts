/** The pipe backend on real FIFOs with external writers and readers (shell, head). */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { OutputPump, open } from '../../src/index.ts';
import { linuxPlatform } from '../../src/platform/index.ts';
import { ChardevError } from '../../src/errors.ts';
import { T, collect, domainXml, eventLog, newFds, openFds, payload, q, run, tmpDir, waitFor } from '../core/helpers.ts';

describe('pipe backend (real FIFOs)', () => {
  let dir = '';
  let fds = new Map<string, string>();
  before(() => {
    dir = tmpDir('pipe');
    fds = openFds();
  });
  after(async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await sleep(20);
    assert.deepEqual(newFds(fds), []);
  });

  it('PATH.in → guest and guest → PATH.out; writers may come and go', T, async () => {
    const base = path.join(dir, 'pair');
    linuxPlatform.mkfifo(`${base}.in`, 0o600);
    linuxPlatform.mkfifo(`${base}.out`, 0o600);
    const d = await open(domainXml(`<serial type='pipe'><source path='${q(base)}'/></serial>`));
    try {
      const dev = d.device('serial0');
      const events = eventLog(dev);
      const input = collect(dev);
      await sleep(0);
      assert.deepEqual(events, ['open'], 'a pipe opens at creation');
      assert.match(dev.where, /pair\.in \(to guest\), .*pair\.out \(from guest\)$/);
      // Two separate writers: the FIFO is held read-write, so the first leaving is no EOF.
      assert.equal((await run('sh', ['-c', 'printf "one " > "$1"', 'sh', `${base}.in`])).code, 0);
      assert.equal((await run('sh', ['-c', 'printf "two" > "$1"', 'sh', `${base}.in`])).code, 0);
      await waitFor(() => input.bytes().length === 7, 'both writers’ bytes at the guest');
      assert.equal(input.bytes().toString(), 'one two');
      assert.deepEqual(events, ['open']);

      // Guest output with no reader waits in the FIFO; a later reader gets all of it.
      const out = payload(30000);
      assert.equal(dev.write(out), out.length);
      const got = await run('head', ['-c', String(out.length), `${base}.out`]);
      assert.deepEqual(got.stdout, out);
    } finally {
      await d.stop();
    }
  });

  it(
    "refused output is the frontend's: not dropped until it calls discard; 'writable' once the reader catches up; everything accepted arrives",
    T,
    async () => {
      const base = path.join(dir, 'refuse');
      linuxPlatform.mkfifo(`${base}.in`, 0o600);
      linuxPlatform.mkfifo(`${base}.out`, 0o600);
      const d = await open(domainXml(`<serial type='pipe'><source path='${q(base)}'/></serial>`));
      try {
        const dev = d.device('serial0');
        let writable = 0;
        dev.on('writable', () => writable++);
        // Nobody reads PATH.out: the FIFO (64 KiB) and then the backend's bounded queue fill.
        const chunk = payload(65536 - 256);
        let accepted = 0;
        let refused = 0;
        for (let i = 0; i < 64 && refused === 0; i++) {
          const n = dev.write(chunk);
          accepted += n;
          refused = chunk.length - n;
          await sleep(1);
        }
        assert.ok(refused > 0, 'the backend refused some output');
        assert.equal(dev.counters.dropped, 0, 'a refusal the frontend may retry is not a drop');
        dev.discard(refused);
        assert.equal(dev.counters.dropped, refused, 'what the frontend gives up on is counted once');
        assert.equal(writable, 0, 'not writable while the reader is away');
        const got = await run('head', ['-c', String(accepted), `${base}.out`]);
        assert.equal(got.stdout.length, accepted, 'every accepted byte reaches the reader');
        await waitFor(() => writable === 1, "'writable' once the queue drained");
        assert.equal(dev.write(Buffer.from('more')), 4, 'and output is taken again');
      } finally {
        await d.stop();
      }
    },
  );

  it(
    "QEMU's pipe scenario: pipe-in\\0 written before the frontend listens reaches it once it does, exactly; pipe-out\\0 comes out of pipe.out (/char/pipe)",
    T,
    async () => {
      const base = path.join(dir, 'pipe');
      linuxPlatform.mkfifo(`${base}.in`, 0o600);
      linuxPlatform.mkfifo(`${base}.out`, 0o600);
      const d = await open(domainXml(`<serial type='pipe'><source path='${q(base)}'/></serial>`));
      try {
        const dev = d.device('serial0');
        const w = fs.openSync(`${base}.in`, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
        assert.equal(fs.writeSync(w, Buffer.from('pipe-in\0')), 8);
        fs.closeSync(w);
        await sleep(50);
        assert.equal(dev.counters.bytesToGuest, 0, 'nothing read before a frontend listens');
        const input = collect(dev);
        await waitFor(() => input.bytes().length >= 8, 'pipe-in\\0 at the guest');
        assert.deepEqual(input.bytes(), Buffer.from('pipe-in\0'));
        assert.equal(dev.write(Buffer.from('pipe-out\0')), 9);
        const got = await run('head', ['-c', '9', `${base}.out`]);
        assert.deepEqual(got.stdout, Buffer.from('pipe-out\0'));
      } finally {
        await d.stop();
      }
    },
  );

  it(
    'one guest port on several devices (chardev qemu --hub, OutputPump) with a full pipe among them: the guest waits; after the pipe drains the held chunk goes on, and no device gets anything twice (/char/hub, its pipe-EAGAIN part)',
    T,
    async () => {
      const base = path.join(dir, 'hub');
      linuxPlatform.mkfifo(`${base}.in`, 0o600);
      linuxPlatform.mkfifo(`${base}.out`, 0o600);
      const ring = path.join(dir, 'hub-ring.log');
      const d = await open(domainXml(`<serial type='file'><source path='${q(ring)}'/></serial><serial type='pipe'><source path='${q(base)}'/></serial>`));
      try {
        const file = d.device('serial0');
        const pipe = d.device('serial1');
        let paused = 0;
        let resumed = 0;
        const pump = new OutputPump([file, pipe], { pause: () => paused++, resume: () => resumed++ });
        const stream: Buffer[] = [Buffer.from('thisis')];
        pump.push(Buffer.from('thisis'));
        assert.equal(pump.waiting, false, 'nothing is blocked: the guest goes on');
        // Nobody reads the pipe: its FIFO and then the backend's bounded queue fill, chunk by chunk.
        for (let i = 0; !pump.waiting && i < 100_000; i++) {
          const chunk = Buffer.from(`it${String(i).padStart(6, '0')}`.repeat(512)); // 4 KiB, numbered
          stream.push(chunk);
          pump.push(chunk);
          if (i % 64 === 63) await sleep(0);
        }
        assert.equal(pump.waiting, true, 'the full pipe holds the guest (QEMU: -1/EAGAIN, a watch on the pipe)');
        assert.equal(paused, 1);
        const total = Buffer.concat(stream).length;
        assert.equal(fs.statSync(ring).size, total, 'the device that could take it has every chunk, the held one included, once');
        const reader = run('head', ['-c', String(total + 16), `${base}.out`]);
        await waitFor(() => !pump.waiting, 'the guest to go on once the pipe drains', 10_000);
        assert.equal(resumed, 1);
        stream.push(Buffer.from('streamisrestored'));
        pump.push(Buffer.from('streamisrestored'));
        const got = (await reader).stdout;
        const all = Buffer.concat(stream);
        assert.equal(got.length, all.length);
        assert.ok(got.equals(all), 'the pipe got the stream once, in order, the held chunk not resent');
        await pump.flushed();
        assert.ok(fs.readFileSync(ring).equals(all), 'the other device got it once too: nothing written twice');
        pump.close();
      } finally {
        await d.stop();
      }
    },
  );

  it('falls back to PATH for both directions when PATH.in/.out do not exist (reads back its own output)', T, async () => {
    const fifo = path.join(dir, 'single');
    linuxPlatform.mkfifo(fifo, 0o600);
    const d = await open(domainXml(`<serial type='pipe'><source path='${q(fifo)}'/></serial>`));
    try {
      const dev = d.device('serial0');
      const input = collect(dev);
      assert.equal(dev.write(Buffer.from('echo')), 4);
      await waitFor(() => input.bytes().length === 4, 'own output read back, as in QEMU');
      assert.equal(input.bytes().toString(), 'echo');
      assert.equal((await run('sh', ['-c', 'printf "ext" > "$1"', 'sh', fifo])).code, 0);
      await waitFor(() => input.bytes().length === 7, 'external writer');
    } finally {
      await d.stop();
    }
  });

  it('a missing pipe is an error naming the device and path; a regular file is refused', T, async () => {
    const missing = path.join(dir, 'nope');
    await assert.rejects(open(domainXml(`<serial type='pipe'><source path='${q(missing)}'/></serial>`)), (e: unknown) => {
      assert.ok(e instanceof ChardevError);
      assert.equal(e.message, `charserial0: pipe: Could not open '${missing}': No such file or directory`);
      return true;
    });
    const regular = path.join(dir, 'regular');
    fs.writeFileSync(regular, '');
    await assert.rejects(open(domainXml(`<serial type='pipe'><source path='${q(regular)}'/></serial>`)), /charserial0: pipe: '.*regular' is not a FIFO/);
  });
});
