/**
 * SLOW SUITE — soak, 5 minutes by default (CI runs it with everything else, alongside the
 * other files: see package.json's test script).
 *
 * `chardev run` with a guest writing a record stream continuously to a TCP server device
 * (history, 8 clients, a `<log>` rotated every 1 MiB); clients connect and disconnect all the
 * time (some read, some do not, some reset), QMP clients come and go. After a warm-up and at
 * the end, the churn pauses until no client is left and the process is measured from outside
 * (/proc: RSS, open fds) and through QMP (`x-chardev-resources`: heap, active handles and
 * timers by type). The two measurements must agree within the bounds below; the log's kept
 * files must be the exact tail of the guest's stream.
 *
 * CHARDEV_SOAK_MS  total duration in ms (default 300000)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpClient } from '../../src/control/qmp-client.ts';
import { domainXml, q } from '../core/helpers.ts';
import { PyPeer, STREAM_PEER, hex } from '../backends/python-peer.ts';
import { ChardevProcess, PYTHON, checkRecords, fdCount, figure, readRotated, recordGuest, rssBytes, tmp } from '../reliability/helpers.ts';
import { Churner, type ChurnTotals } from '../reliability/churner.ts';

const TOTAL_MS = Number(process.env.CHARDEV_SOAK_MS ?? 300_000);
/** Churn before the first measurement: start-up allocations, JIT, pools filled. */
const WARMUP_MS = Math.min(30_000, TOTAL_MS / 5);

/** Bounds: what "stable" means here. */
const MAX_RSS_GROWTH = 32 * 1024 * 1024;
const MAX_HEAP_GROWTH = 16 * 1024 * 1024;
const MAX_FD_GROWTH = 0;
/** Churn measured again when the data-plane thread started between the two samples. */
const REBASE_MS = 30_000;
const MAX_HANDLE_GROWTH = 0;

interface Sample {
  readonly rss: number;
  readonly heapUsed: number;
  readonly fds: number;
  readonly dataPlane: boolean;
  readonly timers: number;
  readonly handles: number;
  readonly resources: Record<string, number>;
}

interface Resources {
  'heap-used': number;
  fds: number;
  'data-plane': boolean;
  resources: Record<string, number>;
}

async function qmp(cd: ChardevProcess, command: string, args?: Record<string, unknown>): Promise<unknown> {
  const c = await QmpClient.connect(cd.qmpPath);
  try {
    return await c.execute(command, args);
  } finally {
    await c.close();
  }
}

/** Pause point: no client attached, then a moment for closes to finish, then measure. */
async function sample(cd: ChardevProcess): Promise<Sample> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const counters = (await qmp(cd, 'x-chardev-counters', { id: 'charserial0' })) as Array<{ clients: number }>;
    if (counters[0]?.clients === 0) break;
    if (Date.now() > deadline) throw new Error('clients did not leave');
    await sleep(100);
  }
  await sleep(1500);
  const r = (await qmp(cd, 'x-chardev-resources')) as Resources;
  const timers = r.resources['Timeout'] ?? 0;
  const handles = Object.values(r.resources).reduce((a, b) => a + b, 0);
  // /proc from outside, while no QMP connection of ours is open.
  await sleep(200);
  return { rss: rssBytes(cd.pid), heapUsed: r['heap-used'], fds: fdCount(cd.pid), dataPlane: r['data-plane'], timers, handles, resources: r.resources };
}

/** Churn for `ms`: TCP clients from two churners, a QMP client every 200 ms. */
async function churn(cd: ChardevProcess, port: number, ms: number, seed: number): Promise<ChurnTotals & { qmp: number }> {
  const churners = [new Churner(port, seed, 10), new Churner(port, seed + 1, 25)];
  let qmpSessions = 0;
  const end = Date.now() + ms;
  while (Date.now() < end && cd.alive) {
    await qmp(cd, 'query-chardev');
    qmpSessions++;
    await sleep(200);
  }
  const totals = await Promise.all(churners.map((c) => c.stop()));
  return {
    connects: totals.reduce((n, t) => n + t.connects, 0),
    received: totals.reduce((n, t) => n + t.received, 0),
    resets: totals.reduce((n, t) => n + t.resets, 0),
    qmp: qmpSessions,
  };
}

const MiB = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

test(`soak: ${TOTAL_MS / 1000} s of client churn — memory, fds, handles and timers stable; the log's tail exact`, { timeout: TOTAL_MS + 180_000 }, async () => {
  assert.ok(Number.isFinite(TOTAL_MS) && TOTAL_MS >= 10_000, 'CHARDEV_SOAK_MS must be at least 10000');
  const dir = tmp('soak');
  fs.mkdirSync(path.join(dir, 'run'), { mode: 0o700 });
  const log = path.join(dir, 'serial0.log');
  const countFile = path.join(dir, 'guest.count');
  const xmlFile = path.join(dir, 'soak.xml');
  fs.writeFileSync(
    xmlFile,
    domainXml(
      `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><log file='${q(log)}'/><cd:rotate size='1048576' backups='2'/><cd:clients max='8'/><cd:history size='262144'/></serial>`,
      'soak',
    ),
  );
  // About 200 KB/s of guest output, for as long as the soak runs.
  const cd = new ChardevProcess({
    xmlFile,
    logDir: path.join(dir, 'logs'),
    runDir: path.join(dir, 'run'),
    guest: [PYTHON, '-c', recordGuest(0, 4, 5, countFile)],
  });
  let writer: PyPeer | undefined;
  try {
    const port = Number((await cd.out(/^charserial0: listening on tcp:127\.0\.0\.1:(\d+)$/m))[1]);
    await cd.ready();
    const started = Date.now();
    const warm = await churn(cd, port, WARMUP_MS, 1);
    let a = await sample(cd);
    let main = await churn(cd, port, Math.max(0, TOTAL_MS - (Date.now() - started)), 3);
    let b = await sample(cd);
    // The data-plane thread starts with the first streaming burst (a stalled client lets the
    // guest's pipe fill: rare here, at any time) and keeps its fds for good. If that happened
    // between the two samples, the comparison starts again from the second, over one more
    // stretch of churn, so a one-time start is not counted as a leak and a leak still is.
    let rebased = '';
    if (!a.dataPlane && b.dataPlane) {
      a = b;
      const more = await churn(cd, port, REBASE_MS, 7);
      main = { connects: main.connects + more.connects, received: main.received + more.received, resets: main.resets + more.resets, qmp: main.qmp + more.qmp };
      b = await sample(cd);
      rebased = ` (the data-plane thread started between the samples: compared over ${REBASE_MS / 1000} s more from there)`;
    }
    const seconds = (Date.now() - started) / 1000;
    assert.ok(cd.alive, `chardev is running; stderr: ${cd.stderr}`);

    // The end: one client asks the guest to stop.
    writer = new PyPeer(STREAM_PEER, ['tcp', 'connect', String(port)]);
    assert.match(await writer.line(), /^connected /);
    assert.equal(await writer.cmd(`send ${hex('quit\n')}`), 'sent');
    assert.deepEqual(await cd.exited, { code: 0, signal: null }, cd.stderr);
    assert.equal(cd.stderr, '', 'no device errors');
    const written = Number(fs.readFileSync(countFile, 'utf8'));
    const { files, bytes } = readRotated(log);
    const tail = checkRecords(bytes, 'the kept log files');
    assert.equal(tail.first + tail.count, written, 'the kept files end with the guest’s last record');

    const connects = warm.connects + main.connects;
    const qmpSessions = warm.qmp + main.qmp;
    figure(
      `soak: ${seconds.toFixed(0)} s, ${connects} client connects (${(connects / seconds).toFixed(0)}/s, ${warm.resets + main.resets} resets), ${qmpSessions} QMP sessions, ` +
        `guest wrote ${MiB(written * 256)}; log tail ${MiB(bytes.length)} in ${files.length} files exact`,
    );
    figure(
      `soak: after warm-up → end: RSS ${MiB(a.rss)} → ${MiB(b.rss)}, heap ${MiB(a.heapUsed)} → ${MiB(b.heapUsed)}, fds ${a.fds} → ${b.fds}, ` +
        `timers ${a.timers} → ${b.timers}, handles ${a.handles} → ${b.handles} (${JSON.stringify(b.resources)})${rebased}`,
    );
    assert.ok(b.fds - a.fds <= MAX_FD_GROWTH, `fds ${a.fds} → ${b.fds}`);
    assert.ok(b.timers - a.timers <= MAX_HANDLE_GROWTH, `timers ${a.timers} → ${b.timers}`);
    assert.ok(b.handles - a.handles <= MAX_HANDLE_GROWTH, `handles ${JSON.stringify(a.resources)} → ${JSON.stringify(b.resources)}`);
    assert.ok(b.rss - a.rss <= MAX_RSS_GROWTH, `RSS ${MiB(a.rss)} → ${MiB(b.rss)}`);
    assert.ok(b.heapUsed - a.heapUsed <= MAX_HEAP_GROWTH, `heap ${MiB(a.heapUsed)} → ${MiB(b.heapUsed)}`);
  } finally {
    await writer?.kill();
    await cd.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
