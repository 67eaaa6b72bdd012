/**
 * What `chardev validate`, `dumpxml` and `qemu-args` do: thin shells over src/config and
 * src/qemu. Each loads what only it needs when it runs (validate is the one whose start-up
 * time is measured: it needs the XML loader and nothing else).
 */
import { existsSync } from 'node:fs';
import type { ArgSyntax } from '../../qemu/command.ts';
import { hostDevices, chardevId } from '../../config/names.ts';
import { cliRunDir } from '../args.ts';
import { CliError, type CliIo } from '../io.ts';
import { readDomain } from '../read-domain.ts';
import { driverOptions, type DriverFlags } from '../driver-flags.ts';

export interface ValidateFlags extends DriverFlags {
  json?: boolean;
}
export interface DumpxmlFlags extends DriverFlags {
  inactive?: boolean;
  live?: boolean;
  runDir?: string;
}
export interface QemuArgsFlags extends DriverFlags {
  syntax: string;
  json?: boolean;
}

export function validate(file: string, opts: ValidateFlags, { write }: CliIo): void {
  let loaded;
  try {
    loaded = readDomain(file, driverOptions(opts));
  } catch (e) {
    if (!opts.json) throw e;
    const err = e as { code?: string; message?: string; detail?: string; location?: { line?: number } };
    write(
      `${JSON.stringify(
        {
          valid: false,
          file,
          error: { code: err.code ?? 'ERR_INTERNAL', message: err.message, detail: err.detail ?? err.message, line: err.location?.line ?? null },
        },
        null,
        2,
      )}\n`,
    );
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
    write(`${JSON.stringify({ valid: true, file, domain: loaded.def.name ?? null, devices }, null, 2)}\n`);
  } else {
    write(
      `${file}: valid (${devices.length} character device${devices.length === 1 ? '' : 's'}: ${devices.map((d) => `${d.alias} ${d.type}`).join(', ') || 'none'})\n`,
    );
  }
}

export async function dumpxml(file: string, opts: DumpxmlFlags, { write }: CliIo): Promise<void> {
  const [{ readStatus }, { formatDomain }] = await Promise.all([import('../../core/status.ts'), import('../../config/format.ts')]);
  const live = opts.live ?? false;
  // A name that is not a file: the running domain of that name, as `virsh dumpxml NAME`.
  if (file !== '-' && !file.includes('/') && !existsSync(file)) {
    const status = readStatus(cliRunDir(opts.runDir), file);
    if (status === undefined) throw new CliError(`dumpxml: no running domain '${file}' and no such file`);
    write(live ? status.liveXml : status.inactiveXml);
    return;
  }
  const loaded = readDomain(file, { ...driverOptions(opts), live });
  write(formatDomain(loaded, { live }));
}

export async function qemuArgs(file: string, opts: QemuArgsFlags, { write }: CliIo): Promise<void> {
  const { buildQemuArgs, formatQemuArgs } = await import('../../qemu/command.ts');
  const loaded = readDomain(file, driverOptions(opts));
  const args = buildQemuArgs(loaded, { syntax: opts.syntax as ArgSyntax });
  write(opts.json ? `${JSON.stringify(args.flat())}\n` : formatQemuArgs(args));
}
