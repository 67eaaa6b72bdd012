/**
 * One function per figure of SPEC §8. Each runs chardev and its peer on the same work,
 * `reps` times rotating which goes first, and computes ratios per repetition (same
 * noise conditions) before taking the median, as the baselines in
 * ../shared/reference/peers-and-baselines.md part B were taken. Every process and file a
 * measurement starts is ended and removed in its `finally`, whatever happened.
 *
 * The guest everywhere is `guest.sh K`: `dd if=/dev/zero bs=64K count=K`, then `sleep`
 * with stdout still open (so no side has to race an EOF). Both sides start it before the
 * reader arrives and it blocks on its full stdout until the relay reads: socat runs it as
 * `EXEC:` (its first address), the chardev host spawns it and pauses its stdout until the
 * expected clients are attached.
 *
 * - throughput (tcp, unix): chardev serves a `<serial type='tcp'|'unix'>` server; the host
 *   writes each guest chunk with `device.write` and paces the guest (PACING below). socat:
 *   `socat -u -b 65536 EXEC:guest TCP-LISTEN:P,bind=127.0.0.1,reuseaddr` (UNIX-LISTEN:PATH).
 *   Same Python reader on both (recv_into a 256 KiB buffer), clocked from its first byte to
 *   its last; the byte count is checked and chardev's `dropped` counter must stay 0. A third
 *   side, bare Node `child.stdout.pipe(socket)`, is the floor any Node relay starts from.
 * - pty: chardev `<serial type='pty'>` (reader attached through the pty poll) vs
 *   `socat -u -b 65536 EXEC:guest PTY,link=L,raw,echo=0`; the reader opens the slave (both
 *   sides already set it raw; it does not touch termios, as TCSAFLUSH would discard bytes).
 * - latency: chardev TCP server whose guest is `cat` (client input → cat's stdin, cat's stdout
 *   → device.write, as `chardev run` wires it) vs `socat TCP-LISTEN:P EXEC:cat`; a Python
 *   client with TCP_NODELAY sends 1 byte and waits for it, after a warm-up; p50 and p99.
 * - idle: one chardev process opens 10,000 `<serial type='unix'>` servers (fewer if the
 *   hard open-files limit is lower, with a note); RSS before `open` and after it (after a GC
 *   on both sides) per device, then CPU over an idle window after a settling pause, split
 *   into the event-loop thread and V8/libuv helper threads. socat: N idle
 *   `socat UNIX-LISTEN:PATH EXEC:cat` processes, PSS from smaps_rollup, CPU from /proc/PID/stat.
 * - fan-out: chardev TCP server with `<cd:clients max='101'>` (raised on the loaded model:
 *   the XML caps it at 64), 100 reading viewers and one that never reads (4 KiB receive
 *   buffer), against the same device with one client; one Python process reads all 100
 *   with epoll. Per-viewer and aggregate throughput; what live viewers and the stalled one
 *   missed. Then the same with the guest at a console's pace (`guest-paced.sh`, ~2.6 MB/s,
 *   4 MiB), so the guest and not the relay sets the rate (information, no target).
 * - file / log: chardev `<serial type='file'>` and a null device with `<log file>` vs
 *   `sh -c 'dd … | cat > FILE'`, both clocked from spawning the guest to the last byte
 *   written (chardev) or cat's exit; the file size is checked. Floor: bare Node
 *   `fs.writeSync` per chunk.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { BenchError, Host, Proc, makeScratch, removeScratch, sleep } from './procs.ts';
import type { Pacing, StreamBackend } from './protocol.ts';

export interface Ctx {
  readonly quick: boolean;
  readonly reps: number;
  readonly python: string;
  /** Scripts written once per run (peers.ts, the guest). */
  readonly readerPy: string;
  readonly pingPy: string;
  /** `guest.sh BLOCKS`: BLOCKS × 64 KiB of zeros on stdout, then silence with stdout open. */
  readonly guestSh: string;
  /** `guest-paced.sh BLOCKS PER_TICK`: the same zeros, PER_TICK blocks every 100 ms. */
  readonly pacedGuestSh: string;
  readonly profileDir: string | undefined;
  readonly log: (line: string) => void;
}

export interface Row {
  readonly id: string;
  readonly figure: string;
  readonly unit: string;
  readonly chardev: number | null;
  readonly peer: number | null;
  /** What the peer column holds (socat …, cat > file). */
  readonly peerName: string;
  /** chardev / peer, or the figure the target is about (fan-out). */
  readonly ratio: number | null;
  readonly target: string;
  readonly met: boolean | null;
  readonly note?: string;
  readonly details?: unknown;
}

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;

/**
 * The frontend's flow control (protocol.ts Pacing): pause the guest while the writer
 * client's queue is above 512 KiB, resume at 128 KiB, checked every millisecond. With the
 * guest's reads at most 64 KiB, a queue never passes 576 KiB, well inside the default
 * 1 MiB client bound, so nothing is ever dropped; the kernel's socket buffer (MiBs on
 * loopback) keeps the reader busy while the guest waits.
 */
export const PACING: Pacing = { highBytes: 512 * 1024, lowBytes: 128 * 1024, pollMs: 1 };

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

interface ReaderOut {
  readonly bytes: number[];
  readonly first: number;
  readonly last: number[];
  readonly connectSeconds: number;
}

interface ReaderArgs {
  readonly kind: 'tcp' | 'unix' | 'pty';
  readonly address: string;
  readonly bytes: number;
  readonly live: number;
  readonly stalled: number;
}

function startReader(ctx: Ctx, a: ReaderArgs): Proc {
  const idle = ctx.quick ? 2 : 3;
  return new Proc('reader', ctx.python, [ctx.readerPy, a.kind, a.address, String(a.bytes), String(a.live), String(a.stalled), String(idle), '30']);
}

async function readerResult(reader: Proc, timeoutMs: number): Promise<ReaderOut> {
  const exit = await reader.wait(timeoutMs, 'reading');
  if (exit.code !== 0) throw new BenchError(`reader failed (${exit.code ?? exit.signal}): ${reader.stderr}`);
  const line = reader.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as ReaderOut;
}

/** MB/s (10^6 bytes per second) of connection i, from the first byte on any connection. */
function rate(out: ReaderOut, i: number): number {
  const bytes = out.bytes[i] ?? 0;
  const ns = (out.last[i] ?? 0) - out.first;
  return ns > 0 ? bytes / (ns / 1e9) / 1e6 : 0;
}

function mbps(bytes: number, seconds: number): number {
  return bytes / seconds / 1e6;
}

function timeoutFor(bytes: number, viewers = 1): number {
  // Generous: 20 MB/s aggregate at worst, plus start-up.
  return 30_000 + (bytes * viewers) / 20e3;
}

interface StreamRun {
  readonly reader: ReaderOut;
  readonly dropped: number;
  readonly missed: readonly number[];
  readonly cpuSeconds: number;
  readonly pauses: number;
  readonly peakRssBytes: number;
  readonly minorFaults: number;
}

/** chardev: guest → device → `live` reading clients (+ `stalled` that never read). */
async function chardevStream(ctx: Ctx, backend: Exclude<StreamBackend, 'file' | 'log'>, bytes: number, live = 1, stalled = 0, guest: readonly string[] = [ctx.guestSh, String(bytes / BLOCK)]): Promise<StreamRun> {
  const dir = makeScratch('chardev-bench-');
  const clients = live + stalled;
  const host = new Host(
    {
      kind: 'stream',
      backend,
      guest: [...guest],
      bytes,
      clients,
      ...(clients > 1 ? { maxClients: clients } : {}),
      pacing: PACING,
      dir,
    },
    { profileDir: ctx.profileDir },
  );
  let reader: Proc | undefined;
  try {
    const ready = await host.next('ready', 30_000);
    const address = backend === 'tcp' ? String(ready.port) : (ready.path ?? '');
    reader = startReader(ctx, { kind: backend, address, bytes, live, stalled });
    const out = await readerResult(reader, timeoutFor(bytes, live));
    const written = await host.next('written', 10_000);
    const result = await host.finish('result');
    return {
      reader: out,
      dropped: result.dropped,
      missed: result.clients.map((c) => c.bytesMissed),
      cpuSeconds: (result.cpuUserUs + result.cpuSystemUs) / 1e6,
      pauses: written.pauses,
      peakRssBytes: result.peakRssBytes,
      minorFaults: result.minorFaults,
    };
  } finally {
    await host.proc.stop();
    await reader?.stop();
    removeScratch(dir);
  }
}

/** socat: `socat -u -b 65536 EXEC:guest ADDRESS` → the same reader. CPU: socat's own, not its guest's. */
async function socatStream(ctx: Ctx, backend: 'tcp' | 'unix' | 'pty', bytes: number): Promise<{ reader: ReaderOut; cpuSeconds: number }> {
  const dir = makeScratch('chardev-bench-');
  let address: string;
  let socatAddress: string;
  if (backend === 'tcp') {
    const port = await freePort();
    address = String(port);
    socatAddress = `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr`;
  } else if (backend === 'unix') {
    address = path.join(dir, 'socat.sock');
    socatAddress = `UNIX-LISTEN:${address}`;
  } else {
    address = path.join(dir, 'socat.pty');
    socatAddress = `PTY,link=${address},raw,echo=0`;
  }
  const socat = new Proc('socat', 'socat', ['-u', '-b', '65536', `EXEC:${ctx.guestSh} ${bytes / BLOCK}`, socatAddress]);
  let reader: Proc | undefined;
  try {
    reader = startReader(ctx, { kind: backend, address, bytes, live: 1, stalled: 0 });
    const out = await readerResult(reader, timeoutFor(bytes));
    let cpuSeconds = NaN;
    try {
      cpuSeconds = procStatus(socat.pid ?? 0).cpuTicks / CLK_TCK;
    } catch {
      // socat already gone: no CPU figure.
    }
    return { reader: out, cpuSeconds };
  } finally {
    await socat.stop();
    await reader?.stop();
    removeScratch(dir);
  }
}

function checkComplete(who: string, out: ReaderOut, bytes: number): void {
  const got = out.bytes[0] ?? 0;
  if (got !== bytes) throw new BenchError(`${who}: the reader got ${got} of ${bytes} bytes`);
}

/** The order of the sides in repetition `rep`: rotated, so none always runs first (or on a cooler machine). */
function rotate<T>(sides: readonly T[], rep: number): T[] {
  const k = rep % sides.length;
  return [...sides.slice(k), ...sides.slice(0, k)];
}

/** The bare-Node floor (protocol.ts FloorConfig) behind the same reader. */
async function floorStream(ctx: Ctx, backend: 'tcp' | 'unix', bytes: number): Promise<ReaderOut> {
  const dir = makeScratch('chardev-bench-');
  const host = new Host({ kind: 'floor', backend, guest: [ctx.guestSh, String(bytes / BLOCK)], bytes, dir }, { profileDir: ctx.profileDir });
  let reader: Proc | undefined;
  try {
    const ready = await host.next('ready', 30_000);
    const address = backend === 'tcp' ? String(ready.port) : (ready.path ?? '');
    reader = startReader(ctx, { kind: backend, address, bytes, live: 1, stalled: 0 });
    const out = await readerResult(reader, timeoutFor(bytes));
    await host.close();
    return out;
  } finally {
    await host.proc.stop();
    await reader?.stop();
    removeScratch(dir);
  }
}

/**
 * Bulk guest → client throughput through a TCP or UNIX server (or a pty): chardev vs
 * socat, plus the bare-Node floor for the servers.
 */
export async function throughput(ctx: Ctx, backend: 'tcp' | 'unix' | 'pty'): Promise<Row[]> {
  const bytes = backend === 'pty' ? (ctx.quick ? 64 : 256) * MiB : (ctx.quick ? 256 : 1024) * MiB;
  type Side = 'chardev' | 'socat' | 'node';
  const sides: Side[] = backend === 'pty' ? ['chardev', 'socat'] : ['chardev', 'socat', 'node'];
  const figures: Record<Side, number[]> = { chardev: [], socat: [], node: [] };
  const ratios: number[] = [];
  const floorRatios: number[] = [];
  const cpu: number[] = [];
  const socatCpu: number[] = [];
  const faults: number[] = [];
  const peakRss: number[] = [];
  let pauses = 0;
  for (let rep = 0; rep < ctx.reps; rep++) {
    const got: Partial<Record<Side, number>> = {};
    for (const who of rotate(sides, rep)) {
      ctx.log(`${backend} throughput: ${who === 'node' ? 'bare Node (floor)' : who}, ${bytes / MiB} MiB (${rep + 1}/${ctx.reps})`);
      if (who === 'chardev') {
        const run = await chardevStream(ctx, backend, bytes);
        checkComplete('chardev', run.reader, bytes);
        if (run.dropped !== 0) throw new BenchError(`chardev dropped ${run.dropped} bytes; the pacing should prevent that`);
        got.chardev = rate(run.reader, 0);
        cpu.push(run.cpuSeconds);
        faults.push(run.minorFaults);
        peakRss.push(run.peakRssBytes / MiB);
        pauses += run.pauses;
      } else if (who === 'socat') {
        const run = await socatStream(ctx, backend, bytes);
        checkComplete('socat', run.reader, bytes);
        got.socat = rate(run.reader, 0);
        socatCpu.push(run.cpuSeconds);
      } else if (backend !== 'pty') {
        const out = await floorStream(ctx, backend, bytes);
        checkComplete('bare Node', out, bytes);
        got.node = rate(out, 0);
      }
    }
    for (const side of sides) figures[side].push(got[side] ?? NaN);
    ratios.push((got.chardev ?? NaN) / (got.socat ?? NaN));
    floorRatios.push((got.node ?? NaN) / (got.socat ?? NaN));
  }
  const ratio = median(ratios);
  const name = backend.toUpperCase();
  const what = backend === 'pty' ? 'pty relay throughput (guest → pty reader)' : `bulk guest → client throughput, ${name} server`;
  const peerName = backend === 'pty' ? 'socat PTY,raw,echo=0' : `socat ${name}-LISTEN`;
  const target = backend === 'pty' ? 0.9 : 1.0;
  const details = { bytes, reps: ctx.reps, chardevMBps: figures.chardev, socatMBps: figures.socat, nodeFloorMBps: figures.node, ratios, floorRatios, chardevCpuSeconds: cpu, socatCpuSeconds: socatCpu, chardevMinorFaults: faults, chardevPeakRssMiB: peakRss, guestPauses: pauses };
  const rows: Row[] = [
    {
      id: backend === 'pty' ? 'pty' : `bulk-${backend}`,
      figure: what,
      unit: 'MB/s',
      chardev: median(figures.chardev),
      peer: median(figures.socat),
      peerName,
      ratio,
      target: `≥ ${target.toFixed(1)}×`,
      met: ratio >= target,
      details,
    },
  ];
  if (backend !== 'pty') {
    rows.push({
      id: `floor-${backend}`,
      figure: `  floor: bare Node stdout.pipe(socket), ${name}`,
      unit: 'MB/s',
      chardev: median(figures.node),
      peer: median(figures.socat),
      peerName,
      ratio: median(floorRatios),
      target: '(the limit for Node)',
      met: null,
      details,
    });
  }
  return rows;
}

interface Latency {
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly n: number;
}

async function pingPong(ctx: Ctx, port: number, warm: number, count: number): Promise<Latency> {
  const client = new Proc('ping-pong client', ctx.python, [ctx.pingPy, String(port), String(warm), String(count)]);
  try {
    const exit = await client.wait(60_000 + count, 'ping-pong');
    if (exit.code !== 0) throw new BenchError(`ping-pong client failed: ${client.stderr}`);
    return JSON.parse(client.stdout.trim().split('\n').pop() ?? '') as Latency;
  } finally {
    await client.stop();
  }
}

/** 1-byte round trips through an echoing guest (`cat`): chardev TCP server vs `socat TCP-LISTEN EXEC:cat`. */
export async function latency(ctx: Ctx): Promise<Row[]> {
  const warm = ctx.quick ? 500 : 1000;
  const count = ctx.quick ? 5000 : 20_000;
  const c50: number[] = [];
  const c99: number[] = [];
  const s50: number[] = [];
  const s99: number[] = [];
  const r50: number[] = [];
  const r99: number[] = [];
  for (let rep = 0; rep < ctx.reps; rep++) {
    let c: Latency | undefined;
    let s: Latency | undefined;
    for (const who of rotate(['chardev', 'socat'], rep)) {
      ctx.log(`latency: ${who}, ${count} round trips (${rep + 1}/${ctx.reps})`);
      if (who === 'chardev') {
        const host = new Host({ kind: 'echo', guest: ['cat'] }, { profileDir: ctx.profileDir });
        try {
          const ready = await host.next('ready', 30_000);
          c = await pingPong(ctx, ready.port ?? 0, warm, count);
          await host.finish('result');
        } finally {
          await host.proc.stop();
        }
      } else {
        const port = await freePort();
        const socat = new Proc('socat', 'socat', [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr`, 'EXEC:cat']);
        try {
          s = await pingPong(ctx, port, warm, count);
        } finally {
          await socat.stop();
        }
      }
    }
    if (c === undefined || s === undefined) throw new BenchError('latency: a side did not run');
    c50.push(c.p50);
    c99.push(c.p99);
    s50.push(s.p50);
    s99.push(s.p99);
    r50.push(c.p50 / s.p50);
    r99.push(c.p99 / s.p99);
  }
  const p50 = median(r50);
  const p99 = median(r99);
  const details = { warmup: warm, roundTrips: count, reps: ctx.reps, chardevP50: c50, chardevP99: c99, socatP50: s50, socatP99: s99 };
  return [
    { id: 'latency-p50', figure: '1-byte round trip p50, TCP, echo guest (cat)', unit: 'µs', chardev: median(c50), peer: median(s50), peerName: 'socat TCP-LISTEN EXEC:cat', ratio: p50, target: '≤ 1.1×', met: p50 <= 1.1, details },
    { id: 'latency-p99', figure: '1-byte round trip p99, TCP, echo guest (cat)', unit: 'µs', chardev: median(c99), peer: median(s99), peerName: 'socat TCP-LISTEN EXEC:cat', ratio: p99, target: '≤ 1.3×', met: p99 <= 1.3, details },
  ];
}

function procStatus(pid: number): { pssBytes: number; rssBytes: number; cpuTicks: number } {
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? 0) * 1024;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): utime is 14th, stime 15th overall.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { pssBytes: kb('Pss'), rssBytes: kb('Rss'), cpuTicks: Number(fields[11]) + Number(fields[12]) };
}

/** Clock ticks per second for /proc/PID/stat (USER_HZ, 100 on Linux). */
const CLK_TCK = 100;

/** 10,000 idle devices with a listening UNIX server each, in one chardev process; idle socat relays for comparison. */
export async function idleDevices(ctx: Ctx, fdHard: number | null): Promise<Row[]> {
  let devices = 10_000;
  let note: string | undefined;
  // Each device holds one listening fd; leave room for Node's own and the socat side.
  if (fdHard !== null && fdHard < devices + 256) {
    devices = Math.max(100, fdHard - 256);
    note = `scaled down to ${devices} devices: the hard open-files limit is ${fdHard}`;
  }
  const idleMs = ctx.quick ? 2000 : 10_000;
  const settleMs = ctx.quick ? 2000 : 5000;
  const socatCount = ctx.quick ? 50 : 200;

  // Both sides idle at the same time: idle costs next to nothing, and it halves the wait.
  ctx.log(`idle: chardev, ${devices} devices with a UNIX server each; socat, ${socatCount} idle UNIX-LISTEN relays; ${idleMs / 1000} s idle`);
  const dir = makeScratch('chardev-bench-');
  const sdir = makeScratch('chardev-bench-');
  const relays: Proc[] = [];
  let pss: number[] = [];
  let rss: number[] = [];
  let socatCpuTicks = 0;
  let socatIdleMs = 0;
  const host = new Host({ kind: 'idle', devices, dir, settleMs, idleMs }, { exposeGc: true, profileDir: ctx.profileDir });
  let idle;
  try {
    for (let i = 0; i < socatCount; i++) relays.push(new Proc('socat', 'socat', [`UNIX-LISTEN:${path.join(sdir, `s${i}`)}`, 'EXEC:cat']));
    const socatSide = async (): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while (fs.readdirSync(sdir).length < socatCount) {
        if (Date.now() > deadline) throw new BenchError('idle: socat relays did not all start listening');
        await sleep(20);
      }
      await sleep(500);
      const before = relays.map((p) => procStatus(p.pid ?? 0));
      const t0 = performance.now();
      await sleep(idleMs);
      socatIdleMs = performance.now() - t0;
      const after = relays.map((p) => procStatus(p.pid ?? 0));
      pss = after.map((st) => st.pssBytes);
      rss = after.map((st) => st.rssBytes);
      socatCpuTicks = after.reduce((sum, st, i) => sum + st.cpuTicks - (before[i]?.cpuTicks ?? 0), 0);
    };
    [idle] = await Promise.all([host.next('idle', 120_000 + settleMs + idleMs), socatSide()]);
    await host.close(60_000);
  } finally {
    await host.proc.stop();
    await Promise.all(relays.map((p) => p.stop()));
    removeScratch(dir);
    removeScratch(sdir);
  }
  if (idle.listening !== devices) throw new BenchError(`idle: only ${idle.listening} of ${devices} servers were listening`);

  const perDeviceKiB = (idle.rssAfterBytes - idle.rssBeforeBytes) / devices / 1024;
  const socatKiB = median(pss) / 1024;
  const cpuPct = (idle.idleCpuUs / 1000 / idle.idleMs) * 100;
  const socatPct = ((socatCpuTicks / CLK_TCK) * 1000 / socatIdleMs) * 100;
  const details = {
    devices,
    startMs: Math.round(idle.startMs),
    rssBeforeMiB: idle.rssBeforeBytes / MiB,
    rssAfterMiB: idle.rssAfterBytes / MiB,
    heapPerDeviceBytes: Math.round(idle.heapDeltaBytes / devices),
    externalPerDeviceBytes: Math.round(idle.externalDeltaBytes / devices),
    fdLimit: { soft: idle.fdSoft, hard: idle.fdHard, open: idle.fdsOpen },
    idleCpuMs: idle.idleCpuUs / 1000,
    mainThreadMs: idle.mainThreadMs,
    otherThreadsMs: idle.otherThreadsMs,
    settleMs,
    idleMs: Math.round(idle.idleMs),
    socat: { relays: socatCount, pssKiBMedian: socatKiB, rssKiBMedian: median(rss) / 1024, cpuTicks: socatCpuTicks },
  };
  const noteProp = note !== undefined ? { note } : {};
  return [
    {
      id: 'idle-memory',
      figure: `memory per idle device (${devices} UNIX servers, one process)`,
      unit: 'KiB',
      chardev: perDeviceKiB,
      peer: socatKiB,
      peerName: 'socat PSS per idle relay',
      ratio: perDeviceKiB / socatKiB,
      target: '≤ 16 KiB',
      met: perDeviceKiB <= 16,
      ...noteProp,
      details,
    },
    {
      id: 'idle-cpu',
      figure: `CPU while idle (${devices} devices; socat: all ${socatCount} relays)`,
      unit: '% of a core',
      chardev: cpuPct,
      peer: socatPct,
      peerName: `socat, ${socatCount} processes`,
      ratio: null,
      target: '≈ 0 (≤ 0.5 %)',
      met: cpuPct <= 0.5,
      note: `${note !== undefined ? `${note}; ` : ''}over ${(idle.idleMs / 1000).toFixed(0)} s (after ${settleMs / 1000} s to settle): event-loop thread ${idle.mainThreadMs.toFixed(1)} ms, V8/libuv helper threads ${idle.otherThreadsMs.toFixed(1)} ms`,
      details,
    },
  ];
}

/**
 * Fan-out: one TCP server device, 100 reading viewers and one that never reads, against
 * the same device with a single client, both paced by the writer client (the first to
 * attach, a reading one).
 */
/** The paced guest: PACED_BLOCKS_PER_TICK × 64 KiB every 100 ms (~2.6 MB/s, ~230× a 115200-baud UART). */
const PACED_BLOCKS_PER_TICK = 4;
const PACED_MBPS = Math.round((PACED_BLOCKS_PER_TICK * BLOCK * 10) / 1e5) / 10;
/** 4 MiB: ~1.6 s per run at that pace. */
const PACED_BYTES = 4 * MiB;

export async function fanOut(ctx: Ctx): Promise<Row[]> {
  const viewers = 100;
  const bytes = (ctx.quick ? 16 : 64) * MiB;
  const reps = Math.min(ctx.reps, 2);
  const minRatios: number[] = [];
  const aggRatios: number[] = [];
  const singles: number[] = [];
  const mins: number[] = [];
  const medians: number[] = [];
  const aggregates: number[] = [];
  const connectSeconds: number[] = [];
  let missedLive = 0;
  let missedStalled = 0;
  let incomplete = 0;
  const pacedSingles: number[] = [];
  const pacedMins: number[] = [];
  const pacedRatios: number[] = [];
  let pacedIncomplete = 0;
  for (let rep = 0; rep < reps; rep++) {
    ctx.log(`fan-out: chardev, 1 client, ${bytes / MiB} MiB (${rep + 1}/${reps})`);
    const one = await chardevStream(ctx, 'tcp', bytes);
    checkComplete('chardev single client', one.reader, bytes);
    const single = rate(one.reader, 0);
    ctx.log(`fan-out: chardev, ${viewers} viewers + 1 stalled, ${bytes / MiB} MiB each (${rep + 1}/${reps})`);
    const many = await chardevStream(ctx, 'tcp', bytes, viewers, 1);
    const rates = many.reader.bytes.map((_, i) => rate(many.reader, i));
    incomplete += many.reader.bytes.filter((b) => b < bytes).length;
    // The reader has closed its connections by the time the host reports, so the hub's
    // list may be empty; `dropped` sums what every client ever missed. A live viewer that
    // missed output is one that got fewer than `bytes`.
    const shortLive = many.reader.bytes.reduce((sum, b) => sum + Math.max(0, bytes - b), 0);
    missedLive += shortLive;
    missedStalled += many.dropped - shortLive;
    connectSeconds.push(many.reader.connectSeconds);
    const min = Math.min(...rates);
    const totalBytes = many.reader.bytes.reduce((a, b) => a + b, 0);
    const span = (Math.max(...many.reader.last) - many.reader.first) / 1e9;
    const aggregate = mbps(totalBytes, span);
    singles.push(single);
    mins.push(min);
    medians.push(median(rates));
    aggregates.push(aggregate);
    minRatios.push(min / single);
    aggRatios.push(aggregate / single);

    // The same fan-out with the guest at a console's pace (far above any UART's): what a
    // viewer gets when the guest, not the relay, sets the rate.
    const pacedBytes = PACED_BYTES;
    const pacedGuest = [ctx.pacedGuestSh, String(pacedBytes / BLOCK), String(PACED_BLOCKS_PER_TICK)];
    ctx.log(`fan-out: chardev, guest at ~${PACED_MBPS} MB/s, 1 client, then ${viewers} viewers + 1 stalled (${rep + 1}/${reps})`);
    const pacedOne = await chardevStream(ctx, 'tcp', pacedBytes, 1, 0, pacedGuest);
    checkComplete('chardev single client (paced guest)', pacedOne.reader, pacedBytes);
    const pacedMany = await chardevStream(ctx, 'tcp', pacedBytes, viewers, 1, pacedGuest);
    const pacedRates = pacedMany.reader.bytes.map((_, i) => rate(pacedMany.reader, i));
    pacedIncomplete += pacedMany.reader.bytes.filter((b) => b < pacedBytes).length;
    pacedSingles.push(rate(pacedOne.reader, 0));
    pacedMins.push(Math.min(...pacedRates));
    pacedRatios.push(Math.min(...pacedRates) / rate(pacedOne.reader, 0));
  }
  const minRatio = median(minRatios);
  const details = { viewers, stalled: 1, bytesPerViewer: bytes, reps, singleMBps: singles, minViewerMBps: mins, medianViewerMBps: medians, aggregateMBps: aggregates, liveViewerBytesMissed: missedLive, stalledBytesMissed: missedStalled, liveViewersIncomplete: incomplete, connectSeconds };
  return [
    {
      id: 'fanout-viewer',
      figure: `fan-out: slowest of ${viewers} live viewers (1 stalled) vs 1 client`,
      unit: 'MB/s',
      chardev: median(mins),
      peer: median(singles),
      peerName: 'chardev, single client (socat has no fan-out)',
      ratio: minRatio,
      target: '≥ 0.5×',
      met: minRatio >= 0.5,
      note: `live viewers missed ${missedLive} bytes (${incomplete} incomplete), the stalled one ${missedStalled}; attaching ${viewers + 1} clients took ${median(connectSeconds).toFixed(1)} s`,
      details,
    },
    {
      id: 'fanout-aggregate',
      figure: `fan-out: all ${viewers} live viewers together vs 1 client`,
      unit: 'MB/s',
      chardev: median(aggregates),
      peer: median(singles),
      peerName: 'chardev, single client',
      ratio: median(aggRatios),
      target: '(information)',
      met: null,
      details,
    },
    {
      id: 'fanout-paced',
      figure: `fan-out, guest at ~${PACED_MBPS} MB/s: slowest of ${viewers} live viewers (1 stalled) vs 1 client`,
      unit: 'MB/s',
      chardev: median(pacedMins),
      peer: median(pacedSingles),
      peerName: 'chardev, single client, same guest',
      ratio: median(pacedRatios),
      target: '(information)',
      met: null,
      note: `${pacedIncomplete} live viewers incomplete with the guest at a console's pace`,
      details: { viewers, bytesPerViewer: PACED_BYTES, reps, singleMBps: pacedSingles, minViewerMBps: pacedMins, ratios: pacedRatios, liveViewersIncomplete: pacedIncomplete },
    },
  ];
}

/** Guest output to a file: chardev's file backend (and a null device's `<log>` tee) vs `sh -c 'GUEST | cat > FILE'`. */
export async function fileWrite(ctx: Ctx): Promise<Row[]> {
  const bytes = (ctx.quick ? 128 : 1024) * MiB;
  const blocks = bytes / BLOCK;
  const rows: Row[] = [];
  for (const backend of ['file', 'log', 'floor'] as const) {
    const chardev: number[] = [];
    const cat: number[] = [];
    const ratios: number[] = [];
    for (let rep = 0; rep < ctx.reps; rep++) {
      let c = 0;
      let p = 0;
      for (const who of rotate(['chardev', 'cat'], rep)) {
        ctx.log(`${backend === 'floor' ? 'file write, bare Node (floor)' : `${backend} write`}: ${who}, ${bytes / MiB} MiB (${rep + 1}/${ctx.reps})`);
        const dir = makeScratch('chardev-bench-');
        try {
          if (who === 'chardev' && backend === 'floor') {
            const host = new Host({ kind: 'floor', backend: 'file', guest: [ctx.guestSh, String(blocks)], bytes, dir });
            try {
              await host.next('ready', 30_000);
              const written = await host.next('written', timeoutFor(bytes));
              await host.close();
              const size = fs.statSync(path.join(dir, 'floor.out')).size;
              if (size !== bytes) throw new BenchError(`bare Node file: the file has ${size} of ${bytes} bytes`);
              c = mbps(bytes, written.seconds);
            } finally {
              await host.proc.stop();
            }
          } else if (who === 'chardev' && backend !== 'floor') {
            const host = new Host({ kind: 'stream', backend, guest: [ctx.guestSh, String(blocks)], bytes, clients: 0, pacing: PACING, dir }, { profileDir: ctx.profileDir });
            try {
              await host.next('ready', 30_000);
              const written = await host.next('written', timeoutFor(bytes));
              const result = await host.finish('result');
              const file = path.join(dir, backend === 'file' ? 'chardev.out' : 'chardev.log');
              const size = fs.statSync(file).size;
              if (size !== bytes || result.dropped !== 0) throw new BenchError(`chardev ${backend}: the file has ${size} of ${bytes} bytes (dropped ${result.dropped})`);
              c = mbps(bytes, written.seconds);
            } finally {
              await host.proc.stop();
            }
          } else {
            const file = path.join(dir, 'cat.out');
            const t0 = process.hrtime.bigint();
            const sh = new Proc('cat', 'sh', ['-c', `dd if=/dev/zero bs=65536 count=${blocks} status=none | cat > '${file}'`]);
            try {
              const exit = await sh.wait(timeoutFor(bytes), 'cat > file');
              const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
              if (exit.code !== 0) throw new BenchError(`cat > file failed: ${sh.stderr}`);
              const size = fs.statSync(file).size;
              if (size !== bytes) throw new BenchError(`cat > file wrote ${size} of ${bytes} bytes`);
              p = mbps(bytes, seconds);
            } finally {
              await sh.stop();
            }
          }
        } finally {
          // Removing the file at once frees its dirty pages instead of writing them back during the next run.
          removeScratch(dir);
        }
      }
      chardev.push(c);
      cat.push(p);
      ratios.push(c / p);
    }
    const ratio = median(ratios);
    const floor = backend === 'floor';
    rows.push({
      id: backend,
      figure: backend === 'file' ? 'file backend write throughput' : backend === 'log' ? '<log file> tee write throughput (null device)' : '  floor: bare Node fs.writeSync per chunk',
      unit: 'MB/s',
      chardev: median(chardev),
      peer: median(cat),
      peerName: 'cat > file',
      ratio,
      target: floor ? '(the limit for Node)' : '≥ 0.8×',
      met: floor ? null : ratio >= 0.8,
      details: { bytes, reps: ctx.reps, chardevMBps: chardev, catMBps: cat, ratios },
    });
  }
  return rows;
}
