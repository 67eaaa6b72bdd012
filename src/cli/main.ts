/**
 * The `chardev` command: a thin shell that parses arguments, calls the
 * library and prints results. Errors are one line on stderr, never a stack.
 */
import { Command, CommanderError } from 'commander';
import { registerConfigCommands } from './commands/config.ts';
import { registerRunCommand } from './commands/run.ts';
import { registerConsoleCommands } from './commands/console.ts';
import { errorLine, exitCodeOf } from './io.ts';

export function buildProgram(write: (s: string) => void = (s) => process.stdout.write(s)): Command {
  const program = new Command();
  program
    .name('chardev')
    .description("host interfaces for virtual machines' character devices, configured with libvirt domain XML")
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerConfigCommands(program, write);
  registerRunCommand(program, write);
  registerConsoleCommands(program, write);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has already printed help or its own one-line message.
      return e.exitCode === 0 ? 0 : 2;
    }
    const line = errorLine(e);
    // The line names the file (or the command) itself: FILE:LINE: <element> (alias): message.
    if (line) process.stderr.write(`${line}\n`);
    return exitCodeOf(e);
  }
}

process.exitCode = await main(process.argv.slice(2));
