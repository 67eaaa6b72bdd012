/**
 * The `daemon` row: one `chardev daemon` (bin/chardev.js → dist/) hosting DOMAINS domains
 * of 4 devices each — a pty, a UNIX server with history and a `<log>`, a telnet server, a
 * file — each domain's guest a stand-in QEMU (test/helpers/standin-qemu.ts: one hub
 * process connecting to the daemon's sockets as QEMU 7.2 does, reconnect=1 included), so
 * the figures are the daemon's alone. Measured from outside the daemon:
 *
 * - RSS of the daemon process (/proc/PID/status VmRSS) once every guest is connected and it
 *   has settled; target ≤ 150 MB.
 * - adding one domain: the wall time of `x-domain-start` on the control socket (the XML
 *   parsed, 4 devices and their sockets up, the stand-in started and every port connected),
 *   median over the DOMAINS starts; target ≤ 50 ms.
 * - idle CPU: the daemon's utime+stime (/proc/PID/stat) over IDLE_S seconds with nothing
 *   happening, as a share of one core; target ≈ 0 (≤ 0.5 %).
 * - a restart under load: every guest writes a line every 100 ms to its UNIX and telnet
 *   devices, a TCP client reads each telnet server; the daemon gets SIGTERM and a new one is
 *   started. Then: guests lost (a stand-in process gone; target 0), the slowest console
 *   back (from the new daemon's start to a guest line at a client reconnected to the same
 *   port; target ≤ 5 s) and `<log>`s continued (the file starts with what it held before
 *   the restart and has lines from after; target all).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { QmpClient } from '../../src/control/qmp-client.ts';
import { STANDIN_QEMU, StandinHub, type StandinGuest } from '../../test/helpers/standin-qemu.ts';
import { judged, type Ctx, type Row } from './measurements.ts';
import { ensureBuilt } from './startup.ts';
import { atLeastValue, atMostValue, median, type Target } from './verdict.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'chardev.js');
const DOMAINS = 100;
const RSS_TARGET_MB = 150;
const ADD_TARGET_MS = 50;
const IDLE_CPU_TARGET = 0.5;
const BACK_TARGET_S = 5;
const SETTLE_MS = 3000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** utime + stime in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface DaemonProc {
  readonly child: ChildProcess;
  readonly started: number;
  out: string;
  readonly exited: Promise<number | null>;
}

function startDaemon(scratch: string, hub: StandinHub): DaemonProc {
  const child = spawn(process.execPath, [BIN, 'daemon', '--run-dir', path.join(scratch, 'run'), '--log-dir', path.join(scratch, 'logs')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...hub.env, NOTIFY_SOCKET: '' },
  });
  const d: DaemonProc = { child, started: performance.now(), out: '', exited: new Promise((resolve) => child.once('close', (code) => resolve(code))) };
  child.stdout?.on('data', (b: Buffer) => (d.out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (d.out += b.toString()));
  return d;
}

async function until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`daemon: timed out waiting for ${what}`);
    await sleep(20);
  }
}

function domainXml(scratch: string, n: number): string {
  return `<domain type='kvm' xmlns:cd='urn:chardev:1'><name>vm${n}</name><devices>
  <serial type='pty'/>
  <serial type='unix'><source mode='bind' path='${path.join(scratch, `vm${n}.sock`)}'/><log file='${path.join(scratch, `vm${n}.console.log`)}'/><cd:history size='65536'/></serial>
  <serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='telnet'/></serial>
  <serial type='file'><source path='${path.join(scratch, `vm${n}.file.log`)}'/></serial>
</devices></domain>`;
}

/** A TCP client of a telnet device that notes when a guest line first arrives. */
function readLines(port: number, onLine: () => void): net.Socket {
  const sock = net.connect({ host: '127.0.0.1', port });
  let seen = false;
  sock.on('data', (b: Buffer) => {
    if (!seen && /line \d+/.test(b.toString('latin1'))) {
      seen = true;
      onLine();
    }
  });
  sock.on('error', () => {});
  return sock;
}

export async function daemonFigures(ctx: Ctx): Promise<Row[]> {
  ensureBuilt(ctx.log, 'daemon');
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-bench-daemon-'));
  const hub = await StandinHub.start(scratch);
  let daemon: DaemonProc | undefined;
  let writer: NodeJS.Timeout | undefined;
  const clients: net.Socket[] = [];
  try {
    daemon = startDaemon(scratch, hub);
    const d0 = daemon;
    await until(() => /daemon: control socket/.test(d0.out), 'the daemon to listen', 30000);
    const control = path.join(scratch, 'run', 'daemon', 'control.qmp');
    const qmp = await QmpClient.connect(control);
    const addMs: number[] = [];
    const guests: StandinGuest[] = [];
    const telnetPorts: number[] = [];
    try {
      for (let n = 0; n < DOMAINS; n++) {
        const t0 = performance.now();
        const r = (await qmp.execute('x-domain-start', { xml: domainXml(scratch, n), qemu: { argv: [STANDIN_QEMU] } }, 30000)) as {
          'qemu-pid': number;
          lines: string[];
        };
        addMs.push(performance.now() - t0);
        const g = hub.guests.find((x) => x.pid === r['qemu-pid']);
        if (g === undefined) throw new Error(`daemon: no stand-in for vm${n}`);
        guests.push(g);
        const port = r.lines.map((l) => /^charserial2: listening on telnet:127\.0\.0\.1:(\d+)$/.exec(l)?.[1]).find((p) => p !== undefined);
        telnetPorts.push(Number(port));
      }
    } finally {
      await qmp.close();
    }
    ctx.log(`daemon: ${DOMAINS} domains started, median ${median(addMs).toFixed(1)} ms each`);
    const pid1 = d0.child.pid as number;
    await sleep(SETTLE_MS);
    const rss = rssBytes(pid1);
    const idleS = ctx.quick ? 5 : 10;
    const ticks0 = cpuTicks(pid1);
    await sleep(idleS * 1000);
    const idleCpu = ((cpuTicks(pid1) - ticks0) / CLOCK_TICKS / idleS) * 100;
    ctx.log(`daemon: RSS ${(rss / 1e6).toFixed(1)} MB, idle CPU ${idleCpu.toFixed(2)} %`);

    // Under load: every guest writes a line every 100 ms; a client reads each telnet device.
    let line = 0;
    writer = setInterval(() => {
      line++;
      for (const [n, g] of guests.entries()) {
        void g.port('charserial1').write(`vm${n} line ${line}\n`);
        void g.port('charserial2').write(`vm${n} line ${line}\r\n`);
      }
    }, 100);
    for (const p of telnetPorts) clients.push(readLines(p, () => {}));
    await sleep(1000);
    const logsBefore = guests.map((_, n) => fs.readFileSync(path.join(scratch, `vm${n}.console.log`), 'latin1'));
    const sigterm = performance.now();
    d0.child.kill('SIGTERM');
    const code = await d0.exited;
    if (code !== 0) throw new Error(`daemon: the first daemon exited ${String(code)}: ${d0.out}`);
    const gapStart = performance.now();
    for (const c of clients.splice(0)) c.destroy();
    daemon = startDaemon(scratch, hub);
    const d1 = daemon;
    // Each console's client comes back to the same port as soon as it listens again.
    const backS: Array<number | undefined> = telnetPorts.map(() => undefined);
    const reconnect = (n: number): void => {
      const sock = readLines(telnetPorts[n] as number, () => (backS[n] = (performance.now() - d1.started) / 1000));
      sock.once('close', () => {
        if (backS[n] === undefined && d1.child.exitCode === null) setTimeout(() => reconnect(n), 100);
      });
      clients.push(sock);
    };
    telnetPorts.forEach((_, n) => reconnect(n));
    await until(() => backS.every((s) => s !== undefined), 'every console back', 60000);
    const slowest = Math.max(...(backS as number[]));
    const lost = guests.filter((g) => !alive(g.pid)).length;
    const mark = line;
    await until(() => line >= mark + 3, 'a few more lines', 10000);
    await sleep(300);
    let continued = 0;
    for (const [n, before] of logsBefore.entries()) {
      const now = fs.readFileSync(path.join(scratch, `vm${n}.console.log`), 'latin1');
      if (now.startsWith(before) && now.slice(before.length).includes(`vm${n} line ${mark + 1}\n`)) continued++;
    }
    const rss2 = rssBytes(d1.child.pid as number);
    ctx.log(
      `daemon: restart: slowest console back ${slowest.toFixed(2)} s after the new daemon started (${((gapStart - sigterm) / 1000).toFixed(2)} s for the old one to stop), ${lost} guests lost, ${continued}/${DOMAINS} logs continued; RSS after ${(rss2 / 1e6).toFixed(1)} MB`,
    );
    // Targets as data: the verdicts are computed from the figures (verdict.ts), as for every row.
    const row = (figure: string, unit: string, value: number, goal: Target, details?: unknown): Row =>
      judged({ id: 'daemon', figure, unit, chardev: value, peer: null, peerName: '', ratio: null, goal, ...(details !== undefined ? { details } : {}) });
    return [
      row(`daemon RSS, ${DOMAINS} domains × 4 devices (stand-in guests)`, 'MB', rss / 1e6, atMostValue(RSS_TARGET_MB), {
        rssBytes: rss,
        afterRestartRssBytes: rss2,
      }),
      row('daemon: add one domain (x-domain-start, median)', 'ms', median(addMs), atMostValue(ADD_TARGET_MS), { addMs, maxMs: Math.max(...addMs) }),
      row(`daemon idle CPU (${DOMAINS} domains, ${idleS} s)`, '%', idleCpu, atMostValue(IDLE_CPU_TARGET)),
      row('daemon restart under load: slowest console back', 's', slowest, atMostValue(BACK_TARGET_S), {
        backSeconds: backS,
        oldDaemonStopSeconds: (gapStart - sigterm) / 1000,
      }),
      row('daemon restart under load: guests lost', 'guests', lost, atMostValue(0)),
      row('daemon restart under load: <log>s continued', 'logs', continued, atLeastValue(DOMAINS)),
    ];
  } finally {
    clearInterval(writer);
    for (const c of clients) c.destroy();
    if (daemon !== undefined && daemon.child.exitCode === null) {
      daemon.child.kill('SIGTERM');
      await Promise.race([daemon.exited, sleep(15000)]);
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    hub.close();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}
