import type { DomainChardevsDef } from './types.ts';

/** Placeholder until the libvirt algorithm is reproduced. */
export function assignVirtioSerialAddresses(def: DomainChardevsDef): void {
  void def;
}
