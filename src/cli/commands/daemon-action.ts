/**
 * What `chardev daemon` and `chardev stop` do.
 *
 * The daemon: one process for every domain of the run directory. It listens on
 * RUNDIR/daemon/control.qmp (QMP with x-domain-start/-stop/-list, src/daemon/control.ts),
 * takes back what RUNDIR/daemon/state.json lists (a restart), tells systemd it is ready,
 * and on SIGTERM, SIGINT or SIGHUP lets go of its QEMUs (they keep running and connect
 * again to the next daemon), stops the devices and exits 0, keeping the state file.
 */
import * as fs from 'node:fs';
import '../../backends/index.ts';
import { QmpClient } from '../../control/qmp-client.ts';
import { readStatus } from '../../core/status.ts';
import { ensureRunDir } from '../../core/status.ts';
import { domainCommands, domainEvent, inheritedListener, startControl } from '../../daemon/control.ts';
import { DomainHost } from '../../daemon/host.ts';
import { daemonDir, daemonSocketPath, daemonStatePath } from '../../daemon/state.ts';
import { daemonWebPath } from '../../daemon/web.ts';
import { platformName, releaseFreedHeap, sdNotify, tuneAllocator } from '../../platform/index.ts';
import { VERSION } from '../../version.ts';
import { cliRunDir, parseWebAddress } from '../args.ts';
import { CliError, EXIT_CHARDEV, EXIT_USAGE, asChardevFailure, type CliIo } from '../io.ts';
import { ChardevError } from '../../errors.ts';
import type { QmpService } from '../../control/qmp.ts';
import { makeReporter, verbosityOf } from '../report.ts';
import { ensureLogDir } from '../serve.ts';
import { findDomain } from './console-action.ts';

/** `chardev daemon`'s options (defined here, not in daemon.ts, so the two do not import each other). */
export interface DaemonFlags {
  runDir?: string;
  logDir?: string;
  web?: string;
  quiet?: boolean;
  verbose?: boolean;
}

/** `chardev stop`'s options. */
export interface StopFlags {
  runDir?: string;
  timeout?: string;
}

const STOP_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM'] as const;

export async function daemonAction(flags: DaemonFlags, cli: CliIo): Promise<void> {
  const verbosity = verbosityOf(flags);
  if (verbosity === undefined) throw new CliError('daemon: --quiet and --verbose are mutually exclusive', EXIT_USAGE);
  const report = makeReporter({ write: cli.write, writeErr: cli.writeErr, terminal: cli.terminal, verbosity });
  const web = flags.web === undefined ? undefined : parseWebAddress(flags.web, 'daemon');
  // From the first line on: a stop asked for while taking domains back is honoured right after.
  let stopAsked: () => void = () => {};
  let signalled = false;
  const stopped = new Promise<void>((resolve) => (stopAsked = resolve));
  const onSignal = (s: string): void => {
    report.detail(`daemon: ${s} received; letting go of the guests and stopping`);
    if (!signalled) sdNotify('STOPPING=1');
    signalled = true;
    stopAsked();
  };
  const handlers = STOP_SIGNALS.map((s) => [s, () => onSignal(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  try {
    const runDir = ensureRunDir(cliRunDir(flags.runDir));
    const logDir = ensureLogDir(flags.logDir);
    fs.mkdirSync(daemonDir(runDir), { recursive: true, mode: 0o700 });
    fs.chmodSync(daemonDir(runDir), 0o700);
    report.detail(`chardev ${VERSION} daemon on Node ${process.version}, ${platformName()}; run directory ${runDir}, log directory ${logDir}`);
    const untuned = tuneAllocator();
    if (untuned !== undefined) report.detail(`daemon: allocator left as it is: ${untuned}`);
    const expected = daemonSocketPath(runDir);
    const inherited = inheritedListener(expected);
    let host: DomainHost | undefined;
    let control: QmpService;
    try {
      control = await startControl(inherited ?? expected, () => {
        if (host === undefined) throw new CliError('the daemon is starting');
        return host;
      });
    } catch (e) {
      if (e instanceof ChardevError && e.code === 'ERR_BACKEND_BUSY')
        throw new CliError(`daemon: a chardev daemon already runs for ${runDir} (${expected} answers)`, EXIT_CHARDEV);
      throw e;
    }
    const socketPath = control.path;
    if (inherited !== undefined) report.detail(`daemon: listening on the socket systemd passed (ListenStream= must be ${socketPath})`);
    const h = new DomainHost({
      runDir,
      logDir,
      statePath: daemonStatePath(runDir),
      controlSocket: socketPath,
      report,
      ...(web !== undefined ? { web } : {}),
      onWeb: (server) => {
        // The token only to a person at a terminal (as serve.ts does); web.json and `chardev status NAME` have it.
        const where = cli.terminal ? server.url : `${server.url.replace(/\?token=[^#&]*/, '')} (token: ${daemonWebPath(runDir)})`;
        report.info(`daemon: browser console ${where}: every domain at /domain/NAME/`);
      },
      onEvent: (domain, event, data) => domainEvent(control, domain, event, data),
      onChange: (change, name) => {
        // A command a domain answers that the list does not name yet is passed on too.
        if (change === 'started') domainCommands(control, () => h, h.served(name).qmp.commandNames());
        control.broadcast(change === 'started' ? 'CHARDEV_DOMAIN_STARTED' : 'CHARDEV_DOMAIN_STOPPED', { domain: name });
        if (change === 'stopped') report.detail(`daemon: domain ${name} stopped`);
      },
    });
    host = h;
    try {
      if (web !== undefined) await h.startWeb();
      const { restored, dropped } = await h.restore();
      if (restored.length > 0) report.info(`daemon: took back ${restored.length} domain${restored.length === 1 ? '' : 's'}: ${restored.join(', ')}`);
      if (dropped.length > 0) report.warn(`daemon: ${dropped.length} domain${dropped.length === 1 ? '' : 's'} not taken back: ${dropped.join(', ')}`);
      report.info(`daemon: control socket ${socketPath} (QMP; chardev qemu --daemon FILE -- qemu-system-… starts a guest here)`);
      const r = sdNotify(`READY=1\nSTATUS=${h.size} domain${h.size === 1 ? '' : 's'}\nMAINPID=${process.pid}`);
      if (r.sent) report.detail(`daemon: told systemd READY=1 (via ${r.via})`);
      else if (r.reason === 'failed') report.warn(`daemon: cannot tell systemd it is ready: ${r.error}`);
      releaseFreedHeap();
      await stopped;
    } finally {
      await h.close();
      await control.close();
    }
    report.detail('daemon: stopped (the guests run on; the next daemon takes them back)');
  } catch (e) {
    throw asChardevFailure(e);
  } finally {
    for (const [s, hd] of handlers) process.off(s, hd);
  }
}

/** How often `chardev stop` looks whether a domain running alone has gone. */
const STOP_POLL_MS = 100;

export async function stopAction(name: string | undefined, flags: StopFlags, { write }: CliIo): Promise<void> {
  const runDir = cliRunDir(flags.runDir);
  const seconds = Number(flags.timeout ?? '10');
  if (!Number.isFinite(seconds) || seconds < 0) throw new CliError(`stop: --timeout must be a number of seconds, not '${flags.timeout ?? ''}'`, EXIT_USAGE);
  const status = findDomain(runDir, name);
  if (status.daemonSocket !== undefined) {
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(status.daemonSocket);
    } catch (e) {
      throw new CliError(`stop: domain '${status.name}': ${(e as Error).message}`);
    }
    try {
      await qmp.execute('x-domain-stop', { domain: status.name, 'timeout-ms': Math.round(seconds * 1000) }, seconds * 1000 + 15000);
    } catch (e) {
      throw new CliError(`stop: domain '${status.name}': ${(e as Error).message}`);
    } finally {
      await qmp.close();
    }
  } else {
    // Running alone: its own SIGTERM path stops the guest and drains (as systemd would).
    try {
      process.kill(status.pid, 'SIGTERM');
    } catch (e) {
      throw new CliError(`stop: domain '${status.name}' (pid ${status.pid}): ${(e as Error).message}`);
    }
    const deadline = Date.now() + seconds * 1000 + 15000;
    while (readStatus(runDir, status.name) !== undefined) {
      if (Date.now() > deadline) throw new CliError(`stop: domain '${status.name}' (pid ${status.pid}) is still running`);
      await new Promise((r) => setTimeout(r, STOP_POLL_MS));
    }
  }
  write(`Domain '${status.name}' stopped\n`);
}
