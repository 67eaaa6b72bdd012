/**
 * `chardev run [FILE] [--tty] [--shell] [--log-dir DIR] [-- COMMAND ARGS…]`: start the
 * domain's host interfaces and run COMMAND as the guest of its first serial (or console)
 * device. Child stdout/stderr are guest output; device input goes to the child's stdin.
 * With `--tty` the child gets a pty of its own (cooked, as a login terminal would be), so
 * shells and editors work; its master is relayed to and from the device, the writer's terminal
 * size is the pty's, and a BREAK reaches it as a serial line's would. `--shell` (the
 * default for the embedded domain) is `$SHELL` that way.
 *
 * SIGHUP, SIGINT and SIGTERM stop it cleanly at any point: before the guest runs, the
 * start is undone; after, the guest is stopped (SIGHUP for a shell on its pty, else
 * SIGTERM; SIGKILL after KILL_AFTER_MS), its last output is relayed, and the devices,
 * sockets and status file go.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import type { Writable } from 'node:stream';
import { constants as osConstants } from 'node:os';
import type { Command } from 'commander';
import { loadDomain } from '../../config/domain.ts';
import type { Chardev } from '../../core/chardev.ts';
import { OutputPump, type OutputSource } from '../../core/output-pump.ts';
import { GuestOutput, guestPipe } from '../../core/guest-output.ts';
import { GuestInput, guestInputSocket } from '../../core/guest-input.ts';
import type { PipeEnds } from '../../platform/splice.ts';
import { startDomain, type Domain } from '../../core/domain.ts';
import '../../backends/index.ts';
import { exitStatus } from '../../core/exit-status.ts';
import { ensureRunDir } from '../../core/status.ts';
import type { TerminalSize } from '../../core/hub.ts';
import { deliverPtyBreak } from '../../core/pty-break.ts';
import { linuxPlatform, platformName, releaseFreedHeap, sdNotify, tuneAllocator, type ByteReader, type ByteWriter } from '../../platform/index.ts';
import { VERSION } from '../../version.ts';
import { cliRunDir, parseTelnetAddress, parseWebAddress, rootRawArgs, splitOperands } from '../args.ts';
import { defaultDomainAttach, defaultDomainXml } from '../default-domain.ts';
import { CliError, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_USAGE, GuestExit, asChardevFailure, type CliIo } from '../io.ts';
import { watchNpmParent } from '../npm-parent.ts';
import { readDomain } from '../read-domain.ts';
import { makeReporter, verbosityOf, type Reporter } from '../report.ts';
import { ensureLogDir, networkReach, refuseRunning, serveDomain, type ServedDomain } from '../serve.ts';
import { driverOptions, type DriverFlags } from '../driver-flags.ts';

export interface RunFlags extends DriverFlags {
  tty?: boolean;
  shell?: boolean;
  logDir?: string;
  runDir?: string;
  attach?: string[];
  telnet?: string;
  web?: string;
  quiet?: boolean;
  verbose?: boolean;
}

/** After this long the start is over and its freed heap is released. */
const START_SETTLE_MS = 1000;

/** The signals that stop `chardev run` cleanly. */
export const STOP_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM'] as const;
type StopSignal = (typeof STOP_SIGNALS)[number];

/** How long a guest gets to exit after SIGHUP/SIGTERM before SIGKILL. */
const KILL_AFTER_MS = 3000;

interface GuestIo {
  /** Resolves with the child's exit status once its output has been relayed. */
  readonly done: Promise<number>;
  readonly child: ChildProcess;
  /**
   * Stop waiting for slow clients: output they have not taken is given up, so a stop is
   * not held for ever by a client that reads nothing.
   */
  abandon(): void;
}

function waitExit(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    child.once('error', (e: NodeJS.ErrnoException) => {
      // Like a shell: 127 when the program is not there, 126 when it cannot be executed.
      reject(new CliError(`run: cannot start ${child.spawnfile}: ${e.message}`, e.code === 'ENOENT' ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE));
    });
    child.once('close', (code, signal) => resolve(exitStatus(code, signal)));
  });
}

/**
 * The devices a guest command is attached to, seen as one: its output goes to every one,
 * input from any reaches it (QEMU 10's `hub` chardev does the same for an emulated port).
 */
class GuestPorts {
  readonly #devices: readonly Chardev[];
  constructor(devices: readonly Chardev[]) {
    this.#devices = devices;
  }
  /**
   * The guest's output to every device: while one is behind (its client reads slowly), the
   * source is paused and the guest blocks in write(), as QEMU's frontends wait.
   */
  output(source: OutputSource): OutputPump {
    return new OutputPump(this.#devices, source);
  }
  /** The same, reading the guest's output from an fd itself (taken over). */
  outputFrom(fd: number): GuestOutput {
    return new GuestOutput(fd, this.#devices);
  }
  /**
   * Input from the devices to the guest's stdin (`target`: the write end of its pipe, taken
   * over, or Node's stream): spliced from the writer's socket on the data-plane thread
   * while the conditions allow (see `GuestInput`), else written from 'data'; while the guest
   * does not read, the devices stop reading their clients.
   */
  input(target: number | Writable): GuestInput {
    return new GuestInput(target, this.#devices);
  }
  /** Idempotent per listener, so a resumed listener is never attached twice. */
  on(listener: (b: Buffer) => void): void {
    for (const d of this.#devices) {
      d.off('data', listener);
      d.on('data', listener);
    }
  }
  off(listener: (b: Buffer) => void): void {
    for (const d of this.#devices) d.off('data', listener);
  }
  /** BREAKs and terminal sizes from any device's writer; returns the unsubscribe function. */
  onLine(onBreak: () => void, onResize: (size: TerminalSize) => void): () => void {
    for (const d of this.#devices) d.on('break', onBreak).on('resize', onResize);
    return () => {
      for (const d of this.#devices) d.off('break', onBreak).off('resize', onResize);
    };
  }
  /** A writer's terminal size, if one said it (the first device's first). */
  get terminalSize(): TerminalSize | undefined {
    for (const d of this.#devices) if (d.terminalSize !== undefined) return d.terminalSize;
    return undefined;
  }
}

function runPiped(device: GuestPorts, command: readonly string[]): GuestIo {
  let pipe: PipeEnds | undefined;
  try {
    pipe = guestPipe();
  } catch {
    // No koffi, or not Node: Node's own pipes and the OutputPump, as before (same rules, slower).
  }
  return pipe === undefined ? runPipedByNode(device, command) : runPipedByFd(device, command, pipe);
}

/**
 * The child's stdout and stderr are one pipe chardev made (`guestPipe`): the devices read it
 * themselves (`GuestOutput`), by splice(2) on the data-plane thread while the device's output
 * has one destination (`Chardev.kernelTarget`).
 */
function runPipedByFd(device: GuestPorts, command: readonly string[], pipe: PipeEnds): GuestIo {
  const [cmd, ...args] = command as [string, ...string[]];
  let child: ChildProcess;
  // The child's stdin a socketpair of ours (as child_process's 'pipe' would be), so a
  // client's input can be spliced into it (through a pipe of GuestInput's).
  let stdin: PipeEnds | undefined;
  try {
    stdin = guestInputSocket();
    // One pipe for both keeps their order as the child wrote them, as a terminal would.
    child = spawn(cmd, args, { stdio: [stdin.readFd, pipe.writeFd, pipe.writeFd] });
  } catch (e) {
    if (stdin !== undefined) fs.closeSync(stdin.writeFd);
    fs.closeSync(pipe.readFd);
    throw e;
  } finally {
    // The child has its copies; ours would keep the pipes open (no end of file) after it exits.
    fs.closeSync(pipe.writeFd);
    if (stdin !== undefined) fs.closeSync(stdin.readFd);
  }
  const output = device.outputFrom(pipe.readFd);
  const toChild = device.input(stdin.writeFd);
  const done = waitExit(child)
    .then(async (status) => {
      // The child's output may still be in the pipe (or held for a slow client): it is
      // delivered before the devices stop, however long that takes (unless abandoned).
      await output.ended;
      return status;
    })
    .finally(() => {
      toChild.close();
      output.close();
    });
  return { child, done, abandon: () => output.close() };
}

/** Without koffi: the child's stdout and stderr are Node's pipes, relayed by an OutputPump. */
function runPipedByNode(device: GuestPorts, command: readonly string[]): GuestIo {
  const [cmd, ...args] = command as [string, ...string[]];
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  // Both streams pause together, so their order at the device stays the order they arrived in.
  const pump = device.output({
    pause: () => {
      child.stdout?.pause();
      child.stderr?.pause();
    },
    resume: () => {
      child.stdout?.resume();
      child.stderr?.resume();
    },
  });
  // Chunks fresh from the child's streams, never reused: the devices may keep them.
  const toDevice = (b: Buffer): void => pump.push(b);
  child.stdout?.on('data', toDevice);
  child.stderr?.on('data', toDevice);
  if (child.stdin === null) throw new Error('the child has no stdin');
  const toChild = device.input(child.stdin);
  // The child's streams may end while a slow client has not taken all of their output yet:
  // it is delivered before the devices stop, however long that client takes (unless abandoned).
  const done = waitExit(child)
    .then(async (status) => {
      await pump.flushed();
      return status;
    })
    .finally(() => {
      toChild.close();
      pump.close();
    });
  return { child, done, abandon: () => pump.close() };
}

function runOnPty(device: GuestPorts, command: readonly string[]): GuestIo {
  const platform = linuxPlatform;
  const pty = platform.openPty();
  let slaveFd: number | undefined;
  let reader: ByteReader | undefined;
  let writer: ByteWriter | undefined;
  let child: ChildProcess;
  let hungUp: () => void = () => {};
  const hangup = new Promise<void>((resolve) => (hungUp = resolve));
  let inputDrained: () => void = () => {};
  let pump: OutputPump | undefined;
  let abandoned = false;
  try {
    slaveFd = fs.openSync(pty.slavePath, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    // openPty makes the pty raw (right for a device); a program on a terminal expects a
    // cooked one (echo, ^C, CR→NL), as getty or sshd would hand it.
    execFileSync('stty', ['sane'], { stdio: [slaveFd, 'ignore', 'ignore'] });
    // setsid -c: a new session with the pty as controlling terminal, so job control and ^C work.
    const useSetsid = fs.existsSync('/usr/bin/setsid');
    const argv = useSetsid ? ['/usr/bin/setsid', '-c', ...command] : [...command];
    const [cmd, ...args] = argv as [string, ...string[]];
    child = spawn(cmd, args, { stdio: [slaveFd, slaveFd, slaveFd] });
    const r = platform.openPtyReader(pty.masterFd, {
      // Chunks fresh from the reader, never reused: the devices may keep them.
      onData: (b) => pump?.push(b),
      onHangup: () => hungUp(),
      onError: () => hungUp(),
    });
    reader = r;
    pump = device.output({ pause: () => r.pause(), resume: () => r.resume() });
    writer = platform.openWriter(pty.masterFd, { onDrain: () => inputDrained() });
  } catch (e) {
    reader?.close();
    writer?.close();
    platform.close(pty.masterFd);
    throw e;
  } finally {
    // The child holds its own copies; ours would keep the slave "open" after it exits.
    if (slaveFd !== undefined) fs.closeSync(slaveFd);
  }
  const w = writer;
  const out = pump as OutputPump;
  const ptyHandle = pty;
  // Input the child does not read yet waits in the clients and the kernel: what the pty's
  // writer refuses is kept, and device input stops until the writer has drained.
  let refused: Buffer | undefined;
  const toChild = (b: Buffer): void => {
    const n = w.write(b);
    if (n === b.length) return;
    refused = b.subarray(n);
    device.off(toChild);
  };
  inputDrained = () => {
    const rest = refused;
    if (rest === undefined) return;
    refused = undefined;
    device.on(toChild);
    toChild(rest);
  };
  device.on(toChild);
  // The writer's terminal is the child's: its size (the kernel sends the child SIGWINCH on a
  // change), and a BREAK as a serial line would deliver it (pty-break.ts).
  const setSize = (size: TerminalSize): void => {
    try {
      platform.setWindowSize(ptyHandle.masterFd, size);
    } catch {
      // The pty is going away with the child.
    }
  };
  const initial = device.terminalSize;
  if (initial !== undefined) setSize(initial);
  const offLine = device.onLine(() => {
    try {
      deliverPtyBreak(platform, ptyHandle, toChild);
    } catch {
      // The child closed its terminal: there is nobody to break.
    }
  }, setSize);
  let gone = false;
  void hangup.then(() => (gone = true));
  const done = waitExit(child)
    .then(async (status) => {
      // Output the child wrote just before exiting is still in the pty: read it to the
      // hang-up, however long a slow client takes, unless a grandchild keeps the pty open
      // (then half a second of the device not waiting is enough).
      let idleMs = 0;
      while (!gone && !abandoned && idleMs < 500) {
        await new Promise((r) => setTimeout(r, 50).unref());
        idleMs = out.waiting ? 0 : idleMs + 50;
      }
      // The hang-up means everything was read from the pty, not that a slow client has taken
      // it: what the pump still holds is delivered first (closing it would drop that tail).
      await out.flushed();
      return status;
    })
    .finally(() => {
      device.off(toChild);
      offLine();
      out.close();
      reader?.close();
      w.close();
      platform.close(pty.masterFd);
    });
  return {
    child,
    done,
    abandon: () => {
      abandoned = true;
      out.close();
    },
  };
}

/**
 * Signals for the whole run, from the first line on: a stop asked for while the domain is
 * still starting is remembered and honoured as soon as the start is done (never a half-started
 * domain left behind, as the default action — dying at once — would).
 */
class StopSignals {
  signal: StopSignal | undefined;
  #onStop: ((s: StopSignal) => void) | undefined;
  readonly #handlers = new Map<StopSignal, () => void>();
  readonly #unwatch: () => void;
  constructor(private readonly report: Reporter) {
    for (const s of STOP_SIGNALS) {
      const h = (): void => this.#received(s);
      this.#handlers.set(s, h);
      process.on(s, h);
    }
    // Started by npm (npm start, npx): npm killed is a stop too, as its terminal going away.
    this.#unwatch = watchNpmParent(() => this.#received('SIGHUP', 'npm, which started chardev, exited'));
  }
  #received(s: StopSignal, why = `${s} received`): void {
    const first = this.signal === undefined;
    this.signal ??= s;
    this.report.detail(`run: ${why}; ${first ? 'stopping' : 'still stopping'}`);
    sdNotify('STOPPING=1');
    this.#onStop?.(s);
  }
  /** Called for each stop signal from now on (at once if one came already). */
  onStop(f: (s: StopSignal) => void): void {
    this.#onStop = f;
    if (this.signal !== undefined) f(this.signal);
  }
  dispose(): void {
    for (const [s, h] of this.#handlers) process.off(s, h);
    this.#unwatch();
  }
}

/** 128 + the signal's number, as a shell reports a command killed by it. */
function signalStatus(s: StopSignal): number {
  return 128 + osConstants.signals[s];
}

/** Stop the guest: a shell on its pty exits on SIGHUP (its terminal went away), other guests on SIGTERM; SIGKILL if they do not. */
function stopGuest(io: GuestIo, tty: boolean, again: boolean): void {
  const { child } = io;
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  if (again) {
    // A second signal: no more waiting, for the guest or for slow clients.
    if (alive()) child.kill('SIGKILL');
    io.abandon();
    return;
  }
  child.kill(tty ? 'SIGHUP' : 'SIGTERM');
  // A guest that ignores both still must not keep us running, nor a client that reads nothing.
  setTimeout(() => {
    if (alive()) child.kill('SIGKILL');
    io.abandon();
  }, KILL_AFTER_MS).unref();
}

export async function runAction(fileArg: string | undefined, commandArg: string[], opts: RunFlags, cmd: Command, cli: CliIo): Promise<void> {
  const verbosity = verbosityOf(opts);
  if (verbosity === undefined) throw new CliError('run: --quiet and --verbose are mutually exclusive', EXIT_USAGE);
  const report = makeReporter({ write: cli.write, writeErr: cli.writeErr, terminal: cli.terminal, verbosity });
  const signals = new StopSignals(report);
  try {
    await run(fileArg, commandArg, opts, cmd, report, signals);
  } catch (e) {
    throw asChardevFailure(e);
  } finally {
    signals.dispose();
  }
}

async function run(fileArg: string | undefined, commandArg: string[], opts: RunFlags, cmd: Command, report: Reporter, signals: StopSignals): Promise<void> {
  const operands = [...(fileArg === undefined ? [] : [fileArg]), ...commandArg];
  const { file, command: given } = splitOperands(operands, rootRawArgs(cmd));
  if (opts.shell === true && given.length > 0) throw new CliError('run: --shell or -- COMMAND, not both', EXIT_USAGE);
  if (file !== undefined && given.length === 0 && opts.shell !== true) {
    throw new CliError(`run: no guest for ${file}: add --shell to serve your $SHELL on its devices, or -- COMMAND ARGS…`, EXIT_USAGE);
  }
  if (opts.telnet !== undefined && file !== undefined)
    throw new CliError('run: --telnet applies to the embedded domain only (put a tcp device in FILE instead)', EXIT_USAGE);
  const telnet = opts.telnet === undefined ? undefined : parseTelnetAddress(opts.telnet);
  const webFlag = opts.web === undefined ? undefined : parseWebAddress(opts.web);
  const driver = driverOptions(opts);
  const logDir = ensureLogDir(opts.logDir);
  const runDir = ensureRunDir(cliRunDir(opts.runDir));
  const loaded =
    file === undefined
      ? loadDomain(defaultDomainXml({ logDir, runDir, ...(telnet !== undefined ? { telnet } : {}) }), { ...driver, file: '<default domain>' })
      : readDomain(file, driver);
  refuseRunning(runDir, loaded.def.name ?? 'domain');
  const shell = given.length === 0;
  const command = shell ? [process.env['SHELL'] ?? '/bin/sh'] : given;
  const tty = opts.tty === true || shell;
  report.detail(`chardev ${VERSION} on Node ${process.version}, ${platformName()}; run directory ${runDir}, log directory ${logDir}`);

  // A long-lived relay: keep freed chunk memory for reuse (src/platform/tuning.ts).
  const untuned = tuneAllocator();
  if (untuned !== undefined) report.detail(`run: allocator left as it is: ${untuned}`);
  const domain = await startDomain(loaded, {
    logDir,
    onError: (err) => report.warn(err.message),
  });
  let status: number;
  let served: ServedDomain | undefined;
  try {
    served = await serveDomain(domain, loaded, { runDir, web: webFlag, report });
    const attach = opts.attach ?? (file === undefined ? defaultDomainAttach(telnet !== undefined) : []);
    const devices = attachedDevices(domain, attach);
    if (devices.length === 0) throw new CliError(`run: domain ${domain.name} has no serial or console device for the command`);
    if (shell || telnet !== undefined) {
      // Asked for explicitly (--telnet, --shell with such a device), and still said once.
      const what = shell ? 'this shell' : `the guest (${command[0] ?? ''})`;
      for (const d of devices) {
        const who = networkReach(d);
        if (who !== undefined) report.warn(`run: warning: ${who} gets ${what}, with no password (${d.id})`);
      }
    }
    if (signals.signal !== undefined) {
      // Stopped while starting: the guest never runs.
      status = signalStatus(signals.signal);
    } else {
      const guestIo = tty ? runOnPty(new GuestPorts(devices), command) : runPiped(new GuestPorts(devices), command);
      report.info(`${devices.map((d) => d.id).join(', ')}: guest is ${command.join(' ')}${tty ? ' (on its own pty)' : ''}`);
      let stops = 0;
      signals.onStop(() => stopGuest(guestIo, tty, stops++ > 0));
      notifyReady(report, `domain ${domain.name}: guest ${command.join(' ')} (pid ${guestIo.child.pid ?? '?'})`);
      // Started: what start-up allocated and freed goes back to the kernel (tuning.ts).
      setTimeout(releaseFreedHeap, START_SETTLE_MS).unref();
      status = await guestIo.done;
      report.detail(`run: guest exited with status ${status}; stopping the domain`);
    }
  } finally {
    if (served !== undefined) await served.close();
    else await domain.stop();
  }
  report.detail('run: stopped');
  // The guest's status, passed through: main() prints nothing for it.
  if (status !== 0) throw new GuestExit(status);
}

/** The devices COMMAND is attached to: the named ones, else the first serial (or console). */
function attachedDevices(domain: Domain, attach: readonly string[]): Chardev[] {
  if (attach.length === 0) return [domain.primary()].filter((d) => d !== undefined);
  return attach.map((a) => {
    try {
      return domain.device(a);
    } catch (e) {
      throw new CliError(`run: --attach: ${(e as Error).message}`, EXIT_USAGE);
    }
  });
}

/** Tell systemd (Type=notify) that the domain is up; say so when it was asked and failed. */
function notifyReady(report: Reporter, status: string): void {
  const r = sdNotify(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
  if (r.sent) report.detail(`run: told systemd READY=1 (via ${r.via})`);
  else if (r.reason === 'failed') report.warn(`run: cannot tell systemd the domain is ready: ${r.error}`);
}
