/**
 * `chardev qemu`: start the domain's host interfaces, then QEMU with one socket chardev per
 * guest port connected to them (src/qemu/launch.ts). Stopping chardev (SIGHUP, SIGINT,
 * SIGTERM) stops QEMU (QMP quit); QEMU exiting stops chardev, with QEMU's status. QEMU's
 * stdout and stderr go to the domain log.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { QmpClient } from '../../control/qmp-client.ts';
import type { LoadedDomain } from '../../config/domain.ts';
import { formatDomain } from '../../config/format.ts';
import { daemonSocketPath } from '../../daemon/state.ts';
import { constants as osConstants } from 'node:os';
import type { Command } from 'commander';
import { startDomain } from '../../core/domain.ts';
import '../../backends/index.ts';
import { ensureRunDir, readStatus } from '../../core/status.ts';
import { ChardevError } from '../../errors.ts';
import { platformName, releaseFreedHeap, sdNotify, tuneAllocator } from '../../platform/index.ts';
import { describePorts, launchQemu, planQemuPorts, qemuExitMessage, type QemuPort, type QemuProcess } from '../../qemu/launch.ts';
import { VERSION } from '../../version.ts';
import { cliRunDir, parseWebAddress, rootRawArgs, splitOperands } from '../args.ts';
import { CliError, EXIT_CHARDEV, EXIT_NOT_FOUND, EXIT_USAGE, GuestExit, asChardevFailure, type CliIo } from '../io.ts';
import { watchNpmParent } from '../npm-parent.ts';
import { readDomain } from '../read-domain.ts';
import { makeReporter, verbosityOf, type Reporter } from '../report.ts';
import { ensureLogDir, refuseRunning, serveDomain, type ServedDomain } from '../serve.ts';
import { driverOptions, type DriverFlags } from '../driver-flags.ts';

export interface QemuFlags extends DriverFlags {
  logDir?: string;
  runDir?: string;
  web?: string;
  monitor?: string[];
  hub?: string[];
  syntax?: string;
  daemon?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/** How long QEMU gets to quit (QMP quit, else SIGTERM) before SIGKILL. */
const QUIT_TIMEOUT_MS = 10000;

const STOP_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM'] as const;

export async function qemuAction(fileArg: string, qemuArg: string[], opts: QemuFlags, cmd: Command, cli: CliIo): Promise<void> {
  const verbosity = verbosityOf(opts);
  if (verbosity === undefined) throw new CliError('qemu: --quiet and --verbose are mutually exclusive', EXIT_USAGE);
  const report = makeReporter({ write: cli.write, writeErr: cli.writeErr, terminal: cli.terminal, verbosity });
  // From the first line on: a stop asked for while starting is honoured once started.
  let qemu: QemuProcess | undefined;
  let signalled: (typeof STOP_SIGNALS)[number] | undefined;
  const onSignal = (s: (typeof STOP_SIGNALS)[number]): void => {
    signalled ??= s;
    report.detail(`qemu: ${s} received; stopping QEMU`);
    sdNotify('STOPPING=1');
    void qemu?.stop(QUIT_TIMEOUT_MS);
  };
  const handlers = STOP_SIGNALS.map((s) => [s, () => onSignal(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  // Started by npm (npx): npm killed is a stop too.
  const unwatch = watchNpmParent(() => onSignal('SIGHUP'));
  try {
    await runQemu(fileArg, qemuArg, opts, cmd, report, {
      started: (q) => {
        qemu = q;
        if (signalled !== undefined) void q.stop(QUIT_TIMEOUT_MS);
      },
      signalled: () => signalled,
    });
  } catch (e) {
    throw asChardevFailure(e);
  } finally {
    for (const [s, h] of handlers) process.off(s, h);
    unwatch();
  }
}

/**
 * `--daemon`: the daemon of the run directory starts the domain and QEMU (its own child,
 * detached); we say where things are and return once QEMU connected every device.
 */
async function handOver(file: string, loaded: LoadedDomain, command: string[], opts: QemuFlags, runDir: string, report: Reporter): Promise<void> {
  const socket = daemonSocketPath(runDir);
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(socket);
  } catch {
    throw new CliError(`qemu: --daemon: no chardev daemon is running for ${runDir} (start one: chardev daemon --run-dir ${runDir})`);
  }
  // Standard input is read already: the document as loaded goes instead (what dumpxml --inactive prints).
  const xml = file === '-' ? formatDomain(loaded) : readFileSync(file, 'utf8');
  const name = loaded.def.name ?? 'domain';
  const args: Record<string, unknown> = {
    xml,
    file: file === '-' ? '<stdin>' : path.resolve(file),
    ...(opts.logDir !== undefined ? { 'log-dir': path.resolve(opts.logDir) } : {}),
    ...(opts.tls !== undefined ? { tls: opts.tls } : {}),
    ...(opts.tlsVerify !== undefined ? { 'tls-verify': opts.tlsVerify } : {}),
    ...(opts.tlsDir !== undefined ? { 'tls-dir': path.resolve(opts.tlsDir) } : {}),
    ...(opts.channelDir !== undefined ? { 'channel-dir': path.resolve(opts.channelDir) } : {}),
    qemu: {
      argv: command,
      ...(opts.monitor !== undefined ? { monitor: opts.monitor } : {}),
      ...(opts.hub !== undefined ? { hub: opts.hub } : {}),
      ...(opts.syntax !== undefined ? { syntax: opts.syntax } : {}),
      cwd: process.cwd(),
    },
  };
  let started: { name: string; lines: string[]; 'qemu-pid'?: number };
  try {
    // QEMU may take a while to connect (a slow host): as long as `chardev qemu` would wait.
    started = (await qmp.execute('x-domain-start', args, 60000)) as typeof started;
  } catch (e) {
    const message = (e as Error).message;
    const line = message.startsWith('qemu: ') ? message : `qemu: ${message}`;
    // As without --daemon: 127 when the QEMU binary is not there.
    throw new CliError(line, /^qemu: cannot start .*: No such file or directory/.test(line) ? EXIT_NOT_FOUND : EXIT_CHARDEV);
  } finally {
    await qmp.close();
  }
  for (const l of started.lines) report.info(l);
  report.info(`qemu: domain ${started.name} runs in the chardev daemon (pid ${readStatus(runDir, name)?.pid ?? '?'}); chardev stop ${started.name} stops it`);
}

interface Lifecycle {
  started(q: QemuProcess): void;
  signalled(): (typeof STOP_SIGNALS)[number] | undefined;
}

async function runQemu(fileArg: string, qemuArg: string[], opts: QemuFlags, cmd: Command, report: Reporter, life: Lifecycle): Promise<void> {
  const { file, command } = splitOperands([fileArg, ...qemuArg], rootRawArgs(cmd), 'qemu');
  if (file === undefined || command.length === 0) {
    throw new CliError('qemu: usage: chardev qemu FILE [options] -- qemu-system-ARCH ARGS…', EXIT_USAGE);
  }
  const syntax = opts.syntax ?? 'json';
  if (syntax !== 'json' && syntax !== 'keyval') throw new CliError(`qemu: --syntax must be json or keyval, not '${syntax}'`, EXIT_USAGE);
  const webFlag = opts.web === undefined ? undefined : parseWebAddress(opts.web, 'qemu');
  const logDir = ensureLogDir(opts.logDir);
  const driver = driverOptions(opts);
  const loaded = readDomain(file, driver);
  let ports: QemuPort[];
  try {
    ports = planQemuPorts(loaded, { monitors: opts.monitor ?? [], hubs: (opts.hub ?? []).map((h) => h.split(',').filter((a) => a !== '')) });
  } catch (e) {
    throw e instanceof ChardevError && e.code === 'ERR_USAGE' ? new CliError(e.message, EXIT_USAGE) : e;
  }
  const runDir = ensureRunDir(cliRunDir(opts.runDir));
  if (opts.daemon === true) {
    if (webFlag !== undefined)
      throw new CliError(
        'qemu: --web is not available with --daemon (the daemon runs one browser console for every domain: chardev daemon --web HOST:PORT)',
        EXIT_USAGE,
      );
    await handOver(file, loaded, command, opts, runDir, report);
    return;
  }
  refuseRunning(runDir, loaded.def.name ?? 'domain');
  report.detail(`chardev ${VERSION} on Node ${process.version}, ${platformName()}; run directory ${runDir}, log directory ${logDir}`);

  // A long-lived relay: keep freed chunk memory for reuse (src/platform/tuning.ts).
  const untuned = tuneAllocator();
  if (untuned !== undefined) report.detail(`qemu: allocator left as it is: ${untuned}`);
  const domain = await startDomain(loaded, {
    logDir,
    onError: (err) => report.warn(err.message),
  });
  let qemu: QemuProcess | undefined;
  let served: ServedDomain | undefined;
  try {
    served = await serveDomain(domain, loaded, { runDir, web: webFlag, report });
    for (const line of describePorts(ports)) report.info(line);
    const early = life.signalled();
    if (early !== undefined) throw new GuestExit(128 + osConstants.signals[early]);
    try {
      qemu = await launchQemu(domain, { argv: command, ports, runDir, syntax });
    } catch (e) {
      // Like a shell: 127 when the program cannot be started.
      throw e instanceof ChardevError && e.code === 'ERR_GUEST' ? new CliError(e.message, EXIT_NOT_FOUND) : e;
    }
    life.started(qemu);
    const logPath = domain.domainLog().path;
    report.info(`qemu: ${path.basename(command[0] ?? 'qemu')} started (pid ${qemu.pid}); its output goes to ${logPath}`);
    const started = qemu;
    started.ready.then(
      () => {
        report.info(`qemu: every device connected (${ports.length} port${ports.length === 1 ? '' : 's'} and the control socket)`);
        const r = sdNotify(`READY=1\nSTATUS=domain ${domain.name}: QEMU pid ${started.pid}\nMAINPID=${process.pid}`);
        if (r.sent) report.detail(`qemu: told systemd READY=1 (via ${r.via})`);
        else if (r.reason === 'failed') report.warn(`qemu: cannot tell systemd the domain is ready: ${r.error}`);
        // Started: what start-up allocated and freed goes back to the kernel (tuning.ts).
        releaseFreedHeap();
      },
      () => {},
    );
    const exit = await started.exited;
    if (exit.status !== 0) {
      const killed = exit.stopRequested && exit.signal === 'SIGKILL' ? ` (it did not quit within ${QUIT_TIMEOUT_MS / 1000} s)` : '';
      // QEMU's status, with its own message (a guest that exits by itself says nothing).
      throw new GuestExit(exit.status, `qemu: ${qemuExitMessage(command[0] ?? 'qemu', exit)}${killed}`);
    }
  } finally {
    // Whatever went wrong, QEMU does not outlive us.
    if (qemu !== undefined) await qemu.stop(QUIT_TIMEOUT_MS);
    if (served !== undefined) await served.close();
    else await domain.stop();
  }
}
