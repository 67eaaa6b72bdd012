/**
 * Nothing lost: a guest writes a checksummed stream continuously
 * while clients connect and disconnect many times a second (read a little, read nothing,
 * reset the connection); the device's `<log>`, rotated every 256 KiB, must hold every guest
 * byte exactly once, in order. The soak in test/slow/soak.test.ts runs the same churn for
 * minutes and watches the process's resources.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { domainXml, q } from '../core/helpers.ts';
import { ChardevProcess, PYTHON, RECORD, figure, readRotated, records, recordGuest, sha256, tmp } from './helpers.ts';
import { Churner } from './churner.ts';

let dir = '';
before(() => {
  dir = tmp('churn');
  fs.mkdirSync(path.join(dir, 'run'), { mode: 0o700 });
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

it('under client churn the rotated <log> holds every guest byte exactly once, in order (sha256)', { timeout: 120_000 }, async () => {
  const COUNT = 40_000; // 10 MiB of records, over about 6 s
  const log = path.join(dir, 'serial0.log');
  const xmlFile = path.join(dir, 'churn.xml');
  fs.writeFileSync(
    xmlFile,
    domainXml(
      `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><log file='${q(log)}'/><cd:rotate size='262144' backups='1000'/><cd:clients max='16'/><cd:history size='65536'/></serial>`,
      'churn',
    ),
  );
  const cd = new ChardevProcess({ xmlFile, logDir: path.join(dir, 'logs'), runDir: path.join(dir, 'run'), guest: [PYTHON, '-c', recordGuest(COUNT, 16, 2)] });
  const churners: Churner[] = [];
  try {
    const port = (await cd.out(/^charserial0: listening on tcp:127\.0\.0\.1:(\d+)$/m))[1] ?? '';
    const started = Date.now();
    for (let i = 0; i < 2; i++) churners.push(new Churner(Number(port), i + 1));
    const exit = await cd.exited;
    const seconds = (Date.now() - started) / 1000;
    assert.deepEqual(exit, { code: 0, signal: null }, cd.stderr);
    const totals = await Promise.all(churners.map((c) => c.stop()));
    const connects = totals.reduce((n, t) => n + t.connects, 0);
    assert.equal(cd.stderr, '', 'no device errors');
    const { files, bytes } = readRotated(log);
    const expected = records(0, COUNT);
    assert.equal(bytes.length, expected.length, 'byte count');
    assert.equal(sha256(bytes), sha256(expected), 'sha256 of the log files joined, oldest first');
    assert.ok(files.length >= Math.floor((COUNT * RECORD) / 262144), `rotated (${files.length} files)`);
    assert.ok(connects / seconds >= 20, `churn of at least 20 connections a second (${connects} in ${seconds.toFixed(1)} s)`);
    figure(
      `nothing lost: ${bytes.length} guest bytes in ${files.length} rotated log files, sha256 equal, under ${connects} client connects in ${seconds.toFixed(1)} s (${(connects / seconds).toFixed(0)}/s)`,
    );
  } finally {
    await Promise.all(churners.map((c) => c.stop()));
    await cd.kill();
  }
});
