/**
 * `chardev qemu FILE [--monitor ALIAS]… [--hub A,B…]… -- qemu-system-… ARGS…`: start the
 * domain's host interfaces, then QEMU with one socket chardev per guest port connected to
 * them (src/qemu/launch.ts). Stopping chardev stops QEMU (QMP quit); QEMU exiting stops
 * chardev, with QEMU's status. QEMU's stdout and stderr go to the domain log.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { startDomain } from '../../core/domain.ts';
import { tuneAllocatorForStreaming } from '../../platform/index.ts';
import { defaultRunDir, ensureRunDir } from '../../core/status.ts';
import { ChardevError } from '../../errors.ts';
import { describePorts, launchQemu, planQemuPorts, qemuExitMessage, type QemuPort, type QemuProcess } from '../../qemu/launch.ts';
import { CliError, readDomain } from '../io.ts';
import { ensureLogDir, parseWebAddress, refuseRunning, rootRawArgs, serveDomain, splitOperands, type ServedDomain } from '../serve.ts';
import { addDriverOptions, driverOptions, type DriverFlags } from './config.ts';

/** How long QEMU gets to quit (QMP quit, else SIGTERM) before SIGKILL. */
const QUIT_TIMEOUT_MS = 10000;

interface QemuFlags extends DriverFlags {
  logDir?: string;
  runDir?: string;
  web?: string;
  monitor?: string[];
  hub?: string[];
  syntax?: string;
}

const repeat = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

export function registerQemuCommand(program: Command, write: (s: string) => void): void {
  addDriverOptions(program
    .command('qemu')
    .usage('FILE [options] -- qemu-system-ARCH ARGS…')
    .argument('<file>', "domain XML ('-' for stdin)")
    .argument('<qemu...>', 'the QEMU command line (after --): binary, machine, memory, kernel, disks, display…')
    .option('--monitor <alias>', "put QEMU's HMP monitor on this device instead of a guest frontend (repeatable)", repeat)
    .option('--hub <aliases>', 'make these devices (comma-separated) one guest port: the first one\'s frontend, output to all, input from any (repeatable)', repeat)
    .option('--log-dir <dir>', "where the domain log (QEMU's stdout/stderr, stdio devices) goes (default $XDG_STATE_HOME/chardev or ~/.local/state/chardev)")
    .option('--web <host:port>', "serve the browser console there (default: the first vc device's <cd:web>, else 127.0.0.1 and a free port; without a vc device only with this option)")
    .option('--run-dir <dir>', 'where the status of the running domain and the sockets to QEMU go (default $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)')
    .option('--syntax <syntax>', "QEMU's -device syntax: json (default, as libvirt for current QEMU) or keyval")
    .description("run QEMU with the domain's character devices served by chardev (history, many clients, browser console, logs)"))
    .action(async (fileArg: string, qemuArg: string[], opts: QemuFlags, cmd: Command) => {
      const { file, command } = splitOperands([fileArg, ...qemuArg], rootRawArgs(cmd), 'qemu');
      if (file === undefined || command.length === 0) {
        throw new CliError('qemu: usage: chardev qemu FILE [options] -- qemu-system-ARCH ARGS…', 2);
      }
      const syntax = opts.syntax ?? 'json';
      if (syntax !== 'json' && syntax !== 'keyval') throw new CliError(`qemu: --syntax must be json or keyval, not '${syntax}'`, 2);
      const logDir = ensureLogDir(opts.logDir);
      const driver = driverOptions(opts);
      const webFlag = opts.web === undefined ? undefined : parseWebAddress(opts.web, 'qemu');
      const loaded = readDomain(file, driver);
      let ports: QemuPort[];
      try {
        ports = planQemuPorts(loaded, { monitors: opts.monitor ?? [], hubs: (opts.hub ?? []).map((h) => h.split(',').filter((a) => a !== '')) });
      } catch (e) {
        throw e instanceof ChardevError && e.code === 'ERR_USAGE' ? new CliError(e.message, 2) : e;
      }
      const runDir = ensureRunDir(path.resolve(opts.runDir ?? defaultRunDir()));
      refuseRunning(runDir, loaded.def.name ?? 'domain');

      // A long-lived relay: keep freed chunk memory for reuse (src/platform/tuning.ts).
      tuneAllocatorForStreaming();
      const domain = await startDomain(loaded, {
        logDir,
        onError: (err) => process.stderr.write(`${err.message}\n`),
      });
      let qemu: QemuProcess | undefined;
      let signalled = false;
      const onSignal = (): void => {
        signalled = true;
        void qemu?.stop(QUIT_TIMEOUT_MS);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      process.on('SIGHUP', onSignal);
      let served: ServedDomain | undefined;
      try {
        served = await serveDomain(domain, loaded, { runDir, web: webFlag, write });
        for (const line of describePorts(ports)) write(`${line}\n`);
        try {
          qemu = await launchQemu(domain, { argv: command, ports, runDir, syntax });
        } catch (e) {
          // Like a shell: 127 when the program cannot be started.
          throw e instanceof ChardevError && e.code === 'ERR_GUEST' ? new CliError(e.message, 127) : e;
        }
        if (signalled) void qemu.stop(QUIT_TIMEOUT_MS);
        const logPath = domain.domainLog().path;
        write(`qemu: ${path.basename(command[0] ?? 'qemu')} started (pid ${qemu.pid}); its output goes to ${logPath}\n`);
        const started = qemu;
        started.ready.then(
          () => write(`qemu: every device connected (${ports.length} port${ports.length === 1 ? '' : 's'} and the control socket)\n`),
          () => {},
        );
        const exit = await started.exited;
        if (exit.status !== 0) {
          const killed = exit.stopRequested && exit.signal === 'SIGKILL' ? ` (it did not quit within ${QUIT_TIMEOUT_MS / 1000} s)` : '';
          throw new CliError(`qemu: ${qemuExitMessage(command[0] ?? 'qemu', exit)}${killed}`, exit.status);
        }
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.off('SIGHUP', onSignal);
        // Whatever went wrong, QEMU does not outlive us.
        if (qemu !== undefined) await qemu.stop(QUIT_TIMEOUT_MS);
        if (served !== undefined) await served.close();
        else await domain.stop();
      }
    });
}
