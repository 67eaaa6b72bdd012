/**
 * `chardev run [FILE] [--tty] [--log-dir DIR] -- COMMAND ARGS…`: start the domain's host
 * interfaces and run COMMAND as the guest of its first serial (or console) device.
 * Child stdout/stderr are guest output; device input goes to the child's stdin. With
 * `--tty` the child gets a pty of its own (cooked, as a login terminal would be), so
 * shells and editors work; its master is relayed to and from the device.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { loadDomain } from '../../config/domain.ts';
import type { Chardev } from '../../core/chardev.ts';
import { OutputPump, type OutputSource } from '../../core/output-pump.ts';
import { startDomain } from '../../core/domain.ts';
import { exitStatus } from '../../core/exit-status.ts';
import { linuxPlatform, tuneAllocatorForStreaming, type ByteReader, type ByteWriter } from '../../platform/index.ts';
import { defaultRunDir, ensureRunDir } from '../../core/status.ts';
import { CliError, readDomain } from '../io.ts';
import { addDriverOptions, driverOptions, type DriverFlags } from './config.ts';
import { DEFAULT_DOMAIN_ATTACH, DEFAULT_TELNET_PORT, defaultDomainXml } from '../default-domain.ts';
import { ensureLogDir, parseWebAddress, refuseRunning, rootRawArgs, serveDomain, splitOperands, type ServedDomain } from '../serve.ts';

export { defaultLogDir, parseWebAddress, splitOperands, type WebAddress } from '../serve.ts';

/** How long a guest gets to exit after SIGHUP/SIGTERM before SIGKILL. */
const KILL_AFTER_MS = 3000;

interface RunFlags extends DriverFlags {
  tty?: boolean;
  logDir?: string;
  runDir?: string;
  attach?: string[];
  telnetPort?: string;
  web?: string;
}


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
    child.once('error', (e) => reject(new CliError(`run: cannot start ${child.spawnfile}: ${e.message}`, 127)));
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
}

function runPiped(device: GuestPorts, command: readonly string[]): GuestIo {
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
  // The child may exit without reading its stdin; EPIPE then is not an error of ours.
  child.stdin?.on('error', () => {});
  // Input the child does not read yet must wait in the clients and the kernel, not pile up
  // here: while its stdin pipe is full we stop taking device input (the device stops reading
  // its clients, as a UART with a full receive FIFO would) and resume on 'drain'.
  let exited = false;
  const toChild = (b: Buffer): void => {
    if (child.stdin?.write(b) === false) device.off(toChild);
  };
  child.stdin?.on('drain', () => {
    if (!exited) device.on(toChild);
  });
  device.on(toChild);
  // The child's streams may end while a slow client has not taken all of their output yet:
  // it is delivered before the devices stop, however long that client takes (unless abandoned).
  const done = waitExit(child)
    .then(async (status) => {
      await pump.flushed();
      return status;
    })
    .finally(() => {
      exited = true;
      device.off(toChild);
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
  let gone = false;
  void hangup.then(() => (gone = true));
  const done = waitExit(child).then(async (status) => {
    // Output the child wrote just before exiting is still in the pty: read it to the
    // hang-up, however long a slow client takes, unless a grandchild keeps the pty open
    // (then half a second of the device not waiting is enough).
    let idleMs = 0;
    while (!gone && !abandoned && idleMs < 500) {
      await new Promise((r) => setTimeout(r, 50).unref());
      idleMs = out.waiting ? 0 : idleMs + 50;
    }
    return status;
  }).finally(() => {
    device.off(toChild);
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

export function registerRunCommand(program: Command, write: (s: string) => void): void {
  addDriverOptions(program
    .command('run')
    .argument('[file]', "domain XML ('-' for stdin); default: the embedded domain (pty console, serial log, domain log)")
    .argument('[command...]', 'the guest of the first serial (or console) device; default: $SHELL with --tty')
    .option('--tty', 'give COMMAND a pty of its own (for interactive programs)')
    .option('--log-dir <dir>', 'where the domain log and default logs go (default $XDG_STATE_HOME/chardev or ~/.local/state/chardev)')
    .option('--attach <alias>', 'attach COMMAND to this device (repeatable; default: the first serial, or console)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--telnet-port <port>', `the default domain's telnet server port on 127.0.0.1 (default ${DEFAULT_TELNET_PORT}; 0 picks a free one)`)
    .option('--web <host:port>', "serve the browser console there (default: the first vc device's <cd:web>, else 127.0.0.1 and a free port; without a vc device only with this option)")
    .option('--run-dir <dir>', 'where the status of the running domain goes, for dumpxml (default $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)')
    .description('start the host interfaces of a domain and run COMMAND as the guest of its first serial device'))
    .action(async (fileArg: string | undefined, commandArg: string[], opts: RunFlags, cmd: Command) => {
      const operands = [...(fileArg === undefined ? [] : [fileArg]), ...commandArg];
      const { file, command: given } = splitOperands(operands, rootRawArgs(cmd));
      const logDir = ensureLogDir(opts.logDir);
      const driver = driverOptions(opts);
      const webFlag = opts.web === undefined ? undefined : parseWebAddress(opts.web);
      if (opts.telnetPort !== undefined && (file !== undefined || !/^\d+$/.test(opts.telnetPort) || Number(opts.telnetPort) > 65535)) {
        throw new CliError(file !== undefined ? 'run: --telnet-port applies to the default domain only' : `run: --telnet-port must be a port number, not '${opts.telnetPort}'`, 2);
      }
      const loaded =
        file === undefined
          ? loadDomain(defaultDomainXml(logDir, opts.telnetPort === undefined ? undefined : Number(opts.telnetPort)), { ...driver, file: '<default domain>' })
          : readDomain(file, driver);
      const runDir = ensureRunDir(path.resolve(opts.runDir ?? defaultRunDir()));
      refuseRunning(runDir, loaded.def.name ?? 'domain');
      const shell = process.env['SHELL'] ?? '/bin/sh';
      const command = given.length > 0 ? given : [shell];
      const tty = opts.tty === true || given.length === 0;

      // A long-lived relay: keep freed chunk memory for reuse (src/platform/tuning.ts).
      tuneAllocatorForStreaming();
      const domain = await startDomain(loaded, {
        logDir,
        onError: (err) => process.stderr.write(`${err.message}\n`),
      });
      let guestIo: GuestIo | undefined;
      const onSignal = (): void => {
        const child = guestIo?.child;
        if (child === undefined) return;
        // An interactive shell ignores SIGTERM but exits on SIGHUP, as when its terminal goes away.
        child.kill(tty ? 'SIGHUP' : 'SIGTERM');
        // A guest that ignores both still must not keep us running, nor a client that reads nothing.
        setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          guestIo?.abandon();
        }, KILL_AFTER_MS).unref();
      };
      let status: number;
      let served: ServedDomain | undefined;
      try {
        served = await serveDomain(domain, loaded, { runDir, web: webFlag, write });
        const attach = opts.attach ?? (file === undefined ? DEFAULT_DOMAIN_ATTACH : []);
        const devices = attach.length > 0 ? attach.map((a) => domain.device(a)) : [domain.primary()].filter((d) => d !== undefined);
        if (devices.length === 0) throw new CliError(`run: domain ${domain.name} has no serial or console device for the command`);
        const device = new GuestPorts(devices);
        write(`${devices.map((d) => d.id).join(', ')}: guest is ${command.join(' ')}${tty ? ' (on its own pty)' : ''}\n`);
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        guestIo = tty ? runOnPty(device, command) : runPiped(device, command);
        status = await guestIo.done;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        if (served !== undefined) await served.close();
        else await domain.stop();
      }
      // An empty message: main() prints nothing and exits with the child's status.
      if (status !== 0) throw new CliError('', status);
    });
}
