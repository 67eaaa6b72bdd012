/**
 * `chardev validate`, `chardev dumpxml`, `chardev qemu-args`: their arguments. What they do
 * is in config-action.ts, loaded only when one of them runs.
 */
import type { Command } from 'commander';
import { addDriverOptions } from '../driver-flags.ts';
import { CliError, EXIT_USAGE, type CliIo } from '../io.ts';
// Type-only: erased, so the actions still load only when their command runs.
import type { DumpxmlFlags, QemuArgsFlags, ValidateFlags } from './config-action.ts';

const actions = (): Promise<typeof import('./config-action.ts')> => import('./config-action.ts');

export function registerConfigCommands(program: Command, io: CliIo): void {
  addDriverOptions(
    program
      .command('validate')
      .argument('<file>', "domain XML, or a single <serial>/<parallel>/<console>/<channel> element ('-' for stdin)")
      .description("check a document as libvirt 9.0.0 would; exit status 1 and one line 'FILE:LINE: <element> (alias): message' if it refuses it")
      .option('--json', 'print the devices found (or the error) as JSON'),
  ).action(async (file: string, opts: ValidateFlags) => (await actions()).validate(file, opts, io));

  addDriverOptions(
    program
      .command('dumpxml')
      .argument('<domain>', "a running domain's name, or a domain XML file ('-' for stdin)")
      .description('print the document as libvirt formats it: inactive XML (after define) by default, or live XML')
      .option('--inactive', 'the persistent definition (default)')
      .option('--live', 'the running definition: pty paths, tty= on console 0, aliases, bound ports')
      .option('--run-dir <dir>', 'where running domains keep their status (default $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)'),
  ).action(async (file: string, opts: DumpxmlFlags) => {
    if (opts.inactive && opts.live) throw new CliError('dumpxml: --inactive and --live are mutually exclusive', EXIT_USAGE);
    await (await actions()).dumpxml(file, opts, io);
  });

  addDriverOptions(
    program
      .command('qemu-args')
      .argument('<file>', "domain XML ('-' for stdin)")
      .description('print the -chardev and frontend -device arguments libvirt 9.0.0 builds (paths where libvirt passes descriptors)')
      .option('--syntax <syntax>', "'json' (-device '{…}', current QEMU) or 'keyval' (-device isa-serial,…)", 'json')
      .option('--json', 'print the arguments as a JSON array of argv strings'),
  ).action(async (file: string, opts: QemuArgsFlags) => {
    if (opts.syntax !== 'json' && opts.syntax !== 'keyval') {
      throw new CliError(`qemu-args: --syntax must be 'json' or 'keyval', not '${opts.syntax}'`, EXIT_USAGE);
    }
    await (await actions()).qemuArgs(file, opts, io);
  });
}
