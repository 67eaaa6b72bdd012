/**
 * `chardev run [FILE] [--tty] [--shell] [--log-dir DIR] [-- COMMAND ARGS…]`: its arguments.
 * What it does is in run-action.ts, loaded only when it runs.
 */
import type { Command } from 'commander';
import type { CliIo } from '../io.ts';
import { addDriverOptions } from '../driver-flags.ts';
// Type-only: erased, so the action still loads only when its command runs.
import type { RunFlags } from './run-action.ts';

export { defaultLogDir, parseWebAddress, splitOperands, type WebAddress } from '../args.ts';

export function registerRunCommand(program: Command, io: CliIo): void {
  addDriverOptions(
    program
      .command('run')
      .usage('[FILE] [options] [--shell | -- COMMAND ARGS…]')
      .argument('[file]', "domain XML ('-' for stdin); default: the embedded domain (pty console, owner-only socket, browser console, logs)")
      .argument('[command...]', 'the guest of the first serial (or console) device')
      .option('--shell', 'the guest is your $SHELL on a pty of its own (the default for the embedded domain; with a FILE, say so)')
      .option('--tty', 'give COMMAND a pty of its own (for interactive programs)')
      .option('--log-dir <dir>', 'where the domain log and default logs go (default $LOGS_DIRECTORY, $XDG_STATE_HOME/chardev or ~/.local/state/chardev)')
      .option(
        '--attach <alias>',
        'attach COMMAND to this device (repeatable; default: the first serial, or console)',
        (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
      )
      .option(
        '--telnet <host:port>',
        'the embedded domain only: also serve the shell on a telnet server there (port 0 picks a free one); anyone who reaches it gets the shell',
      )
      .option(
        '--web <host:port>',
        "serve the browser console there (default: the first vc device's <cd:web>, else 127.0.0.1 and a free port; without a vc device only with this option)",
      )
      .option(
        '--run-dir <dir>',
        "where the status, control sockets and the embedded domain's socket go (default $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)",
      )
      .option('-q, --quiet', 'print only warnings and errors (stderr)')
      .option('-v, --verbose', 'also print clients coming and going, signals and the stop')
      .description('start the host interfaces of a domain and run COMMAND (or your shell) as the guest of its first serial device'),
  ).action(async (fileArg: string | undefined, commandArg: string[], opts: RunFlags, cmd: Command) =>
    (await import('./run-action.ts')).runAction(fileArg, commandArg, opts, cmd, io),
  );
}
