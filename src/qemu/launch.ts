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
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Domain } from '../core/domain.ts';
import { exitStatus } from '../core/exit-status.ts';
import { listenUnixOwnerOnly } from '../core/unix-listen.ts';
import { QmpClient } from '../control/qmp-client.ts';
import { ChardevError } from '../errors.ts';
import { PortBridge } from './bridge.ts';
import { shellQuote, type ArgSyntax } from './command.ts';
import { QMP_CHARDEV_ID, qemuDeviceArgs, type QemuArgsPaths, type QemuPort } from './ports.ts';

export { QMP_CHARDEV_ID, describePorts, planQemuPorts, qemuDeviceArgs, type QemuArgsPaths, type QemuPort, type QemuPortOptions } from './ports.ts';

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

/**
 * Who QEMU belongs to:
 * - `attached` (`chardev qemu`): QEMU is this process's child for good: its stdout and stderr
 *   come through pipes, and it dies with chardev (parent-death signal, exit handler).
 * - `detached` (the daemon): QEMU outlives chardev. Its own session, its stdout and stderr
 *   straight into the domain log file, every socket chardev with QEMU's `reconnect`, and a
 *   socket directory that stays while QEMU runs, so the next daemon can take it back
 *   (adoptQemu). What QEMU prints while nobody listens is still in the log.
 */
export type QemuSupervision = 'attached' | 'detached';

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
  /** Default `attached`. */
  readonly supervision?: QemuSupervision;
  /** QEMU's working directory (relative paths in its arguments); default ours. */
  readonly cwd?: string;
}

/** What a detached QEMU leaves behind for the next daemon to take it back (adoptQemu). */
export interface QemuRecord {
  readonly pid: number;
  /** /proc/PID/stat's starttime: a pid reused by another process is not our QEMU. */
  readonly startTime: string;
  /** The private socket directory (the ports' sockets p0…, and qmp). */
  readonly dir: string;
  readonly argv: readonly string[];
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
  const candidates = cmd.includes('/')
    ? [cmd]
    : (process.env['PATH'] ?? '')
        .split(':')
        .filter((d) => d !== '')
        .map((d) => path.join(d, cmd));
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

/** How QEMU ended, as the process handle sees it (both null: not ours to wait for; it is gone). */
interface ProcessEnd {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** The QEMU process: our child, or one an earlier daemon started. */
interface QemuHandle {
  readonly pid: number;
  readonly ended: Promise<ProcessEnd>;
  gone(): boolean;
  kill(signal: NodeJS.Signals): void;
  /** Stop watching (the daemon lets go of QEMU without stopping it). */
  release(): void;
  /** Look now whether it is gone (a hint: its QMP connection closed). */
  check?(): void;
}

function childHandle(child: ChildProcess, event: 'close' | 'exit'): QemuHandle {
  const ended = new Promise<ProcessEnd>((resolve) => child.once(event, (code, signal) => resolve({ code, signal })));
  return {
    pid: child.pid ?? -1,
    ended,
    gone: () => child.exitCode !== null || child.signalCode !== null,
    kill: (signal) => {
      child.kill(signal);
    },
    release: () => child.unref(),
  };
}

/** /proc/PID/stat's starttime (field 22), or undefined when there is no such process or it is a zombie. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19];
}

/**
 * How often a QEMU that is not our child is looked at. Its exit is noticed at once anyway
 * when its QMP connection closes (`check`); this is only the backstop.
 */
const ADOPTED_POLL_MS = 5000;

/** A QEMU that is not our child: no exit status to wait for, so its pid is watched. */
function adoptedHandle(record: QemuRecord): QemuHandle {
  let resolveEnded!: (e: ProcessEnd) => void;
  const ended = new Promise<ProcessEnd>((resolve) => (resolveEnded = resolve));
  let over = false;
  const gone = (): boolean => over || processStartTime(record.pid) !== record.startTime;
  const check = (): void => {
    if (over || !gone()) return;
    over = true;
    clearInterval(timer);
    resolveEnded({ code: null, signal: null });
  };
  const timer = setInterval(check, ADOPTED_POLL_MS);
  timer.unref();
  return {
    pid: record.pid,
    ended,
    gone,
    check,
    kill: (signal) => {
      if (!gone()) process.kill(record.pid, signal);
    },
    release: () => clearInterval(timer),
  };
}

/** A QEMU's lifecycle as this process sees it. */
type QemuState = 'running' | 'stopping' | 'exited' | 'released';

/** A running QEMU whose character devices are the domain's. */
export class QemuProcess {
  /** The whole command line QEMU was started with. */
  readonly argv: readonly string[];
  readonly pid: number;
  /** The private socket directory. */
  readonly dir: string;
  /** Resolves when QEMU has exited and the guest's last output has reached the devices (never after release()). */
  readonly exited: Promise<QemuExit>;
  /** Resolves once QEMU has connected every port and answers QMP; rejects if it exits first. */
  readonly ready: Promise<void>;
  readonly #proc: QemuHandle;
  readonly #bridges: readonly PortBridge[];
  readonly #servers: readonly net.Server[];
  #qmp: QmpClient | undefined;
  #state: QemuState = 'running';
  #stopRequested = false;
  #stopping: Promise<QemuExit> | undefined;

  /** @internal Use launchQemu() or adoptQemu(). */
  constructor(init: {
    argv: readonly string[];
    proc: QemuHandle;
    bridges: PortBridge[];
    servers: net.Server[];
    dir: string;
    qmp: Promise<net.Socket>;
    log: (b: Buffer) => void;
    lastWords: () => string;
    dieWithUs: boolean;
  }) {
    this.argv = init.argv;
    this.#proc = init.proc;
    this.pid = init.proc.pid;
    this.#bridges = init.bridges;
    this.#servers = init.servers;
    this.dir = init.dir;
    const { proc, log, bridges } = init;
    // Ours stops QEMU when chardev itself goes away without stopping it (an uncaught error).
    const onExit = (): void => {
      if (!proc.gone()) proc.kill('SIGTERM');
    };
    if (init.dieWithUs) process.on('exit', onExit);
    this.exited = proc.ended.then(async ({ code, signal }) => {
      process.off('exit', onExit);
      // Let go of already: the next daemon sees it gone and tidies up.
      if (this.#state === 'released') return new Promise<QemuExit>(() => {});
      // The guest's last output is in the sockets QEMU just closed: let it arrive.
      await Promise.race([Promise.all(bridges.map((b) => b.closed)), new Promise((r) => setTimeout(r, 1000).unref())]);
      this.#release(true);
      this.#state = 'exited';
      const status = exitStatus(code, signal);
      const lastError =
        init
          .lastWords()
          .split(/\r?\n/)
          .map((l) => l.trim())
          .filter((l) => l !== '')
          .pop() ?? '';
      const how = signal !== null ? `signal ${signal}` : code !== null ? `status ${code}` : 'status unknown: started by an earlier chardev';
      log(Buffer.from(`${timestamp()}: qemu exited (${how})${this.#stopRequested ? ', as chardev asked' : ''}\n`));
      return { code, signal, status: code === null && signal === null ? 0 : status, lastError, stopRequested: this.#stopRequested };
    });
    const exitedEarly = this.exited.then((exit) => {
      throw new ChardevError('ERR_GUEST', qemuExitMessage(this.argv[0] ?? 'qemu', exit));
    });
    this.ready = Promise.race([
      (async () => {
        const sock = await init.qmp;
        // QEMU gone: look now rather than at the next poll.
        sock.once('close', () => proc.check?.());
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

  /** What the next daemon needs to take this QEMU back. */
  record(): QemuRecord {
    return { pid: this.pid, startTime: processStartTime(this.pid) ?? '', dir: this.dir, argv: this.argv };
  }

  /**
   * Stop QEMU cleanly: QMP `quit` (QEMU's orderly shutdown), else SIGTERM; SIGKILL after
   * `timeoutMs` more. Idempotent; resolves with how QEMU ended.
   */
  stop(timeoutMs = 5000): Promise<QemuExit> {
    this.#stopping ??= (async () => {
      if (this.#state !== 'running') return this.exited;
      this.#state = 'stopping';
      this.#stopRequested = true;
      const proc = this.#proc;
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
      if (!quit && !proc.gone()) proc.kill('SIGTERM');
      if (!(await within(timeoutMs)) && !proc.gone()) {
        proc.kill('SIGKILL');
      }
      return this.exited;
    })();
    return this.#stopping;
  }

  /**
   * Let go of a detached QEMU without stopping it: our sockets close (QEMU keeps trying to
   * connect again), the socket directory stays for the next daemon. `exited` never settles.
   */
  release(): void {
    if (this.#state !== 'running') return;
    this.#state = 'released';
    this.#proc.release();
    this.#release(false);
  }

  #release(removeDir: boolean): void {
    for (const b of this.#bridges) b.close();
    for (const s of this.#servers) s.close();
    void this.#qmp?.close().catch(() => {});
    this.#qmp = undefined;
    if (removeDir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** One line for a QEMU that failed: its own message included. */
export function qemuExitMessage(binary: string, exit: QemuExit): string {
  const how = exit.signal !== null ? `was killed by ${exit.signal}` : `exited with status ${exit.code}`;
  return `${path.basename(binary)} ${how}${exit.lastError !== '' ? `: ${exit.lastError}` : ''}`;
}

/** The log file QEMU's stdout and stderr go to when detached: the domain log itself. */
function qemuLogFile(domain: Domain): string {
  return domain.domainLog().path;
}

/** The last few KiB of a file (QEMU's last words when it wrote there itself). */
function fileTail(file: string, bytes = 4096): string {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(bytes, size));
    fs.readSync(fd, buf, 0, buf.length, size - buf.length);
    return buf.toString('utf8');
  } catch {
    return '';
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * QEMU's spelling of "connect again every second": `reconnect=1` up to 9.1, `reconnect-ms`
 * from 9.2 on (where `reconnect` is deprecated; QEMU 10 dropped it).
 */
function reconnectOption(binary: string): string {
  // Asked once per binary: the daemon starting its hundredth guest does not ask again.
  const known = reconnectOptions.get(binary);
  if (known !== undefined) return known;
  let version = '';
  try {
    version = execFileSync(binary, ['-version'], { encoding: 'utf8', timeout: 10000, stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    // It cannot say: the older spelling; QEMU's own error, if any, says the rest.
  }
  const m = /version (\d+)\.(\d+)/.exec(version);
  const [major, minor] = m === null ? [0, 0] : [Number(m[1]), Number(m[2])];
  const option = major > 9 || (major === 9 && minor >= 2) ? 'reconnect-ms=1000' : 'reconnect=1';
  reconnectOptions.set(binary, option);
  return option;
}
const reconnectOptions = new Map<string, string>();

interface PortServers {
  readonly servers: net.Server[];
  readonly bridges: PortBridge[];
  readonly qmp: Promise<net.Socket>;
}

/** Listen on the port sockets and the QMP socket in `dir` (owner-only; stale files replaced). */
async function listenPorts(domain: Domain, ports: readonly QemuPort[], dir: string, sendBreak: (chardevId: string) => Promise<void>): Promise<PortServers> {
  const servers: net.Server[] = [];
  const bridges: PortBridge[] = [];
  try {
    for (const [i, port] of ports.entries()) {
      const bridge = new PortBridge(
        port.devices.map((nd) => domain.device(nd.alias)),
        () => sendBreak(port.id),
      );
      const server = net.createServer((sock) => bridge.accept(sock));
      servers.push(server);
      await listenUnixOwnerOnly(port.id, server, portSocketPath(dir, i), 1);
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
    await listenUnixOwnerOnly(QMP_CHARDEV_ID, qmpServer, path.join(dir, 'qmp'), 1);
    return { servers, bridges, qmp };
  } catch (err) {
    for (const b of bridges) b.close();
    for (const s of servers) s.close();
    throw err;
  }
}

function portSocketPath(dir: string, index: number): string {
  return path.join(dir, `p${index}`);
}

/**
 * Start QEMU as the guest of `domain`'s devices. Resolves once QEMU is spawned (see
 * `ready` for "every device connected"); rejects with ERR_GUEST when it cannot be started.
 */
export async function launchQemu(domain: Domain, options: QemuLaunchOptions): Promise<QemuProcess> {
  const [binary, ...userArgs] = options.argv;
  if (binary === undefined) throw new ChardevError('ERR_USAGE', 'qemu: no QEMU command given (chardev qemu FILE -- qemu-system-x86_64 ARGS…)');
  const detached = options.supervision === 'detached';
  const log =
    options.log ??
    ((b: Buffer) => {
      try {
        domain.domainLog().write(b);
      } catch {
        // A failing log must not stop the guest; the stdio devices report it.
      }
    });
  const dir = privateDir(options.runDir, domain.name);
  let listening: PortServers | undefined;
  let child: ChildProcess | undefined;
  let outFd: number | undefined;
  let started: QemuProcess | undefined;
  try {
    listening = await listenPorts(domain, options.ports, dir, (id) => started?.sendBreak(id) ?? Promise.resolve());
    if (findExecutable(binary) === undefined)
      throw new ChardevError('ERR_GUEST', `qemu: cannot start ${binary}: No such file or directory (is QEMU installed?)`);
    const paths: QemuArgsPaths = {
      portSocket: (i) => portSocketPath(dir, i),
      qmpSocket: path.join(dir, 'qmp'),
      ...(detached ? { reconnect: reconnectOption(binary) } : {}),
    };
    const argv = [binary, ...userArgs, ...qemuDeviceArgs(options.ports, paths, userArgs, options.syntax)];
    log(Buffer.from(`${timestamp()}: starting up chardev, domain ${domain.name}, qemu command line:\n${argv.map(shellQuote).join(' ')}\n`));
    const common = { detached: true, env: { ...process.env, ...options.env }, ...(options.cwd !== undefined ? { cwd: options.cwd } : {}) };
    if (detached) {
      // Straight into the log file, not through us: QEMU writes on while no daemon runs.
      outFd = fs.openSync(qemuLogFile(domain), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600);
      child = spawn(binary, argv.slice(1), { ...common, stdio: ['ignore', outFd, outFd] });
    } else {
      const [cmd, ...args] = SETPRIV !== undefined ? [SETPRIV, '--pdeathsig', 'TERM', '--', ...argv] : argv;
      // Its own process group: a ^C at the terminal reaches chardev, which stops QEMU in order.
      child = spawn(cmd as string, args, { ...common, stdio: ['ignore', 'pipe', 'pipe'] });
    }
    const c = child;
    await new Promise<void>((resolve, reject) => {
      c.once('spawn', resolve);
      c.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new ChardevError('ERR_GUEST', `qemu: cannot start ${binary}: ${e.code === 'ENOENT' ? 'No such file or directory (is QEMU installed?)' : e.message}`, {
            cause: e,
          }),
        ),
      );
    });
    let stderrTail = '';
    c.stdout?.on('data', (b: Buffer) => log(b));
    c.stderr?.on('data', (b: Buffer) => {
      log(b);
      stderrTail = (stderrTail + b.toString('utf8')).slice(-4096);
    });
    const logFile = detached ? qemuLogFile(domain) : undefined;
    started = new QemuProcess({
      argv,
      // Detached: no pipes to wait for, so 'exit' is the end.
      proc: childHandle(c, detached ? 'exit' : 'close'),
      ...listening,
      dir,
      log,
      lastWords: () => (logFile !== undefined ? fileTail(logFile) : stderrTail),
      dieWithUs: !detached,
    });
    return started;
  } catch (err) {
    if (listening !== undefined) {
      for (const b of listening.bridges) b.close();
      for (const s of listening.servers) s.close();
    }
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  } finally {
    // QEMU has its own copy.
    if (outFd !== undefined) fs.closeSync(outFd);
  }
}

/**
 * Take back a QEMU that an earlier daemon started detached (launchQemu with `supervision:
 * 'detached'`): listen again on its socket directory; QEMU's `reconnect` brings every port
 * and its QMP monitor back within a second. Throws ERR_GUEST when that QEMU is gone.
 */
export async function adoptQemu(
  domain: Domain,
  ports: readonly QemuPort[],
  record: QemuRecord,
  options: { readonly log?: (chunk: Buffer) => void } = {},
): Promise<QemuProcess> {
  if (processStartTime(record.pid) !== record.startTime) {
    fs.rmSync(record.dir, { recursive: true, force: true });
    throw new ChardevError('ERR_GUEST', `qemu (pid ${record.pid}) of domain ${domain.name} is no longer running`);
  }
  const log =
    options.log ??
    ((b: Buffer) => {
      try {
        domain.domainLog().write(b);
      } catch {
        // as in launchQemu
      }
    });
  fs.mkdirSync(record.dir, { recursive: true, mode: 0o700 });
  let adopted: QemuProcess | undefined;
  const listening = await listenPorts(domain, ports, record.dir, (id) => adopted?.sendBreak(id) ?? Promise.resolve());
  const logFile = qemuLogFile(domain);
  log(Buffer.from(`${timestamp()}: chardev took back qemu (pid ${record.pid}), domain ${domain.name}\n`));
  adopted = new QemuProcess({
    argv: record.argv,
    proc: adoptedHandle(record),
    ...listening,
    dir: record.dir,
    log,
    lastWords: () => fileTail(logFile),
    dieWithUs: false,
  });
  return adopted;
}
