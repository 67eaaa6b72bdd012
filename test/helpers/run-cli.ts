/**
 * `chardev run` without cli/main.ts: the same commander setup and error handling, with
 * only the run command registered. Lets the end-to-end tests exercise run.ts before (and
 * independently of) its registration in main.ts.
 */
import { Command, CommanderError } from 'commander';
import { registerRunCommand } from '../../src/cli/commands/run.ts';
import { errorLine, exitCodeOf } from '../../src/cli/io.ts';

const program = new Command().name('chardev').exitOverride();
registerRunCommand(program, (s) => process.stdout.write(s));
try {
  await program.parseAsync(process.argv.slice(2), { from: 'user' });
  process.exitCode = 0;
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else {
    const line = errorLine(e);
    if (line) process.stderr.write(`${line}\n`);
    process.exitCode = exitCodeOf(e);
  }
}
