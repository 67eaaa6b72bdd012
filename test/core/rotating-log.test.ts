/** Domain log rotation (virtlogd-style): every byte exactly once across .log, .log.1, … */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { open } from '../../src/index.ts';
import { DEFAULT_ROTATION, RotatingLog } from '../../src/core/rotating-log.ts';
import { loadDomain } from '../../src/config/domain.ts';
import type { ChardevError } from '../../src/errors.ts';
import { T, domainXml, mode, payload, q, tmpDir } from './helpers.ts';

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

  it('a rotation that cannot start a new file (no fd, no room) loses nothing: reported once, the log carries on, rotation resumes', T, () => {
    const file = path.join(dir, 'stuck.log');
    const errors: ChardevError[] = [];
    const log = new RotatingLog('charserial0', file, { maxBytes: 100, backups: 20 }, { what: 'log', onError: (e) => errors.push(e) });
    const data = payload(2000);
    let off = 0;
    const feed = (n: number): void => {
      log.write(data.subarray(off, off + n));
      off += n;
    };
    feed(250); // two rotations
    assert.equal(log.rotations, 2);
    // A directory where the new file would be opened makes every open fail, as EMFILE or ENOSPC would.
    fs.mkdirSync(`${file}.new`);
    for (let i = 0; i < 10; i++) feed(37);
    assert.equal(log.rotations, 2, 'no rotation while the new file cannot be opened');
    assert.equal(errors.length, 1, errors.map((e) => e.message).join('\n'));
    assert.equal(errors[0]?.code, 'ERR_BACKEND_WRITE');
    assert.match(errors[0]?.message ?? '', /^charserial0: log .*stuck\.log: cannot start a new file: Is a directory; writing on past the limit$/);
    fs.rmdirSync(`${file}.new`);
    while (off < data.length) feed(Math.min(61, data.length - off));
    log.close(false);
    assert.ok(log.rotations > 2, 'rotation resumed');
    assert.equal(errors.length, 1, 'still reported once');
    const { bytes } = readRotated(file, 20);
    assert.equal(sha(bytes), sha(data), 'every byte once, in order');
    assert.equal(fs.existsSync(`${file}.new`), false);
  });

  it("a device's <log> and a file device rotate under <cd:rotate>; every byte once, in order", T, async () => {
    const logFile = path.join(dir, 'dev-serial.log');
    const outFile = path.join(dir, 'dev-file.out');
    fs.writeFileSync(outFile, 'stale bytes of an earlier run\n');
    const xml = domainXml(
      `<serial type='null'><log file='${q(logFile)}'/><cd:rotate size='1000' backups='50'/></serial>` +
        `<serial type='file'><source path='${q(outFile)}'/><cd:rotate size='700' backups='50'/></serial>`,
      'devrot',
    );
    const d = await open(xml);
    const data = payload(9000);
    for (let off = 0; off < data.length; off += 333) {
      const chunk = data.subarray(off, off + 333);
      assert.equal(d.device('serial0').write(chunk), chunk.length);
      assert.equal(d.device('serial1').write(chunk), chunk.length);
    }
    await d.stop();
    for (const [file, max] of [
      [logFile, 1000],
      [outFile, 700],
    ] as const) {
      const { files, bytes } = readRotated(file, 50);
      assert.equal(files.length, Math.ceil(data.length / max), files.join(', '));
      assert.equal(sha(bytes), sha(data), `${file}: every byte once, in order (the file device truncated the stale bytes)`);
      for (const f of files) assert.ok(fs.statSync(f).size <= max);
    }
  });

  it('<cd:rotate>: virtlogd defaults; bad values are refused naming the attribute', () => {
    const doc = (inner: string): string => domainXml(`<serial type='null'><log file='/tmp/x.log'/>${inner}</serial>`);
    const dev = (inner: string) => loadDomain(doc(inner)).def.serials[0];
    assert.deepEqual(dev('<cd:rotate/>')?.ext.rotate, { maxBytes: 2 * 1024 * 1024, backups: 3 });
    assert.deepEqual(dev("<cd:rotate size='4096' backups='0'/>")?.ext.rotate, { maxBytes: 4096, backups: 0 });
    assert.throws(() => dev("<cd:rotate size='0'/>"), /Invalid value for attribute 'size' in element 'cd:rotate': '0'/);
    assert.throws(
      () => dev("<cd:rotate backups='-1'/>"),
      /Invalid value for attribute 'backups' in element 'cd:rotate': '-1'. Expected an integer from 0 to 1000/,
    );
  });

  it('a file device and a <log> without <cd:rotate> never rotate, however much is written', T, async () => {
    const out = path.join(dir, 'plain.out');
    const log = path.join(dir, 'plain.log');
    const d = await open(domainXml(`<serial type='file'><source path='${q(out)}'/><log file='${q(log)}'/></serial>`));
    const data = payload(DEFAULT_ROTATION.maxBytes * 2);
    for (let off = 0; off < data.length; off += 65536) d.device('serial0').write(data.subarray(off, off + 65536));
    await d.stop();
    for (const f of [out, log]) {
      assert.equal(fs.existsSync(`${f}.1`), false, `${path.basename(f)} was not rotated`);
      assert.equal(sha(fs.readFileSync(f)), sha(data), `${path.basename(f)} holds everything`);
    }
  });

  it('readTail gives the last bytes of the active file, whatever it was renamed to, and no more than it holds', T, () => {
    const f = path.join(dir, 'tail.log');
    fs.writeFileSync(f, 'before\n');
    const log = new RotatingLog('t', f, undefined, { append: true });
    const data = payload(10_000);
    log.write(data);
    assert.deepEqual(log.readTail(300), data.subarray(data.length - 300));
    assert.deepEqual(log.readTail(1_000_000), Buffer.concat([Buffer.from('before\n'), data]));
    fs.renameSync(f, `${f}.moved`);
    assert.deepEqual(log.readTail(5), data.subarray(data.length - 5));
    log.close(false);
    assert.equal(log.readTail(5).length, 0);
  });
});
