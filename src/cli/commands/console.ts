/**
 * `chardev console [DOMAIN] [DEVICE] [--readonly] [--force]`, `chardev list`,
 * `chardev status`: their arguments. What they do is in console-action.ts, loaded only
 * when one of them runs.
 */
import type { Command } from 'commander';
import type { CliIo } from '../io.ts';
// Type-only: erased, so the actions still load only when their command runs.
import type { ConsoleFlags, ListFlags } from './console-action.ts';

const RUN_DIR_HELP = 'where running domains keep their status (default $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)';
const actions = (): Promise<typeof import('./console-action.ts')> => import('./console-action.ts');

export function registerConsoleCommands(program: Command, io: CliIo): void {
  program
    .command('console')
    .argument('[domain]', 'a running domain (default: the only one running)')
    .argument('[device]', 'alias or chardev id (default: the first serial, or console)')
    .option('--readonly', 'watch without writing')
    .option('--force', 'take the writer role from whoever has it')
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .description("attach this terminal to a running domain's device, like virsh console (escape: ^]; at the start of a line ~B sends a BREAK, ~? lists more)")
    .action(async (name: string | undefined, device: string | undefined, flags: ConsoleFlags) => (await actions()).consoleAction(name, device, flags));

  program
    .command('list')
    .option('--json', 'as JSON')
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .description('running domains, like virsh list')
    .action(async (flags: ListFlags) => (await actions()).listAction(flags, io));

  program
    .command('status')
    .argument('[domain]', 'a running domain (default: the only one running)')
    .option('--json', 'as JSON')
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .description('per device: where it is, bytes in and out, drops, clients (through the control socket); the web console URL with its token')
    .action(async (name: string | undefined, flags: ListFlags) => (await actions()).statusAction(name, flags, io));
}
