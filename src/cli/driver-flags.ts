/**
 * The options every command that loads a document takes in place of libvirt's qemu.conf
 * (TLS default, verification, credentials, the channel directory), and what they mean for
 * the loader. Shared by the commands' argument files and their actions.
 */
import type { Command } from 'commander';
import type { LoadOptions } from '../config/domain.ts';

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
