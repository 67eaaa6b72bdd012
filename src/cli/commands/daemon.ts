/**
 * `chardev daemon` (one process hosting every domain of a user or host) and `chardev stop
 * NAME`: their arguments. What they do is in daemon-action.ts, loaded only when one runs.
 */
import type { Command } from 'commander';
import type { CliIo } from '../io.ts';
// Type-only: erased, so the action still loads only when its command runs.
import type { DaemonFlags, StopFlags } from './daemon-action.ts';

const RUN_DIR_HELP = 'where running domains keep their status (default $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)';
const actions = (): Promise<typeof import('./daemon-action.ts')> => import('./daemon-action.ts');

export function registerDaemonCommands(program: Command, io: CliIo): void {
  program
    .command('daemon')
    .option('--run-dir <dir>', `${RUN_DIR_HELP}; the daemon's control socket and state file go to its daemon/ directory`)
    .option('--log-dir <dir>', 'where domain logs go (default $LOGS_DIRECTORY, $XDG_STATE_HOME/chardev or ~/.local/state/chardev)')
    .option(
      '--web <host:port>',
      'serve one browser console for every domain there (default: 127.0.0.1 and a free port, started when a domain has a vc device or <cd:web>); the token and port survive a restart',
    )
    .option('-q, --quiet', 'print only warnings and errors (stderr)')
    .option('-v, --verbose', "also print each domain's host interfaces, clients coming and going")
    .description('host any number of domains in one process (chardev qemu --daemon hands them over); QEMUs keep running across its restarts')
    .action(async (flags: DaemonFlags) => (await actions()).daemonAction(flags, io));

  program
    .command('stop')
    .argument('[domain]', 'a running domain (default: the only one running)')
    .option('--timeout <seconds>', 'how long QEMU (or the guest) gets to quit before it is killed', '10')
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .description('stop a running domain and its guest (QMP quit for QEMU), hosted by the daemon or running alone')
    .action(async (name: string | undefined, flags: StopFlags) => (await actions()).stopAction(name, flags, io));
}
