/** Device aliases and chardev ids, as libvirt's QEMU driver names them. */
import type { ChrDeviceDef, DomainChardevsDef } from './types.ts';

/**
 * `serial0`, `parallel1`, `console2`, `channel3`: the index among elements of
 * the same kind. A console that is serial N seen again answers to `serialN`.
 */
export function deviceAlias(dev: ChrDeviceDef, index: number): string {
  if (dev.kind === 'console' && dev.aliasOfSerial !== undefined) return `serial${dev.aliasOfSerial}`;
  return dev.info.userAlias ?? `${dev.kind}${index}`;
}

/** QEMU's chardev id: `char` + alias. */
export function chardevId(alias: string): string {
  return `char${alias}`;
}

/**
 * The alias a user's name for a device means: a chardev id (`charserial0`) or the alias
 * itself (`serial0`), as QMP and the commands take either. `char` alone is a name, not an
 * id with an empty alias.
 */
export function aliasOfName(name: string): string {
  return name.startsWith('char') && name.length > 4 ? name.slice(4) : name;
}

export interface NamedDevice {
  readonly dev: ChrDeviceDef;
  readonly alias: string;
  /** Index among elements of the same kind. */
  readonly index: number;
}

/**
 * Every device with its alias, in the order libvirt builds their chardevs:
 * serials, parallels, channels, consoles.
 */
export function namedDevices(def: DomainChardevsDef): NamedDevice[] {
  const out: NamedDevice[] = [];
  const add = (list: readonly ChrDeviceDef[]) => list.forEach((dev, index) => out.push({ dev, alias: deviceAlias(dev, index), index }));
  add(def.serials);
  add(def.parallels);
  add(def.channels);
  add(def.consoles);
  return out;
}

/**
 * Devices that have a host interface of their own: everything except a
 * console that is another serial port seen again.
 */
export function hostDevices(def: DomainChardevsDef): NamedDevice[] {
  return namedDevices(def).filter(({ dev }) => !(dev.kind === 'console' && dev.aliasOfSerial !== undefined));
}
