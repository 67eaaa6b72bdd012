/**
 * A `copy` run of the data-plane thread (a regular file as the destination), driven directly:
 * the thread splices the source pipe into a pipe of its own, then that into the file. Real
 * processes (`cat` of a random file into the source pipe), every check by count and sha256.
 * test/flow/dataplane.test.ts has the same runs under a device.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sha256, tmp } from '../reliability/helpers.ts';
import { fileSizeLimit } from '../helpers/fsize-limit.ts';
import { dataPlane, type RunResult } from '../../src/platform/data-plane.ts';
import { makePipe, pipeSize } from '../../src/platform/splice.ts';

const MiB = 1024 * 1024;
const T = { timeout: 60000 };

let root: string;
const children: ChildProcess[] = [];
before(async () => {
  root = tmp('dataplane-file');
  await dataPlane().ready;
});
after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(root, { recursive: true, force: true });
});

/** A file holding `data`, for `copyRun` (written before any file size limit is set). */
function dataFile(data: Buffer): string {
  const file = path.join(fs.mkdtempSync(path.join(root, 'd')), 'data');
  fs.writeFileSync(file, data);
  return file;
}

/**
 * `source` (a file) through a 1 MiB pipe (written by `cat`) into `to` by a copy run; resolves
 * with the run's result and the pipe's size once it ended.
 */
function copyRun(source: string, to: number, seekEnd: boolean): Promise<RunResult & { pipeBytesAfter: number | undefined }> {
  const pipe = makePipe({ size: MiB });
  try {
    children.push(spawn('cat', [source], { stdio: ['ignore', pipe.writeFd, 'inherit'] }));
  } finally {
    fs.closeSync(pipe.writeFd);
  }
  return new Promise((resolve) => {
    // The run ends at the pipe's end (cat exits) or when the file fails, never idle.
    dataPlane().start(
      { from: pipe.readFd, to, graceMs: 30000, seekEnd, copy: true },
      {
        progress: () => {},
        ended: (r) => {
          const pipeBytesAfter = pipeSize(pipe.readFd);
          fs.closeSync(pipe.readFd);
          resolve({ ...r, pipeBytesAfter });
        },
      },
    );
  });
}

describe('a copy run into a regular file', () => {
  it(
    'into a file that refuses splice (opened O_APPEND: EINVAL) it writes instead: every byte, in order, and the run ends at the end of the stream',
    T,
    async () => {
      const data = randomBytes(6 * MiB + 777);
      const file = path.join(root, 'append.out');
      fs.writeFileSync(file, 'before\n');
      const fd = fs.openSync(file, 'a');
      try {
        const r = await copyRun(dataFile(data), fd, false);
        assert.equal(r.end, 'eof', `the run ended with ${JSON.stringify(r.end)}`);
        assert.equal(r.moved, data.length);
        assert.equal(r.unwritten, undefined);
        // Writing, the run shrinks the source pipe while it copies (COPY_PIPE_BYTES); it gives it back.
        assert.equal(r.pipeBytesAfter, MiB, 'the source pipe has its size back');
      } finally {
        fs.closeSync(fd);
      }
      const out = fs.readFileSync(file);
      assert.equal(out.length, 7 + data.length);
      assert.equal(sha256(out), sha256(Buffer.concat([Buffer.from('before\n'), data])));
    },
  );

  it(
    "a file that fails mid-transfer (RLIMIT_FSIZE) gets the stream up to its limit and hands the rest of the transfer back; the next run's file gets none of it",
    T,
    async (ctx) => {
      const limiter = fileSizeLimit();
      if (typeof limiter === 'string') {
        ctx.skip(limiter);
        return;
      }
      const first = randomBytes(8 * MiB);
      // Odd, so the limit falls inside a transfer and the thread's pipe holds bytes when it fails.
      const limit = 3 * MiB + 12345;
      const source = dataFile(first);
      const failing = path.join(root, 'limited.out');
      const fd1 = fs.openSync(failing, 'w');
      let r1: RunResult & { pipeBytesAfter: number | undefined };
      try {
        r1 = await limiter.within(limit, () => copyRun(source, fd1, true));
      } finally {
        fs.closeSync(fd1);
      }
      assert.deepEqual(r1.end, { error: 'EFBIG' });
      assert.equal(r1.moved, limit);
      const out1 = fs.readFileSync(failing);
      assert.equal(out1.length, limit);
      assert.equal(sha256(out1), sha256(first.subarray(0, limit)));
      const back = r1.unwritten ?? Buffer.alloc(0);
      assert.ok(back.length > 0, 'the bytes of the failed transfer came back');
      assert.equal(sha256(back), sha256(first.subarray(limit, limit + back.length)), 'they are the next bytes of the stream');

      const second = randomBytes(5 * MiB + 3);
      const next = path.join(root, 'next.out');
      const fd2 = fs.openSync(next, 'w');
      let r2: RunResult & { pipeBytesAfter: number | undefined };
      try {
        r2 = await copyRun(dataFile(second), fd2, true);
      } finally {
        fs.closeSync(fd2);
      }
      assert.equal(r2.end, 'eof', `the run ended with ${JSON.stringify(r2.end)}`);
      assert.equal(r2.moved, second.length);
      const out2 = fs.readFileSync(next);
      assert.equal(out2.length, second.length, 'no byte of the failed run reached the next file');
      assert.equal(sha256(out2), sha256(second));
    },
  );
});
