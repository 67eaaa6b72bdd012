/**
 * The `chardev` command: a thin shell that parses arguments, calls the library and prints
 * results. Errors are one line on stderr, never a stack; exit statuses are listed in io.ts.
 *
 * Only commander and the commands' argument definitions load at start; what a command
 * does (and the library behind it) is imported when that command runs, so `chardev
 * validate` does not pay for the web server, nor `--help` for anything.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.ts';
import { registerConfigCommands } from './commands/config.ts';
import { registerRunCommand } from './commands/run.ts';
import { registerQemuCommand } from './commands/qemu.ts';
import { registerConsoleCommands } from './commands/console.ts';
import { registerDaemonCommands } from './commands/daemon.ts';
import { EXIT_USAGE, errorLine, exitCodeOf, type CliIo } from './io.ts';

export function buildProgram(
  write: (s: string) => void = (s) => process.stdout.write(s),
  writeErr: (s: string) => void = (s) => process.stderr.write(s),
  terminal = false,
): Command {
  const io: CliIo = { write, writeErr, terminal };
  const program = new Command();
  program
    .configureOutput({ writeOut: write, writeErr })
    .name('chardev')
    .description("host interfaces for virtual machines' character devices, configured with libvirt domain XML")
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerConfigCommands(program, io);
  registerRunCommand(program, io);
  registerQemuCommand(program, io);
  registerConsoleCommands(program, io);
  registerDaemonCommands(program, io);
  return program;
}

/** Where the CLI writes; the defaults are the process's own stdout and stderr. */
export interface CliOutput {
  stdout?: (s: string) => void;
  stderr?: (s: string) => void;
  /** Whether stdout is a terminal (the web token is printed only then); default: the process's stdout, when it is the one written. */
  terminal?: boolean;
}

/** Run the CLI on `argv` (without node and script) and return its exit status. */
export async function main(argv: string[], output: CliOutput = {}): Promise<number> {
  if (output.stdout === undefined) ignoreClosedPipe(process.stdout);
  if (output.stderr === undefined) ignoreClosedPipe(process.stderr);
  const writeErr = output.stderr ?? ((s: string) => process.stderr.write(s));
  const terminal = output.terminal ?? (output.stdout === undefined && process.stdout.isTTY === true);
  const program = buildProgram(output.stdout, writeErr, terminal);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has already printed help or its own one-line message.
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    const line = errorLine(e);
    // The line names the file (or the command) itself: FILE:LINE: <element> (alias): message.
    if (line) writeErr(`${line}\n`);
    return exitCodeOf(e);
  }
}

/**
 * A reader of our stdout or stderr that went away (a closed pipe, npm killed under `npm
 * start`) must not take a running domain down with an EPIPE: what we print is informative.
 */
function ignoreClosedPipe(stream: NodeJS.WriteStream): void {
  // Once per stream (tests call main() many times), whatever else listens: under tsx a
  // stream is piped into stdout, and pipe()'s error listener re-throws when it is alone.
  if (ignoring.has(stream)) return;
  ignoring.add(stream);
  stream.on('error', () => {});
}
const ignoring = new WeakSet<NodeJS.WriteStream>();

/** True when this module is the program itself (`node --import tsx src/cli/main.ts …`), not imported. */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

// bin/chardev.js imports this module and calls main() itself; tests import it too.
if (isEntryPoint()) process.exitCode = await main(process.argv.slice(2));
