/**
 * The chardev side of every measurement: a process of its own that uses the library the
 * way `chardev run` does — open a domain, spawn the guest with its stdout on a pipe the
 * device reads itself (`guestPipe`, `GuestOutput`), its input to the guest's stdin — so
 * its CPU, memory and profile (`node --cpu-prof`) are chardev's alone, like socat's are
 * socat's.
 *
 *   node --import tsx scripts/bench/host.ts '<HostConfig as JSON>'
 *
 * Talks JSON lines on stdout (protocol.ts); a `stop` line on stdin (or stdin closing)
 * ends it: the domain is stopped and the guest killed.
 *
 * The guest is never paced here. Its output reaches the device under QEMU's flow control:
 * while the writer client is behind, the guest's pipe is not read (not spliced, on the
 * kernel path; on the JavaScript path `write` takes what the device can take, the rest is
 * offered again on 'writable'), so the guest blocks in its own write(2).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import {
  GuestInput,
  GuestOutput,
  guestInputSocket,
  guestPipe,
  hostDevices,
  loadDomain,
  open,
  startDataPlane,
  tuneAllocatorForStreaming,
  type Chardev,
  type Domain,
} from '../../src/index.ts';
import { fdLimits } from './procs.ts';
import type { ClientFigures, EchoConfig, FloorConfig, HostConfig, HostMessage, IdleConfig, InputConfig, ResultMessage, StreamConfig } from './protocol.ts';

const CD_NS = 'urn:chardev:1';

function send(msg: HostMessage): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

function domainXml(devices: string): string {
  return `<domain type='kvm' xmlns:cd='${CD_NS}'><name>bench</name><memory>1</memory><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>${devices}</devices></domain>`;
}

function streamDeviceXml(cfg: StreamConfig): string {
  const clients = cfg.maxClients !== undefined ? `<cd:clients max='${Math.min(cfg.maxClients, 64)}'/>` : '';
  const target = `<target port='0'/>`;
  const log = cfg.log === true ? `<log file='${path.join(cfg.dir, 'chardev.log')}'/>` : '';
  const history = cfg.historyBytes !== undefined ? `<cd:history size='${cfg.historyBytes}'/>` : '';
  switch (cfg.backend) {
    case 'tcp':
      return `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/>${log}${target}${clients}${history}</serial>`;
    case 'unix':
      return `<serial type='unix'><source mode='bind' path='${path.join(cfg.dir, 'chardev.sock')}'/>${log}${target}${clients}${history}</serial>`;
    case 'pty':
      return `<serial type='pty'>${target}${clients}</serial>`;
    case 'file':
      return `<serial type='file'><source path='${path.join(cfg.dir, 'chardev.out')}'/>${target}</serial>`;
    case 'log':
      return `<serial type='null'><log file='${path.join(cfg.dir, 'chardev.log')}'/>${target}</serial>`;
  }
}

function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m?.[1] !== undefined ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Minor page faults of this process so far (/proc/self/stat field 10). */
function minorFaults(): number {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
  } catch {
    return 0;
  }
}

/** Every client the device had: final figures of those that left, current ones of the rest. */
function trackClients(device: Chardev): () => ClientFigures[] {
  const left = new Map<number, ClientFigures>();
  device.on('client', (change, info) => {
    if (change === 'detached') left.set(info.id, { role: info.role, bytesSent: info.bytesSent, bytesMissed: info.bytesMissed });
  });
  return () => {
    const all = new Map(left);
    for (const ci of device.hub.clients()) all.set(ci.id, { role: ci.role, bytesSent: ci.bytesSent, bytesMissed: ci.bytesMissed });
    return [...all.entries()].sort((a, b) => a[0] - b[0]).map(([, f]) => f);
  };
}

/** The final figures of a device's run (ResultMessage). */
function resultMessage(device: Chardev, clients: () => ClientFigures[], cpu0: NodeJS.CpuUsage, faults0: number): ResultMessage {
  const cpu = process.cpuUsage(cpu0);
  const c = device.counters;
  return {
    event: 'result',
    bytesFromGuest: c.bytesFromGuest,
    dropped: c.dropped,
    clients: clients(),
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    rssBytes: process.memoryUsage().rss,
    peakRssBytes: peakRss(),
    minorFaults: minorFaults() - faults0,
  };
}

/** Cleanup that must run however the process ends. */
let domain: Domain | undefined;
let guest: ChildProcess | undefined;
let finishing = false;

async function finish(code: number): Promise<never> {
  if (!finishing) {
    finishing = true;
    guest?.kill('SIGKILL');
    try {
      await domain?.stop();
    } catch {
      // Exiting anyway; the driver removes the scratch directory.
    }
  }
  process.exit(code);
}

function onStop(handler: () => void): void {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === 'stop') handler();
  });
  // The driver went away: do not outlive it.
  rl.on('close', () => void finish(0));
}

/**
 * The guest, its stdout a pipe (`stdout: 'pipe'`, Node's, for the bare-Node floor) or an
 * fd of ours (`guestPipe`'s write end, as `chardev run` gives it; closed here once the
 * child has its copy).
 */
function spawnGuest(argv: readonly string[], stdout: 'pipe' | number = 'pipe', stdin: 'pipe' | number = 'pipe'): ChildProcess {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('no guest command');
  const child = spawn(cmd, args, { stdio: [stdin, stdout, 'inherit'] });
  if (typeof stdout === 'number') fs.closeSync(stdout);
  if (typeof stdin === 'number') fs.closeSync(stdin);
  child.on('error', (e) => {
    send({ event: 'error', message: `guest ${cmd}: ${e.message}` });
    void finish(1);
  });
  return child;
}

function whenClients(device: Chardev, count: number): Promise<void> {
  if (device.hub.size >= count) return Promise.resolve();
  return new Promise((resolve) => {
    const check = (): void => {
      if (device.hub.size >= count) {
        device.off('client', check);
        resolve();
      }
    };
    device.on('client', check);
  });
}

async function runStream(cfg: StreamConfig): Promise<void> {
  const loaded = loadDomain(domainXml(streamDeviceXml(cfg)));
  if (cfg.maxClients !== undefined && cfg.maxClients > 64) {
    // The XML caps <cd:clients max> at 64 (src/config/extensions.ts MAX_CLIENTS); the spec's
    // fan-out figure needs 100 viewers plus a stalled one, so the loaded model is raised.
    for (const { dev } of hostDevices(loaded.def)) {
      if (dev.ext.clients !== undefined) dev.ext.clients.max = cfg.maxClients;
    }
  }
  domain = await open(loaded, { ptyPollMs: 10 });
  const device = domain.device('serial0');
  const clients = trackClients(device);
  // A 'data' listener turns on client input; the guest here only writes.
  device.on('data', () => {});
  device.on('error', (e) => process.stderr.write(`bench host: ${e.message}\n`));

  // The guest starts now and blocks on its full stdout pipe until released, as socat's
  // EXEC child does until socat has its second address. Its stdout is a pipe of ours that
  // the device reads itself, as `chardev run` does (GuestOutput: splice while the device's
  // only client is a plain socket, the JavaScript path otherwise).
  // chardev's data-plane thread loads before any clock starts, as socat's process image does.
  await startDataPlane();
  const spawnedAt = process.hrtime.bigint();
  const pipe = guestPipe();
  guest = spawnGuest(cfg.guest, pipe.writeFd);

  const port = device.boundService !== undefined ? Number(device.boundService) : undefined;
  const where = cfg.backend === 'pty' ? device.ptyPath : cfg.backend === 'unix' ? path.join(cfg.dir, 'chardev.sock') : undefined;
  send({ event: 'ready', ...(port !== undefined ? { port } : {}), ...(where !== undefined ? { path: where } : {}) });

  await whenClients(device, cfg.clients);

  let done = false;
  const cpu0 = process.cpuUsage();
  const faults0 = minorFaults();
  // With no client to wait for (file, log) the clock includes the guest's start, as the
  // peer's does (`sh -c 'GUEST | cat > FILE'` timed from spawn to exit).
  const t0 = cfg.clients === 0 ? spawnedAt : process.hrtime.bigint();
  // And its exit, when asked: the peer's clock ends after its guest's exit.
  let guestGone = cfg.untilGuestExits !== true;
  // 'written' once every byte the guest wrote is in the device (none left in a pump).
  const checkDone = (): void => {
    if (done || !guestGone || device.counters.bytesFromGuest < cfg.bytes) return;
    done = true;
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const s = output.stats;
    send({ event: 'written', seconds, bytes: device.counters.bytesFromGuest, pauses: s.waits, spliced: s.spliced, pathSwitches: s.switches });
  };
  const output = new GuestOutput(pipe.readFd, [device], { onMoved: checkDone });
  if (!guestGone) {
    guest.once('exit', () => {
      guestGone = true;
      checkDone();
    });
  }
  // After the output's own listener (registered first): the pump has flushed by then.
  device.on('writable', checkDone);
  onStop(() => {
    send(resultMessage(device, clients, cpu0, faults0));
    void finish(0);
  });
}

async function runEcho(cfg: EchoConfig): Promise<void> {
  domain = await open(domainXml(`<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/><target port='0'/></serial>`));
  const device = domain.device('serial0');
  const pipe = guestPipe();
  const stdinPipe = guestInputSocket();
  guest = spawnGuest(cfg.guest, pipe.writeFd, stdinPipe.readFd);
  // `chardev run`'s wiring: client input to the guest's stdin (a socketpair, GuestInput),
  // its stdout read by the device. Measured (2026-12, the same GuestInput, runs alternated):
  // with a pipe as stdin p99 was 1.5–2.0× socat's, with the socketpair 1.2×.
  const clients = trackClients(device);
  new GuestInput(stdinPipe.writeFd, [device]);
  device.pipeFrom(pipe.readFd);
  send({ event: 'ready', port: Number(device.boundService) });
  const cpu0 = process.cpuUsage();
  const faults0 = minorFaults();
  onStop(() => {
    send(resultMessage(device, clients, cpu0, faults0));
    void finish(0);
  });
}

async function runFloor(cfg: FloorConfig): Promise<void> {
  const spawnedAt = process.hrtime.bigint();
  const child = spawnGuest(cfg.guest);
  guest = child;
  const out = child.stdout;
  if (out === null) throw new Error('guest has no stdout');
  out.pause();
  let written = 0;
  // As runStream's: with `untilGuestExits`, 'written' waits for the guest's exit too.
  let guestGone = cfg.untilGuestExits !== true;
  let sent = false;
  const done = (): void => {
    if (sent || !guestGone || written < cfg.bytes) return;
    sent = true;
    send({ event: 'written', seconds: Number(process.hrtime.bigint() - spawnedAt) / 1e9, bytes: written, pauses: 0 });
  };
  if (!guestGone) {
    child.once('exit', () => {
      guestGone = true;
      done();
    });
  }
  if (cfg.backend === 'echo') {
    // The latency floor: client input to the guest's stdin, its stdout back, Node's pipes only.
    const stdin = child.stdin;
    if (stdin === null) throw new Error('guest has no stdin');
    const server = net.createServer((sock) => {
      server.close();
      sock.setNoDelay(true);
      sock.on('error', () => {});
      sock.pipe(stdin);
      out.pipe(sock);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    send({ event: 'ready', ...(typeof address === 'object' && address !== null ? { port: address.port } : {}) });
  } else if (cfg.backend === 'file') {
    const fd = fs.openSync(path.join(cfg.dir, 'floor.out'), 'w', 0o600);
    send({ event: 'ready' });
    out.on('data', (b: Buffer) => {
      if (written >= cfg.bytes) return;
      let off = 0;
      while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
      written += b.length;
      if (written >= cfg.bytes) {
        done();
        fs.closeSync(fd);
      }
    });
    out.resume();
  } else {
    const server = net.createServer((sock) => {
      server.close();
      sock.on('error', () => {});
      out.pipe(sock);
    });
    const sockPath = path.join(cfg.dir, 'floor.sock');
    await new Promise<void>((resolve) => (cfg.backend === 'tcp' ? server.listen(0, '127.0.0.1', resolve) : server.listen(sockPath, resolve)));
    const address = server.address();
    send({ event: 'ready', ...(typeof address === 'object' && address !== null ? { port: address.port } : { path: sockPath }) });
  }
  onStop(() => {
    send({
      event: 'result',
      bytesFromGuest: written,
      dropped: 0,
      clients: [],
      cpuUserUs: 0,
      cpuSystemUs: 0,
      rssBytes: process.memoryUsage().rss,
      peakRssBytes: peakRss(),
      minorFaults: 0,
    });
    void finish(0);
  });
}

/**
 * Client → guest. chardev's side is `chardev run`'s own code (src/cli/commands/run-action.ts):
 * the guest's stdin is a socketpair (`guestInputSocket`) and the device's input reaches it
 * through `GuestInput` — spliced from the writer's socket through a pipe into it on the
 * data-plane thread while it is the only client, else written from 'data' with the device
 * not reading its clients while the socketpair is full. The floor keeps Node's own pipe and `socket.pipe(stdin)`.
 */
async function runInput(cfg: InputConfig): Promise<void> {
  const sockPath = path.join(cfg.dir, 'chardev.sock');
  if (cfg.floor === true) {
    const child = spawnGuest(cfg.guest);
    guest = child;
    const stdin = child.stdin;
    if (stdin === null) throw new Error('guest has no stdin');
    stdin.on('error', () => {});
    const server = net.createServer((sock) => {
      server.close();
      sock.on('error', () => {});
      sock.pipe(stdin);
    });
    await new Promise<void>((resolve) => (cfg.backend === 'tcp' ? server.listen(0, '127.0.0.1', resolve) : server.listen(sockPath, resolve)));
    const address = server.address();
    send({ event: 'ready', ...(typeof address === 'object' && address !== null ? { port: address.port } : { path: sockPath }) });
    const cpu0 = process.cpuUsage();
    onStop(() => {
      const cpu = process.cpuUsage(cpu0);
      send({
        event: 'result',
        bytesFromGuest: 0,
        dropped: 0,
        clients: [],
        cpuUserUs: cpu.user,
        cpuSystemUs: cpu.system,
        rssBytes: process.memoryUsage().rss,
        peakRssBytes: peakRss(),
        minorFaults: 0,
      });
      void finish(0);
    });
    return;
  }
  const device =
    cfg.backend === 'tcp'
      ? `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/><target port='0'/></serial>`
      : `<serial type='unix'><source mode='bind' path='${sockPath}'/><target port='0'/></serial>`;
  domain = await open(domainXml(device));
  const dev = domain.device('serial0');
  const clients = trackClients(dev);
  // The thread's start-up is not the relay's work (as for the output rows).
  await startDataPlane();
  const stdinPipe = guestInputSocket();
  guest = spawnGuest(cfg.guest, 'pipe', stdinPipe.readFd);
  const input = new GuestInput(stdinPipe.writeFd, [dev]);
  send({ event: 'ready', ...(cfg.backend === 'tcp' ? { port: Number(dev.boundService) } : { path: sockPath }) });
  const cpu0 = process.cpuUsage();
  const faults0 = minorFaults();
  onStop(() => {
    input.close();
    send({ ...resultMessage(dev, clients, cpu0, faults0), bytesToGuest: dev.counters.bytesToGuest, splicedToGuest: input.stats.spliced });
    void finish(0);
  });
}

/** CPU time (ns) of every thread of this process, by thread id. */
function threadTimes(): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const tid of fs.readdirSync('/proc/self/task')) {
      try {
        out.set(Number(tid), Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]));
      } catch {
        // The thread ended.
      }
    }
  } catch {
    // No /proc: the split is left at zero.
  }
  return out;
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g === undefined) throw new Error('the idle measurement needs node --expose-gc');
  g();
  g();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The idle row's quiet test: a window of this length … */
const QUIET_WINDOW_MS = 2000;
/** … this many in a row … */
const QUIET_WINDOWS = 5;
/** … waited for at most this long after the fixed settle. */
const SETTLE_MORE_MAX_MS = 60_000;

async function runIdle(cfg: IdleConfig): Promise<void> {
  let devices = '';
  for (let i = 0; i < cfg.devices; i++) {
    devices += `<serial type='unix'><source mode='bind' path='${path.join(cfg.dir, `d${i}`)}'/><target port='${i}'/></serial>`;
  }
  const xml = domainXml(devices);
  await sleep(100);
  gc();
  const before = process.memoryUsage();
  const t0 = performance.now();
  domain = await open(xml);
  const startMs = performance.now() - t0;
  await sleep(1000);
  gc();
  await sleep(200);
  const after = process.memoryUsage();
  let listening = 0;
  for (let i = 0; i < cfg.devices; i++) {
    try {
      if (fs.statSync(path.join(cfg.dir, `d${i}`)).isSocket()) listening++;
    } catch {
      // Counted as not listening.
    }
  }
  // Let the start-up's garbage settle (V8 schedules GC work for a while after a burst of
  // allocation); what is measured then is what a long-idle process costs.
  await sleep(cfg.settleMs);
  // Then until the process is quiet: when V8's memory reducer runs its collections after the
  // start-up shifts by seconds with the heap's shape (one burst of ~0.5 s of CPU at 10-25 s
  // with 10,000 devices, on old and new code alike), a fixed settle measured that one burst
  // in some runs and not in others. The reducer waits ~8 s between its collections, so quiet
  // means QUIET_WINDOWS windows of 2 s in a row, each under 1 % of a core.
  let settledMs = cfg.settleMs;
  let quiet = 0;
  for (let waited = 0; waited < SETTLE_MORE_MAX_MS && quiet < QUIET_WINDOWS; waited += QUIET_WINDOW_MS) {
    const w0 = process.cpuUsage();
    await sleep(QUIET_WINDOW_MS);
    settledMs += QUIET_WINDOW_MS;
    const w = process.cpuUsage(w0);
    quiet = (w.user + w.system) / 1000 < QUIET_WINDOW_MS * 0.01 ? quiet + 1 : 0;
  }
  const threads0 = threadTimes();
  const cpu0 = process.cpuUsage();
  const t1 = performance.now();
  await sleep(cfg.idleMs);
  const cpu = process.cpuUsage(cpu0);
  const idleMs = performance.now() - t1;
  const threads1 = threadTimes();
  let mainNs = 0;
  let otherNs = 0;
  for (const [tid, ns] of threads1) {
    const d = ns - (threads0.get(tid) ?? 0);
    if (tid === process.pid) mainNs += d;
    else otherNs += d;
  }
  const limits = fdLimits();
  send({
    event: 'idle',
    devices: domain.devices.size,
    listening,
    startMs,
    rssBeforeBytes: before.rss,
    rssAfterBytes: after.rss,
    heapDeltaBytes: after.heapUsed - before.heapUsed,
    externalDeltaBytes: after.external - before.external,
    idleCpuUs: cpu.user + cpu.system,
    mainThreadMs: mainNs / 1e6,
    otherThreadsMs: otherNs / 1e6,
    idleMs,
    settledMs,
    fdSoft: limits.soft,
    fdHard: limits.hard,
    fdsOpen: fs.readdirSync('/proc/self/fd').length,
  });
  onStop(() => void finish(0));
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (arg === undefined) throw new Error('usage: host.ts CONFIG_JSON');
  const cfg = JSON.parse(arg) as HostConfig;
  // What `chardev run` does at start; the bare-Node floor gets it too, so the floor stays
  // the limit for a Node process set up the same way.
  tuneAllocatorForStreaming();
  process.on('SIGTERM', () => void finish(0));
  if (cfg.kind === 'stream') await runStream(cfg);
  else if (cfg.kind === 'echo') await runEcho(cfg);
  else if (cfg.kind === 'floor') await runFloor(cfg);
  else if (cfg.kind === 'input') await runInput(cfg);
  else await runIdle(cfg);
}

main().catch((e: unknown) => {
  send({ event: 'error', message: e instanceof Error ? e.message : String(e) });
  void finish(1);
});
