/**
 * Real ptys, real kernel, external processes as clients.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LinuxPlatform, type ByteReader, type PtyHandle } from '../../src/platform/index.ts';
import { SlaveHolder, hasFlag, payload, run, sttyAll, trackedFds, waitFor } from './helpers.ts';

const platform = new LinuxPlatform();
const T = { timeout: 15000 };

describe('pty (real)', () => {
  let fdsBefore: string[] = [];
  let tmp = '';
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-pty-'));
    fdsBefore = trackedFds();
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
    // Every test closes what it opened: no pty/master/dup fds may survive.
    assert.deepEqual(trackedFds(), fdsBefore);
  });

  /** Open a pty for one test and always close the master afterwards. */
  async function withPty(body: (pty: PtyHandle) => Promise<void>): Promise<void> {
    const pty = platform.openPty();
    try {
      await body(pty);
    } finally {
      platform.close(pty.masterFd);
    }
  }

  it('allocates /dev/pts/N with a non-blocking close-on-exec master', T, () =>
    withPty(async (pty) => {
      assert.match(pty.slavePath, /^\/dev\/pts\/\d+$/);
      assert.ok(fs.statSync(pty.slavePath).isCharacterDevice());
      assert.equal(platform.isatty(pty.masterFd), true);
      assert.equal(fs.readlinkSync(`/proc/self/fd/${pty.masterFd}`), '/dev/ptmx');
      const flags = parseInt(/flags:\s+(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${pty.masterFd}`, 'utf8'))?.[1] ?? '', 8);
      assert.ok(flags & fs.constants.O_NONBLOCK, 'master must be O_NONBLOCK');
      assert.ok(flags & 0o2000000, 'master must be O_CLOEXEC');
    }),
  );

  it('puts the pty in raw mode (stty on the slave)', T, () =>
    withPty(async (pty) => {
      const out = await sttyAll(pty.slavePath);
      for (const flag of ['-icanon', '-echo', '-opost', '-isig', '-icrnl', '-ixon', 'cs8']) {
        assert.ok(hasFlag(out, flag), `expected ${flag} in:\n${out}`);
      }
    }),
  );

  it('reports a reader only while an external process has the slave open', T, () =>
    withPty(async (pty) => {
      assert.equal(platform.ptyHasReader(pty.masterFd), false, 'fresh pty has no client');
      const holder = new SlaveHolder(pty.slavePath);
      try {
        await waitFor(() => platform.ptyHasReader(pty.masterFd), 'client to appear');
      } finally {
        await holder.release();
      }
      await waitFor(() => !platform.ptyHasReader(pty.masterFd), 'client to go away');
      // And again: presence detection is repeatable on the same master.
      const second = new SlaveHolder(pty.slavePath);
      try {
        await waitFor(() => platform.ptyHasReader(pty.masterFd), 'second client to appear');
      } finally {
        await second.release();
      }
      await waitFor(() => !platform.ptyHasReader(pty.masterFd), 'second client to go away');
    }),
  );

  it('delivers host bytes (0x00..0xFF + 64 KiB) byte-exact to an external reader', T, () =>
    withPty(async (pty) => {
      const data = payload(64 * 1024);
      const reading = run('head', ['-c', String(data.length), pty.slavePath], 10000);
      await waitFor(() => platform.ptyHasReader(pty.masterFd), 'head to open the slave');
      const writer = platform.openWriter(pty.masterFd);
      try {
        assert.equal(writer.write(data), data.length);
        const got = await reading;
        assert.equal(got.code, 0, got.stderr);
        assert.equal(got.stdout.length, data.length);
        assert.ok(got.stdout.equals(data), 'bytes differ');
        await writer.drained();
        assert.equal(writer.queuedBytes, 0);
        assert.equal(writer.droppedBytes, 0);
      } finally {
        writer.close();
      }
    }),
  );

  it('reads external writes via the reader; EIO on hang-up keeps the master for a second client', T, () =>
    withPty(async (pty) => {
      const first = payload(64 * 1024);
      const second = Buffer.from([0x00, 0xff, 0x0a, 0x0d, 0x03, 0x11, 0x13, 0x7f]);
      const file1 = path.join(tmp, 'first.bin');
      const file2 = path.join(tmp, 'second.bin');
      fs.writeFileSync(file1, first);
      fs.writeFileSync(file2, second);

      for (const [file, expected] of [
        [file1, first],
        [file2, second],
      ] as const) {
        const holder = new SlaveHolder(pty.slavePath);
        const chunks: Buffer[] = [];
        let hangups = 0;
        const errors: Error[] = [];
        let reader: ByteReader | undefined;
        try {
          await waitFor(() => platform.ptyHasReader(pty.masterFd), 'holder to open the slave');
          reader = platform.openPtyReader(pty.masterFd, {
            onData: (b) => chunks.push(b),
            onHangup: () => hangups++,
            onError: (e) => errors.push(e),
          });
          const w = await run('sh', ['-c', 'cat "$1" > "$2"', 'w', file, pty.slavePath]);
          assert.equal(w.code, 0, w.stderr);
          const total = (): number => chunks.reduce((n, c) => n + c.length, 0);
          await waitFor(() => total() >= expected.length, `${expected.length} bytes`);
          assert.ok(Buffer.concat(chunks).equals(expected), 'bytes from the slave differ');
        } finally {
          await holder.release();
        }
        // Last slave fd gone: the reader's dup sees EIO and reports a hang-up, not an error.
        await waitFor(() => hangups === 1, 'hang-up');
        assert.deepEqual(errors, []);
        assert.equal(reader.closed, true);
        // The master itself is still open and still a pty; the slave path still exists.
        assert.equal(platform.isatty(pty.masterFd), true);
        assert.ok(fs.existsSync(pty.slavePath));
        assert.equal(platform.ptyHasReader(pty.masterFd), false);
      }
    }),
  );

  it('a paused reader gets every byte a slave wrote just before closing (libuv ends the stream early at POLLHUP)', T, () =>
    withPty(async (pty) => {
      // Without reading the rest at the hang-up, this lost 4–12 KiB every run: the stream
      // ended while the kernel still held the tail.
      const expected = payload(4 * 1024 * 1024);
      const file = path.join(tmp, 'tail.bin');
      fs.writeFileSync(file, expected);
      const chunks: Buffer[] = [];
      let hungUp = false;
      const errors: Error[] = [];
      const holder = new SlaveHolder(pty.slavePath);
      let reader: ByteReader | undefined;
      try {
        await waitFor(() => platform.ptyHasReader(pty.masterFd), 'holder to open the slave');
        let pausedNow = false;
        const r = platform.openPtyReader(pty.masterFd, {
          // A slow consumer: a short pause after every chunk, as a pump behind a slow client does.
          onData: (b) => {
            chunks.push(b);
            if (pausedNow) return;
            pausedNow = true;
            r.pause();
            setTimeout(() => {
              pausedNow = false;
              r.resume();
            }, 2);
          },
          onHangup: () => (hungUp = true),
          onError: (e) => errors.push(e),
        });
        reader = r;
        const w = spawn('sh', ['-c', 'cat "$1" > "$2"', 'w', file, pty.slavePath], { stdio: 'ignore' });
        const exited = new Promise((resolve) => w.on('exit', resolve));
        // The writer has the slave open once bytes arrive; only then may the holder go, or
        // the hang-up would come before the writer opened it.
        await waitFor(() => chunks.length > 0, 'first bytes', 20000);
        await holder.release();
        await exited;
        await waitFor(() => hungUp, 'hang-up', 20000);
      } finally {
        await holder.release();
      }
      assert.deepEqual(errors, []);
      assert.equal(reader.closed, true);
      const got = Buffer.concat(chunks);
      assert.equal(got.length, expected.length, `got ${got.length} of ${expected.length} bytes`);
      assert.ok(got.equals(expected), 'bytes from the slave differ');
    }),
  );

  it('keeps host output written while no client is attached for the next client', T, () =>
    withPty(async (pty) => {
      const writer = platform.openWriter(pty.masterFd);
      const early = Buffer.from('early\x00\xff', 'latin1');
      try {
        assert.equal(platform.ptyHasReader(pty.masterFd), false);
        writer.write(early);
        await writer.drained();
        const got = await run('head', ['-c', String(early.length), pty.slavePath]);
        assert.deepEqual([...got.stdout], [...early]);
      } finally {
        writer.close();
      }
    }),
  );

  it('queues on EAGAIN without blocking the event loop, then delivers everything', T, () =>
    withPty(async (pty) => {
      const data = payload(256 * 1024);
      const holder = new SlaveHolder(pty.slavePath); // opens the slave but never reads
      let drains = 0;
      const writer = platform.openWriter(pty.masterFd, { onDrain: () => drains++ });
      try {
        await waitFor(() => platform.ptyHasReader(pty.masterFd), 'holder');
        assert.equal(writer.write(data), data.length);
        // The pty buffer is far smaller than 256 KiB, so bytes must be waiting in our queue.
        await waitFor(() => writer.queuedBytes > 0 && writer.queuedBytes < data.length, 'partial progress');
        const t0 = Date.now();
        await new Promise((r) => setTimeout(r, 50));
        assert.ok(Date.now() - t0 < 1000, 'event loop stalled while the pty was full');
        const stillQueued = writer.queuedBytes;
        assert.ok(stillQueued > 0, 'nothing reads, so the queue cannot have drained');
        const got = await run('head', ['-c', String(data.length), pty.slavePath], 10000);
        assert.equal(got.code, 0, got.stderr);
        assert.ok(got.stdout.equals(data), 'bytes differ after backpressure');
        await writer.drained();
        assert.equal(drains, 1);
      } finally {
        writer.close();
        await holder.release();
      }
    }),
  );

  it('cuts writes at maxQueuedBytes and counts the dropped tail', T, () =>
    withPty(async (pty) => {
      const writer = platform.openWriter(pty.masterFd, { maxQueuedBytes: 4096 });
      try {
        const data = payload(10000);
        assert.equal(writer.write(data), 4096);
        assert.equal(writer.droppedBytes, data.length - 4096);
        await writer.drained();
        const got = await run('head', ['-c', '4096', pty.slavePath]);
        assert.ok(got.stdout.equals(data.subarray(0, 4096)));
      } finally {
        writer.close();
      }
    }),
  );

  it('dup gives a close-on-exec copy of the same pty', T, () =>
    withPty(async (pty) => {
      const copy = platform.dup(pty.masterFd);
      try {
        assert.notEqual(copy, pty.masterFd);
        assert.equal(fs.readlinkSync(`/proc/self/fd/${copy}`), '/dev/ptmx');
        const info = fs.readFileSync(`/proc/self/fdinfo/${copy}`, 'utf8');
        assert.equal(/tty-index:\s+(\d+)/.exec(info)?.[1], pty.slavePath.split('/').pop());
        const flags = parseInt(/flags:\s+(\d+)/.exec(info)?.[1] ?? '', 8);
        assert.ok(flags & 0o2000000, 'dup must be O_CLOEXEC');
      } finally {
        platform.close(copy);
      }
    }),
  );

  it('reports a write error other than EAGAIN through onError and closes the writer', T, async () => {
    const fd = platform.openDevice('/dev/full');
    try {
      const err = await new Promise<Error & { code?: string }>((resolve) => {
        const w = platform.openWriter(fd, { onError: resolve });
        w.write(Buffer.from('x'));
      });
      assert.equal(err.code, 'ENOSPC');
      assert.match(err.message, /write/);
    } finally {
      platform.close(fd);
    }
  });

  it("the slave's window size (TIOCSWINSZ on the master: stty size there), its BREAK flags, SIGINT to its foreground group, a flush", T, () =>
    withPty(async (pty) => {
      platform.setWindowSize(pty.masterFd, { cols: 132, rows: 43 });
      assert.deepEqual(platform.windowSize(pty.masterFd), { cols: 132, rows: 43 });
      const size = await run('sh', ['-c', 'stty size <"$1"', 'sh', pty.slavePath]);
      assert.equal(size.stdout.toString(), '43 132\n');
      // openPty makes the line raw: no BRKINT, no IGNBRK.
      assert.deepEqual(platform.ptyBreakFlags(pty.masterFd), { ignbrk: false, brkint: false, parmrk: false, noflsh: false });
      assert.equal((await run('sh', ['-c', 'stty brkint parmrk noflsh <"$1"', 'sh', pty.slavePath])).code, 0);
      assert.deepEqual(platform.ptyBreakFlags(pty.masterFd), { ignbrk: false, brkint: true, parmrk: true, noflsh: true });
      platform.flushPty(pty.masterFd);
      // A session on the slave whose shell traps SIGINT: TIOCSIG reaches it.
      const mark = path.join(tmp, 'sigint');
      const slave = fs.openSync(pty.slavePath, 'r+');
      const child = spawn(
        '/usr/bin/setsid',
        ['-c', 'sh', '-c', `trap 'echo got >"$1"; exit 0' INT; echo up >"$1.up"; while :; do sleep 0.05; done`, 'sh', mark],
        { stdio: [slave, 'ignore', 'ignore'] },
      );
      fs.closeSync(slave);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      try {
        await waitFor(() => fs.existsSync(`${mark}.up`), 'the shell to run on the slave', 5000);
        platform.signalPtyForeground(pty.masterFd);
        await waitFor(() => fs.existsSync(mark), 'SIGINT in the slave’s foreground process group', 5000);
      } finally {
        child.kill('SIGKILL');
        await exited;
      }
    }),
  );
});
