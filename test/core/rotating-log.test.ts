/** Domain log rotation (virtlogd-style): every byte exactly once across .log, .log.1, … */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { open } from '../../src/index.ts';
import { DEFAULT_ROTATION, RotatingLog } from '../../src/core/rotating-log.ts';
import { T, domainXml, mode, payload, tmpDir } from './helpers.ts';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Oldest first: .log.N … .log.1, .log — the order the bytes were written in. */
function readRotated(file: string, backups: number): { files: string[]; bytes: Buffer } {
  const files: string[] = [];
  for (let n = backups; n >= 1; n--) if (fs.existsSync(`${file}.${n}`)) files.push(`${file}.${n}`);
  if (fs.existsSync(file)) files.push(file);
  return { files, bytes: Buffer.concat(files.map((f) => fs.readFileSync(f))) };
}

describe('domain log rotation', () => {
  let dir = '';
  before(() => {
    dir = tmpDir('rotate');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('defaults are virtlogd’s: 2 MiB, 3 backups', () => {
    assert.deepEqual(DEFAULT_ROTATION, { maxBytes: 2 * 1024 * 1024, backups: 3 });
  });

  it('through a stdio device: no byte lost or duplicated across rotations, no file over the limit', T, async () => {
    const logDir = path.join(dir, 'a');
    fs.mkdirSync(logDir);
    const maxBytes = 1000;
    const backups = 5;
    const d = await open(domainXml(`<serial type='stdio'/>`, 'rot'), { logDir, rotation: { maxBytes, backups } });
    const data = payload(4300); // 4556 bytes: 4 rotations, 5 files, all kept
    const dev = d.device('serial0');
    // Uneven chunk sizes, including ones larger than maxBytes, so writes straddle the limit.
    const sizes = [1, 999, 3, 1500, 7, 2000, 64];
    let off = 0;
    for (let i = 0; off < data.length; i++) {
      const n = sizes[i % sizes.length] ?? 1;
      assert.equal(dev.write(data.subarray(off, off + n)), Math.min(n, data.length - off));
      off += n;
    }
    await d.stop();
    const file = path.join(logDir, 'rot.log');
    const { files, bytes } = readRotated(file, backups);
    assert.equal(files.length, 5, files.join(', '));
    assert.equal(sha(bytes), sha(data));
    assert.equal(bytes.length, data.length);
    for (const f of files) {
      assert.ok(fs.statSync(f).size <= maxBytes, `${f} is ${fs.statSync(f).size} bytes`);
      assert.equal(mode(f), 0o600);
    }
    assert.equal(fs.statSync(`${file}.1`).size, maxBytes, 'a rotated file is full to the limit');
  });

  it('beyond the backups the oldest bytes go, and what remains is the exact tail of the stream', T, () => {
    const file = path.join(dir, 'tail.log');
    const log = new RotatingLog('charserial0', file, { maxBytes: 100, backups: 2 });
    const data = payload(744); // 1000 bytes
    for (let off = 0; off < data.length; off += 33) log.write(data.subarray(off, off + 33));
    log.close(false);
    const { files, bytes } = readRotated(file, 5);
    assert.deepEqual(files, [`${file}.2`, `${file}.1`, file]);
    assert.equal(fs.existsSync(`${file}.3`), false);
    // 1000 bytes = 9 full files + 100 in the active one; .log.1 and .log.2 are the two before it.
    assert.deepEqual(bytes, data.subarray(data.length - 300));
  });

  it('backups=0 keeps only the active file', T, () => {
    const file = path.join(dir, 'zero.log');
    const log = new RotatingLog('charserial0', file, { maxBytes: 10, backups: 0 });
    log.write(Buffer.from('0123456789abcdef'));
    log.close(false);
    assert.equal(fs.readFileSync(file, 'utf8'), 'abcdef');
    assert.equal(fs.existsSync(`${file}.1`), false);
  });

  it('an existing log is appended to and counts towards the limit', T, () => {
    const file = path.join(dir, 'existing.log');
    fs.writeFileSync(file, '12345678');
    const log = new RotatingLog('charserial0', file, { maxBytes: 10, backups: 1 });
    log.write(Buffer.from('abcd'));
    log.close(false);
    assert.equal(fs.readFileSync(`${file}.1`, 'utf8'), '12345678ab');
    assert.equal(fs.readFileSync(file, 'utf8'), 'cd');
  });

  it('refuses nonsense limits', () => {
    assert.throws(() => new RotatingLog('charserial0', path.join(dir, 'x.log'), { maxBytes: 0, backups: 1 }), /maxBytes must be a positive integer/);
    assert.throws(() => new RotatingLog('charserial0', path.join(dir, 'x.log'), { maxBytes: 1, backups: -1 }), /backups must be a non-negative integer/);
  });
});
