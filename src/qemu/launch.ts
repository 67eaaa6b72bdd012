/**
 * A real QEMU as the guest of a running domain (`chardev qemu FILE -- qemu-system-… ARGS…`).
 *
 * chardev listens on one owner-only UNIX socket per guest port in a private directory and
 * QEMU connects to each as a client (`-chardev socket,id=charserial0,path=…`), with the
 * frontend the XML's target describes (`-device isa-serial,…`, `-serial chardev:…`,
 * `virtconsole`, …) or the HMP monitor (`-mon chardev=…,mode=readline`). Bytes from QEMU are
 * guest output of the port's devices (`Chardev.write`); their input goes back to QEMU. QEMU
 * is controlled through a private QMP socket of the same kind (clean `quit`, and a device's
 * BREAK — telnet `IAC BREAK`, the browser, `chardev console`, QMP — as QEMU's own
 * `chardev-send-break` on the port's chardev, which raises it at the guest's frontend).
 *
 * Why QEMU connects and chardev listens: chardev is up before QEMU starts, so QEMU never waits
 * for a peer or races a socket file into existence, and a QEMU that cannot reach its devices
 * fails at once with its own error.
 *
 * A port may carry several domain devices (`hubs`, like QEMU 10's `hub` chardev): the first
 * one's target is the guest frontend; the guest's output goes to every one of them, input
 * from any reaches the guest. That is how one serial console is a telnet server, a pty and a
 * UNIX socket at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { LoadedDomain } from '../config/domain.ts';
import { chardevId, hostDevices, type NamedDevice } from '../config/names.ts';
import type { Chardev } from '../core/chardev.ts';
import { OutputPump } from '../core/output-pump.ts';
import type { Domain } from '../core/domain.ts';
import { exitStatus } from '../core/exit-status.ts';
import { listenUnixOwnerOnly } from '../core/unix-listen.ts';
import { QmpClient } from '../control/qmp-client.ts';
import { ChardevError } from '../errors.ts';
import { frontendArgs, shellQuote, type ArgSyntax } from './command.ts';

/** One guest port: a socket chardev in QEMU, one or more devices in the domain. */
export interface QemuPort {
  /** The domain devices of this port; the first one's target is the guest frontend. */
  readonly devices: readonly NamedDevice[];
  /** `frontend`: the target's `-device`/`-serial`; `monitor`: QEMU's HMP monitor instead. */
  readonly role: 'frontend' | 'monitor';
  /** QEMU's chardev id: `char` + the first device's alias. */
  readonly id: string;
}

export interface QemuPortOptions {
  /** Devices (alias or chardev id) that carry QEMU's HMP monitor instead of a guest frontend. */
  readonly monitors?: readonly string[];
  /** Groups of devices (alias or chardev id) that are one guest port: the first one's frontend. */
  readonly hubs?: ReadonlyArray<readonly string[]>;
}

function usage(message: string): ChardevError {
  return new ChardevError('ERR_USAGE', message);
}

/**
 * The domain's guest ports: every device with a host interface of its own (a console that is
 * serial 0 seen again is that same device), hubs folded into their first device.
 */
export function planQemuPorts(loaded: Pick<LoadedDomain, 'def'>, options: QemuPortOptions = {}): QemuPort[] {
  const devices = hostDevices(loaded.def);
  const find = (name: string, what: string): NamedDevice => {
    const alias = name.startsWith('char') && name.length > 4 ? name.slice(4) : name;
    const nd = devices.find((d) => d.alias === alias || d.alias === name);
    if (nd === undefined) {
      throw usage(`qemu: ${what}: no device '${name}' in domain ${loaded.def.name ?? 'domain'} (has: ${devices.map((d) => d.alias).join(', ') || 'none'})`);
    }
    return nd;
  };
  /** Device alias → the alias of the first device of its hub. */
  const hubOf = new Map<string, string>();
  const members = new Map<string, NamedDevice[]>();
  for (const hub of options.hubs ?? []) {
    const list = hub.map((n) => find(n, `--hub ${hub.join(',')}`));
    if (list.length < 2) throw usage(`qemu: --hub ${hub.join(',')}: a hub joins at least two devices`);
    const first = list[0] as NamedDevice;
    for (const nd of list) {
      if (hubOf.has(nd.alias)) throw usage(`qemu: --hub ${hub.join(',')}: ${nd.alias} is already in a hub`);
      hubOf.set(nd.alias, first.alias);
    }
    members.set(first.alias, list);
  }
  const monitors = new Set<string>();
  for (const m of options.monitors ?? []) {
    const nd = find(m, `--monitor ${m}`);
    monitors.add(hubOf.get(nd.alias) ?? nd.alias);
  }
  const ports: QemuPort[] = [];
  for (const nd of devices) {
    const head = hubOf.get(nd.alias);
    if (head !== undefined && head !== nd.alias) continue;
    ports.push({
      devices: members.get(nd.alias) ?? [nd],
      role: monitors.has(nd.alias) ? 'monitor' : 'frontend',
      id: chardevId(nd.alias),
    });
  }
  return ports;
}

/** QEMU's chardev and monitor id for chardev's own control connection (libvirt's name for it). */
export const QMP_CHARDEV_ID = 'charmonitor';

export interface QemuArgsPaths {
  /** The socket chardev listens on for port `index` of the plan. */
  readonly portSocket: (index: number) => string;
  /** The socket chardev listens on for QEMU's QMP monitor. */
  readonly qmpSocket: string;
}

function escapeComma(v: string): string {
  return v.replace(/,/g, ',,');
}

/**
 * What chardev adds to the user's QEMU command line: `-nodefaults` (no default serial,
 * parallel, monitor or display devices that would compete with the domain's, as libvirt
 * does), the QMP control socket, the virtio-serial controllers virtio consoles and channels
 * need (unless the command line has one with that id), and per port a `-chardev socket` and
 * its frontend or `-mon`.
 */
export function qemuDeviceArgs(ports: readonly QemuPort[], paths: QemuArgsPaths, userArgs: readonly string[] = [], syntax: ArgSyntax = 'json'): string[] {
  const out: string[] = [];
  if (!userArgs.includes('-nodefaults')) out.push('-nodefaults');
  out.push('-chardev', `socket,id=${QMP_CHARDEV_ID},path=${escapeComma(paths.qmpSocket)}`, '-mon', `chardev=${QMP_CHARDEV_ID},id=monitor,mode=control`);
  const controllers = new Set<number>();
  for (const port of ports) {
    const dev = port.devices[0]?.dev;
    if (port.role !== 'frontend' || dev === undefined) continue;
    if ((dev.kind === 'console' || dev.kind === 'channel') && dev.target.type === 'virtio') {
      const c = dev.info.address?.type === 'virtio-serial' ? Number(dev.info.address.attrs.find(([k]) => k === 'controller')?.[1] ?? 0) : 0;
      controllers.add(c);
    }
  }
  for (const c of [...controllers].sort((a, b) => a - b)) {
    const id = `virtio-serial${c}`;
    if (userArgs.some((a) => new RegExp(`(^|[,{"\\s])id"?[=:]\\s*"?${id}("|,|$)`).test(a))) continue;
    out.push('-device', syntax === 'json' ? JSON.stringify({ driver: 'virtio-serial-pci', id }) : `virtio-serial-pci,id=${id}`);
  }
  ports.forEach((port, i) => {
    out.push('-chardev', `socket,id=${port.id},path=${escapeComma(paths.portSocket(i))}`);
    if (port.role === 'monitor') {
      out.push('-mon', `chardev=${port.id},mode=readline`);
    } else {
      const first = port.devices[0];
      if (first !== undefined) for (const [opt, val] of frontendArgs(first, syntax)) out.push(opt, val);
    }
  });
  return out;
}

/** One line per port for humans: which devices carry which guest port. */
export function describePorts(ports: readonly QemuPort[]): string[] {
  return ports.map((port) => {
    const ids = port.devices.map((d) => chardevId(d.alias)).join(', ');
    if (port.role === 'monitor') return `${ids}: QEMU monitor (HMP)`;
    const first = port.devices[0];
    const fe = first === undefined ? [] : frontendArgs(first, 'keyval');
    const what = fe.length === 0 ? 'no guest frontend' : fe.map(([o, v]) => `${o} ${v.split(',')[0]}`).join(' ');
    return `${ids}: guest ${first?.alias ?? port.id} (${what})`;
  });
}

/** How QEMU ended. */
export interface QemuExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** As a shell reports it: the code, or 128 + the signal number. */
  readonly status: number;
  /** QEMU's last words on stderr (the last non-empty line), for error messages. */
  readonly lastError: string;
  /** True when chardev asked it to stop (stop()). */
  readonly stopRequested: boolean;
}

export interface QemuLaunchOptions {
  /** The QEMU binary and the user's arguments (machine, memory, kernel, disks, display, …). */
  readonly argv: readonly string[];
  readonly ports: readonly QemuPort[];
  /** A directory of ours (0700) in which the private socket directory is made. */
  readonly runDir: string;
  /** QEMU's stdout and stderr, and chardev's start/stop lines about it (default: the domain log). */
  readonly log?: (chunk: Buffer) => void;
  readonly syntax?: ArgSyntax;
  /** Extra environment for QEMU. */
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * One guest port's connection from QEMU, bridged to its devices. Guest output flows as in
 * QEMU itself: while a device cannot take more (its client reads slowly, a pipe's reader
 * lags) QEMU's socket is not read, so QEMU's chardev sees a full socket and its frontend
 * waits (the 16550 holds its transmitter, virtio-serial throttles the port) until the
 * device says it is writable again. Device input is read only while QEMU's socket takes
 * it (the device's 'data' listener comes and goes with the socket's drain).
 */
class PortBridge {
  readonly #devices: readonly Chardev[];
  #sock: net.Socket | undefined;
  #listening = false;
  #connected!: () => void;
  readonly connected = new Promise<void>((resolve) => (this.#connected = resolve));
  #closed: () => void = () => {};
  /** Resolves when QEMU's connection is gone (at once if it never came). */
  closed: Promise<void> = Promise.resolve();

  /** QEMU's `chardev-send-break` on this port's chardev; resolves when QEMU has answered. */
  readonly #sendBreak: () => Promise<void>;
  /**
   * Input and BREAKs waiting behind a BREAK QEMU has not answered yet, in order: a BREAK goes
   * by another socket (QMP), so what follows it must wait for it to be done.
   */
  readonly #queue: Array<Buffer | 'break'> = [];
  #draining = false;

  constructor(devices: readonly Chardev[], sendBreak: () => Promise<void>) {
    this.#devices = devices;
    this.#sendBreak = sendBreak;
    for (const d of devices) d.on('break', this.#onBreak);
  }

  /**
   * A BREAK from a device's writer: QEMU raises it at the port's frontend (a 16550's line
   * status) once the input written before it has been handed to QEMU's socket.
   */
  readonly #onBreak = (): void => {
    if (this.#sock === undefined) return;
    this.#queue.push('break');
    void this.#drainQueue();
  };

  async #drainQueue(): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let item = this.#queue.shift(); item !== undefined; item = this.#queue.shift()) {
        const sock = this.#sock;
        if (sock === undefined) {
          this.#queue.length = 0;
          break;
        }
        if (item !== 'break') {
          this.#write(sock, item);
          continue;
        }
        if (sock.writableLength > 0) {
          await new Promise<void>((resolve) => {
            sock.once('drain', resolve);
            sock.once('close', resolve);
          });
        }
        try {
          await this.#sendBreak();
        } catch {
          // QEMU gone or not answering: the BREAK is lost, as on a line nobody listens to.
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  get isConnected(): boolean {
    return this.#sock !== undefined;
  }

  /** QEMU connected. A second connection on the same socket is not QEMU's: refused. */
  accept(sock: net.Socket): void {
    if (this.#sock !== undefined) {
      sock.destroy();
      return;
    }
    this.#sock = sock;
    this.closed = new Promise<void>((resolve) => (this.#closed = resolve));
    const pump = new OutputPump(this.#devices, { pause: () => sock.pause(), resume: () => sock.resume() });
    // A chunk fresh from QEMU's socket, never reused: the devices may keep it.
    sock.on('data', (b: Buffer) => pump.push(b));
    sock.on('drain', () => this.#listen(true));
    sock.on('error', () => {});
    sock.on('close', () => {
      this.#listen(false);
      // What QEMU wrote and no device took yet goes with the connection, as in QEMU.
      pump.close();
      this.#sock = undefined;
      this.#closed();
    });
    this.#listen(true);
    this.#connected();
  }

  readonly #toGuest = (b: Buffer): void => {
    const sock = this.#sock;
    if (sock === undefined) return;
    if (this.#draining || this.#queue.length > 0) this.#queue.push(b);
    else this.#write(sock, b);
  };

  #write(sock: net.Socket, b: Buffer): void {
    if (!sock.write(b)) this.#listen(false);
  }

  #listen(on: boolean): void {
    if (on === this.#listening || (on && this.#sock === undefined)) return;
    this.#listening = on;
    for (const d of this.#devices) {
      if (on) d.on('data', this.#toGuest);
      else d.off('data', this.#toGuest);
    }
  }

  close(): void {
    for (const d of this.#devices) d.off('break', this.#onBreak);
    this.#sock?.destroy();
  }
}


/** UNIX socket paths must fit sockaddr_un (108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

function privateDir(runDir: string, name: string): string {
  const prefix = `${name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 32)}.qemu-`;
  // mkdtemp creates it 0700: nobody else may connect in QEMU's place.
  const dir = fs.mkdtempSync(path.join(runDir, prefix));
  if (path.join(dir, 'qmp').length <= MAX_SOCKET_PATH) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  return fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-qemu-'));
}

/** `cmd` as execvp would find it, or undefined. */
function findExecutable(cmd: string): string | undefined {
  const candidates = cmd.includes('/') ? [cmd] : (process.env['PATH'] ?? '').split(':').filter((d) => d !== '').map((d) => path.join(d, cmd));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch {
      // next
    }
  }
  return undefined;
}

/**
 * util-linux's setpriv (essential in Debian) sets QEMU's parent-death signal before exec:
 * if chardev is killed outright (SIGKILL, a crash), QEMU gets SIGTERM and shuts down
 * instead of running on with nobody serving its devices.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

function timestamp(): string {
  return new Date().toISOString().replace('T', ' ').replace('Z', '+0000');
}

/** A running QEMU whose character devices are the domain's. */
export class QemuProcess {
  /** The whole command line QEMU was started with. */
  readonly argv: readonly string[];
  readonly pid: number;
  /** Resolves when QEMU has exited and the guest's last output has reached the devices. */
  readonly exited: Promise<QemuExit>;
  /** Resolves once QEMU has connected every port and answers QMP; rejects if it exits first. */
  readonly ready: Promise<void>;
  readonly #child: ChildProcess;
  readonly #bridges: readonly PortBridge[];
  readonly #servers: readonly net.Server[];
  readonly #dir: string;
  #qmp: QmpClient | undefined;
  #stopRequested = false;
  #stopping: Promise<QemuExit> | undefined;
  #done = false;

  /** @internal Use launchQemu(). */
  constructor(init: { argv: string[]; child: ChildProcess; bridges: PortBridge[]; servers: net.Server[]; dir: string; qmp: Promise<net.Socket>; log: (b: Buffer) => void }) {
    this.argv = init.argv;
    this.#child = init.child;
    this.pid = init.child.pid ?? -1;
    this.#bridges = init.bridges;
    this.#servers = init.servers;
    this.#dir = init.dir;
    const { child, log, bridges } = init;
    let stderrTail = '';
    child.stdout?.on('data', (b: Buffer) => log(b));
    child.stderr?.on('data', (b: Buffer) => {
      log(b);
      stderrTail = (stderrTail + b.toString('utf8')).slice(-4096);
    });
    // Ours stops QEMU when chardev itself goes away without stopping it (an uncaught error).
    const onExit = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    };
    process.on('exit', onExit);
    const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
    this.exited = closed.then(async ({ code, signal }) => {
      process.off('exit', onExit);
      // The guest's last output is in the sockets QEMU just closed: let it arrive.
      await Promise.race([Promise.all(bridges.map((b) => b.closed)), new Promise((r) => setTimeout(r, 1000).unref())]);
      this.#release();
      const status = exitStatus(code, signal);
      const lastError = stderrTail.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '').pop() ?? '';
      log(Buffer.from(`${timestamp()}: qemu exited (${signal !== null ? `signal ${signal}` : `status ${code}`})${this.#stopRequested ? ', as chardev asked' : ''}\n`));
      return { code, signal, status, lastError, stopRequested: this.#stopRequested };
    });
    const exitedEarly = this.exited.then((exit) => {
      throw new ChardevError('ERR_GUEST', qemuExitMessage(this.argv[0] ?? 'qemu', exit));
    });
    this.ready = Promise.race([
      (async () => {
        const sock = await init.qmp;
        this.#qmp = await QmpClient.over(sock, 30000);
        await Promise.all(bridges.map((b) => b.connected));
      })(),
      exitedEarly,
    ]);
    // Whoever does not wait for ready must not see an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** QEMU raises a BREAK at the frontend of its chardev `id` (QMP `chardev-send-break`). */
  async sendBreak(id: string): Promise<void> {
    if (this.#qmp === undefined) throw new ChardevError('ERR_GUEST', 'qemu: not connected to QEMU yet');
    await this.#qmp.execute('chardev-send-break', { id }, 5000);
  }

  /** True while QEMU's connection for port `index` is up. */
  portConnected(index: number): boolean {
    return this.#bridges[index]?.isConnected === true;
  }

  /**
   * Stop QEMU cleanly: QMP `quit` (QEMU's orderly shutdown), else SIGTERM; SIGKILL after
   * `timeoutMs` more. Idempotent; resolves with how QEMU ended.
   */
  stop(timeoutMs = 5000): Promise<QemuExit> {
    this.#stopping ??= (async () => {
      if (this.#done) return this.exited;
      this.#stopRequested = true;
      const child = this.#child;
      const gone = (): boolean => child.exitCode !== null || child.signalCode !== null;
      const within = (ms: number): Promise<boolean> =>
        Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
      let quit = false;
      if (this.#qmp !== undefined) {
        try {
          await this.#qmp.execute('quit', undefined, 2000);
          quit = true;
        } catch {
          // not answering: signals below
        }
      }
      if (!quit && !gone()) child.kill('SIGTERM');
      if (!(await within(timeoutMs)) && !gone()) {
        child.kill('SIGKILL');
      }
      return this.exited;
    })();
    return this.#stopping;
  }

  #release(): void {
    if (this.#done) return;
    this.#done = true;
    for (const b of this.#bridges) b.close();
    for (const s of this.#servers) s.close();
    void this.#qmp?.close().catch(() => {});
    fs.rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** One line for a QEMU that failed: its own message included. */
export function qemuExitMessage(binary: string, exit: QemuExit): string {
  const how = exit.signal !== null ? `was killed by ${exit.signal}` : `exited with status ${exit.code}`;
  return `${path.basename(binary)} ${how}${exit.lastError !== '' ? `: ${exit.lastError}` : ''}`;
}

/**
 * Start QEMU as the guest of `domain`'s devices. Resolves once QEMU is spawned (see
 * `ready` for "every device connected"); rejects with ERR_GUEST when it cannot be started.
 */
export async function launchQemu(domain: Domain, options: QemuLaunchOptions): Promise<QemuProcess> {
  const [binary, ...userArgs] = options.argv;
  if (binary === undefined) throw usage('qemu: no QEMU command given (chardev qemu FILE -- qemu-system-x86_64 ARGS…)');
  const log = options.log ?? ((b: Buffer) => {
    try {
      domain.domainLog().write(b);
    } catch {
      // A failing log must not stop the guest; the stdio devices report it.
    }
  });
  const dir = privateDir(options.runDir, domain.name);
  const servers: net.Server[] = [];
  const bridges: PortBridge[] = [];
  let child: ChildProcess | undefined;
  let started: QemuProcess | undefined;
  try {
    const socketPath = (i: number): string => path.join(dir, `p${i}`);
    const qmpPath = path.join(dir, 'qmp');
    for (const [i, port] of options.ports.entries()) {
      const bridge = new PortBridge(
        port.devices.map((nd) => domain.device(nd.alias)),
        () => started?.sendBreak(port.id) ?? Promise.resolve(),
      );
      const server = net.createServer((sock) => bridge.accept(sock));
      servers.push(server);
      await listenUnixOwnerOnly(port.id, server, socketPath(i), 1);
      bridges.push(bridge);
    }
    let qmpAccepted!: (s: net.Socket) => void;
    const qmp = new Promise<net.Socket>((resolve) => (qmpAccepted = resolve));
    let qmpTaken = false;
    const qmpServer = net.createServer((sock) => {
      if (qmpTaken) sock.destroy();
      else {
        qmpTaken = true;
        qmpAccepted(sock);
      }
    });
    servers.push(qmpServer);
    await listenUnixOwnerOnly(QMP_CHARDEV_ID, qmpServer, qmpPath, 1);

    const argv = [binary, ...userArgs, ...qemuDeviceArgs(options.ports, { portSocket: socketPath, qmpSocket: qmpPath }, userArgs, options.syntax)];
    if (findExecutable(binary) === undefined) throw new ChardevError('ERR_GUEST', `qemu: cannot start ${binary}: No such file or directory (is QEMU installed?)`);
    log(Buffer.from(`${timestamp()}: starting up chardev, domain ${domain.name}, qemu command line:\n${argv.map(shellQuote).join(' ')}\n`));
    const [cmd, ...args] = SETPRIV !== undefined ? [SETPRIV, '--pdeathsig', 'TERM', '--', ...argv] : argv;
    // Its own process group: a ^C at the terminal reaches chardev, which stops QEMU in order.
    child = spawn(cmd as string, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...options.env } });
    const c = child;
    await new Promise<void>((resolve, reject) => {
      c.once('spawn', resolve);
      c.once('error', (e: NodeJS.ErrnoException) =>
        reject(new ChardevError('ERR_GUEST', `qemu: cannot start ${binary}: ${e.code === 'ENOENT' ? 'No such file or directory (is QEMU installed?)' : e.message}`, { cause: e })),
      );
    });
    started = new QemuProcess({ argv, child: c, bridges, servers, dir, qmp, log });
    return started;
  } catch (err) {
    for (const b of bridges) b.close();
    for (const s of servers) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
