/** `chardev validate`, `chardev dumpxml`, `chardev qemu-args`: thin shells over src/config and src/qemu. */
import type { Command } from 'commander';
import { formatDomain } from '../../config/format.ts';
import { hostDevices, chardevId } from '../../config/names.ts';
import type { LoadOptions } from '../../config/domain.ts';
import { buildQemuArgs, formatQemuArgs, type ArgSyntax } from '../../qemu/command.ts';
import { existsSync } from 'node:fs';
import { defaultRunDir, readStatus } from '../../core/status.ts';
import { readDomain, CliError } from '../io.ts';

export interface DriverFlags {
  tls?: boolean;
  tlsVerify?: boolean;
  tlsDir?: string;
  channelDir?: string;
}

export function driverOptions(flags: DriverFlags): Omit<LoadOptions, 'file'> {
  const o: Omit<LoadOptions, 'file'> = {};
  if (flags.tls !== undefined) o.tlsDefault = flags.tls;
  if (flags.tlsVerify !== undefined) o.tlsVerify = flags.tlsVerify;
  if (flags.tlsDir !== undefined) o.tlsCertDir = flags.tlsDir;
  if (flags.channelDir !== undefined) o.channelTargetDir = flags.channelDir;
  return o;
}

export function addDriverOptions(cmd: Command): Command {
  return cmd
    .option('--tls', 'TLS for tcp devices that do not say tls= (qemu.conf chardev_tls=1)')
    .option('--no-tls-verify', 'do not require client certificates on TLS servers (qemu.conf chardev_tls_x509_verify=0)')
    .option('--tls-dir <dir>', 'x509 credentials directory (default /etc/pki/libvirt-chardev)')
    .option('--channel-dir <dir>', 'where generated virtio channel sockets go (qemu.conf channel_target_dir)');
}

export function registerConfigCommands(program: Command, write: (s: string) => void): void {
  addDriverOptions(
    program
      .command('validate')
      .argument('<file>', "domain XML, or a single <serial>/<parallel>/<console>/<channel> element ('-' for stdin)")
      .description("check a document as libvirt 9.0.0 would; exit status 1 and one line 'FILE:LINE: <element> (alias): message' if it refuses it")
      .option('--json', 'print the devices found (or the error) as JSON'),
  ).action((file: string, opts: DriverFlags & { json?: boolean }) => {
    let loaded;
    try {
      loaded = readDomain(file, driverOptions(opts));
    } catch (e) {
      if (!opts.json) throw e;
      const err = e as { code?: string; message?: string; detail?: string; location?: { line?: number } };
      write(JSON.stringify({ valid: false, file, error: { code: err.code ?? 'ERR_INTERNAL', message: err.message, detail: err.detail ?? err.message, line: err.location?.line ?? null } }, null, 2) + '\n');
      throw new CliError('', 1);
    }
    const devices = hostDevices(loaded.def).map(({ dev, alias }) => ({
      alias,
      chardevId: chardevId(alias),
      element: dev.kind,
      type: dev.source.type,
      line: dev.line ?? null,
    }));
    if (opts.json) {
      write(JSON.stringify({ valid: true, file, domain: loaded.def.name ?? null, devices }, null, 2) + '\n');
    } else {
      write(`${file}: valid (${devices.length} character device${devices.length === 1 ? '' : 's'}: ${devices.map((d) => `${d.alias} ${d.type}`).join(', ') || 'none'})\n`);
    }
  });

  addDriverOptions(
    program
      .command('dumpxml')
      .argument('<domain>', "a running domain's name, or a domain XML file ('-' for stdin)")
      .description('print the document as libvirt formats it: inactive XML (after define) by default, or live XML')
      .option('--inactive', 'the persistent definition (default)')
      .option('--live', 'the running definition: pty paths, tty= on console 0, aliases, bound ports')
      .option('--run-dir <dir>', 'where running domains keep their status (default $XDG_RUNTIME_DIR/chardev or /tmp/chardev-UID)'),
  ).action((file: string, opts: DriverFlags & { inactive?: boolean; live?: boolean; runDir?: string }) => {
    if (opts.inactive && opts.live) throw new CliError('dumpxml: --inactive and --live are mutually exclusive');
    const live = opts.live ?? false;
    // A name that is not a file: the running domain of that name, as `virsh dumpxml NAME`.
    if (file !== '-' && !file.includes('/') && !existsSync(file)) {
      const status = readStatus(opts.runDir ?? defaultRunDir(), file);
      if (status === undefined) throw new CliError(`dumpxml: no running domain '${file}' and no such file`);
      write(live ? status.liveXml : status.inactiveXml);
      return;
    }
    const loaded = readDomain(file, { ...driverOptions(opts), live });
    write(formatDomain(loaded, { live }));
  });

  addDriverOptions(
    program
      .command('qemu-args')
      .argument('<file>', "domain XML ('-' for stdin)")
      .description('print the -chardev and frontend -device arguments libvirt 9.0.0 builds (paths where libvirt passes descriptors)')
      .option('--syntax <syntax>', "'json' (-device '{…}', current QEMU) or 'keyval' (-device isa-serial,…)", 'json')
      .option('--json', 'print the arguments as a JSON array of argv strings'),
  ).action((file: string, opts: DriverFlags & { syntax: string; json?: boolean }) => {
    if (opts.syntax !== 'json' && opts.syntax !== 'keyval') {
      throw new CliError(`qemu-args: --syntax must be 'json' or 'keyval', not '${opts.syntax}'`);
    }
    const loaded = readDomain(file, driverOptions(opts));
    const args = buildQemuArgs(loaded, { syntax: opts.syntax as ArgSyntax });
    write(opts.json ? JSON.stringify(args.flat()) + '\n' : formatQemuArgs(args));
  });
}
