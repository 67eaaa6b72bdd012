/**
 * `chardev qemu FILE [--monitor ALIAS]… [--hub A,B…]… -- qemu-system-… ARGS…`: its
 * arguments. What it does is in qemu-action.ts, loaded only when it runs.
 */
import type { Command } from 'commander';
import type { CliIo } from '../io.ts';
import { addDriverOptions } from '../driver-flags.ts';
// Type-only: erased, so the action still loads only when its command runs.
import type { QemuFlags } from './qemu-action.ts';

const repeat = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

export function registerQemuCommand(program: Command, io: CliIo): void {
  addDriverOptions(
    program
      .command('qemu')
      .usage('FILE [options] -- qemu-system-ARCH ARGS…')
      .argument('<file>', "domain XML ('-' for stdin)")
      .argument('<qemu...>', 'the QEMU command line (after --): binary, machine, memory, kernel, disks, display…')
      .option('--monitor <alias>', "put QEMU's HMP monitor on this device instead of a guest frontend (repeatable)", repeat)
      .option(
        '--hub <aliases>',
        "make these devices (comma-separated) one guest port: the first one's frontend, output to all, input from any (repeatable)",
        repeat,
      )
      .option(
        '--log-dir <dir>',
        "where the domain log (QEMU's stdout/stderr, stdio devices) goes (default $LOGS_DIRECTORY, $XDG_STATE_HOME/chardev or ~/.local/state/chardev)",
      )
      .option(
        '--web <host:port>',
        "serve the browser console there (default: the first vc device's <cd:web>, else 127.0.0.1 and a free port; without a vc device only with this option)",
      )
      .option(
        '--run-dir <dir>',
        'where the status of the running domain and the sockets to QEMU go (default $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)',
      )
      .option('--syntax <syntax>', "QEMU's -device syntax: json (default, as libvirt for current QEMU) or keyval")
      .option(
        '--daemon',
        'hand the domain to the running chardev daemon of the run directory, which starts and supervises QEMU; returns once QEMU connected every device',
      )
      .option('-q, --quiet', 'print only warnings and errors (stderr)')
      .option('-v, --verbose', 'also print clients coming and going, signals and the stop')
      .description("run QEMU with the domain's character devices served by chardev (history, many clients, browser console, logs)"),
  ).action(async (fileArg: string, qemuArg: string[], opts: QemuFlags, cmd: Command) =>
    (await import('./qemu-action.ts')).qemuAction(fileArg, qemuArg, opts, cmd, io),
  );
}
