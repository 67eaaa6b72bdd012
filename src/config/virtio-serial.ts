/**
 * virtio-serial addresses for virtio channels and consoles, as libvirt's QEMU
 * driver assigns them (qemuDomainAssignVirtioSerialAddresses): explicit
 * ports are reserved first, then consoles (which never keep an address) and
 * channels (ports from 1) take the first free port, adding a controller when
 * every port is taken.
 */
import { ConfigError } from '../errors.ts';
import type { AddressDef, ChrDeviceDef, DomainChardevsDef, VirtioSerialControllerDef } from './types.ts';

const DEFAULT_PORTS = 31;

interface ControllerPorts {
  index: number;
  used: boolean[];
}

function addrNumber(addr: AddressDef | undefined, name: string): number | undefined {
  const v = addr?.attrs.find(([k]) => k === name)?.[1];
  return v === undefined ? undefined : Number(v);
}

function isVirtio(dev: ChrDeviceDef): boolean {
  return (dev.kind === 'channel' || dev.kind === 'console') && dev.target.type === 'virtio';
}

function xmlError(detail: string, dev: ChrDeviceDef): ConfigError {
  return new ConfigError('ERR_CONFIG_INVALID', 'XML error', detail, {
    file: '<domain>',
    ...(dev.line !== undefined ? { line: dev.line } : {}),
  });
}

export function assignVirtioSerialAddresses(def: DomainChardevsDef, file = '<domain>'): void {
  const devices = [...def.channels, ...def.consoles.filter((c) => c.aliasOfSerial === undefined)].filter(isVirtio);
  if (devices.length === 0) return;

  // Implicit controllers: every index a virtio device refers to must exist.
  for (const dev of devices) {
    const idx = dev.info.address?.type === 'virtio-serial' ? (addrNumber(dev.info.address, 'controller') ?? 0) : 0;
    if (!def.virtioSerialControllers.some((c) => c.index === idx)) def.virtioSerialControllers.push({ index: idx });
  }
  const set: ControllerPorts[] = def.virtioSerialControllers
    .map((c: VirtioSerialControllerDef) => ({ index: c.index, used: new Array<boolean>(c.ports ?? DEFAULT_PORTS).fill(false) }))
    .sort((a, b) => a.index - b.index);

  const withFile = (e: ConfigError) =>
    new ConfigError(e.code as 'ERR_CONFIG_INVALID', e.libvirtClass, e.detail, { ...e.location, file });

  // Complete addresses (a non-zero port) are reserved first.
  for (const dev of devices) {
    const addr = dev.info.address;
    if (addr?.type !== 'virtio-serial') continue;
    const port = addrNumber(addr, 'port') ?? 0;
    if (port === 0) continue;
    const ctrlIdx = addrNumber(addr, 'controller') ?? 0;
    const ctrl = set.find((c) => c.index === ctrlIdx);
    if (!ctrl) throw withFile(xmlError(`virtio serial controller ${ctrlIdx} is missing`, dev));
    if (port >= ctrl.used.length) throw withFile(xmlError(`virtio serial controller ${ctrlIdx} does not have port ${port}`, dev));
    if (ctrl.used[port]) throw withFile(xmlError(`virtio serial port ${port} on controller ${ctrlIdx} is already occupied`, dev));
    ctrl.used[port] = true;
  }

  const assign = (dev: ChrDeviceDef, allowZero: boolean): void => {
    const addr = dev.info.address;
    if (addr?.type === 'virtio-serial' && (addrNumber(addr, 'port') ?? 0) !== 0) return;
    const portOnly = !allowZero && addr?.type === 'virtio-serial';
    let ctrlIdx: number;
    let port: number;
    if (portOnly) {
      ctrlIdx = addrNumber(addr, 'controller') ?? 0;
      const ctrl = set.find((c) => c.index === ctrlIdx);
      if (!ctrl) throw withFile(new ConfigError('ERR_CONFIG_INVALID', 'internal error', `virtio-serial controller ${ctrlIdx} not available`, { file }));
      port = ctrl.used.findIndex((u, i) => i > 0 && !u);
      if (port < 0) throw withFile(xmlError(`Unable to find a free port on virtio-serial controller ${ctrlIdx}`, dev));
      ctrl.used[port] = true;
    } else {
      const start = allowZero ? 0 : 1;
      let found: ControllerPorts | undefined;
      port = -1;
      for (const c of set) {
        const p = c.used.findIndex((u, i) => i >= start && !u);
        if (p >= 0) {
          found = c;
          port = p;
          break;
        }
      }
      if (!found) {
        let i = 0;
        while (def.virtioSerialControllers.some((c) => c.index === i)) i++;
        def.virtioSerialControllers.push({ index: i });
        found = { index: i, used: new Array<boolean>(DEFAULT_PORTS).fill(false) };
        set.push(found);
        set.sort((a, b) => a.index - b.index);
        port = start;
      }
      ctrlIdx = found.index;
      // libvirt never marks port 0 (consoles share it).
      if (port !== 0) found.used[port] = true;
    }
    // Consoles are assigned into a temporary in libvirt: they never keep an address.
    if (allowZero) return;
    dev.info.address = {
      type: 'virtio-serial',
      attrs: [
        ['controller', String(ctrlIdx)],
        ['bus', '0'],
        ['port', String(port)],
      ],
    };
  };

  for (const dev of devices) if (dev.kind === 'console') assign(dev, true);
  for (const dev of devices) if (dev.kind === 'channel') assign(dev, false);
}
