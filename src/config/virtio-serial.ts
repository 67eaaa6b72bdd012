/**
 * virtio-serial addresses for virtio channels and consoles, as libvirt's QEMU
 * driver assigns them (qemuDomainAssignVirtioSerialAddresses): explicit
 * ports are reserved first, then consoles (which never keep an address) and
 * channels (ports from 1) take the first free port, adding a controller when
 * every port is taken.
 */
import { ConfigError } from '../errors.ts';
import { aliasAtParse, describeElement } from './parse.ts';
import type { AddressDef, ChrDeviceDef, DomainChardevsDef, VirtioSerialControllerDef } from './types.ts';

const DEFAULT_PORTS = 31;

/**
 * One controller's ports. Only the ports taken are stored (a document may
 * say ports='4000000000'), and `next` remembers that every port from 1 up to
 * it is taken: ports are only ever claimed, so searches never go back.
 */
interface ControllerPorts {
  index: number;
  ports: number;
  used: Set<number>;
  next: number;
}

function controllerPorts(index: number, ports: number): ControllerPorts {
  return { index, ports, used: new Set(), next: 1 };
}

/** The first free port at or after `start` (0 or 1), or -1. Port 0 is never marked taken. */
function firstFree(c: ControllerPorts, start: number): number {
  if (start === 0) return c.ports > 0 ? 0 : -1;
  let p = c.next;
  while (p < c.ports && c.used.has(p)) p++;
  c.next = p;
  return p < c.ports ? p : -1;
}

function addrNumber(addr: AddressDef | undefined, name: string): number | undefined {
  const v = addr?.attrs.find(([k]) => k === name)?.[1];
  return v === undefined ? undefined : Number(v);
}

function isVirtio(dev: ChrDeviceDef): boolean {
  return (dev.kind === 'channel' || dev.kind === 'console') && dev.target.type === 'virtio';
}

function xmlError(detail: string, dev: ChrDeviceDef): ConfigError {
  const alias = aliasAtParse(dev);
  return new ConfigError('ERR_CONFIG_INVALID', 'XML error', detail, {
    file: '<domain>',
    ...(dev.line !== undefined ? { line: dev.line } : {}),
    element: describeElement(dev.kind, dev.source.type),
    ...(alias !== undefined ? { alias } : {}),
  });
}

export function assignVirtioSerialAddresses(def: DomainChardevsDef, file = '<domain>'): void {
  const devices = [...def.channels, ...def.consoles.filter((c) => c.aliasOfSerial === undefined)].filter(isVirtio);
  if (devices.length === 0) return;

  // Implicit controllers: every index a virtio device refers to must exist.
  const indexes = new Set(def.virtioSerialControllers.map((c) => c.index));
  for (const dev of devices) {
    const idx = dev.info.address?.type === 'virtio-serial' ? (addrNumber(dev.info.address, 'controller') ?? 0) : 0;
    if (!indexes.has(idx)) {
      def.virtioSerialControllers.push({ index: idx, implicit: true });
      indexes.add(idx);
    }
  }
  const set: ControllerPorts[] = def.virtioSerialControllers
    .map((c: VirtioSerialControllerDef) => controllerPorts(c.index, c.ports ?? DEFAULT_PORTS))
    .sort((a, b) => a.index - b.index);
  // Where an index appears twice, the first controller answers (as a search of `set` would).
  const byIndex = new Map<number, ControllerPorts>();
  for (const c of set) if (!byIndex.has(c.index)) byIndex.set(c.index, c);

  const withFile = (e: ConfigError) => new ConfigError(e.code as 'ERR_CONFIG_INVALID', e.libvirtClass, e.detail, { ...e.location, file });

  // Complete addresses (a non-zero port) are reserved first.
  for (const dev of devices) {
    const addr = dev.info.address;
    if (addr?.type !== 'virtio-serial') continue;
    const port = addrNumber(addr, 'port') ?? 0;
    if (port === 0) continue;
    const ctrlIdx = addrNumber(addr, 'controller') ?? 0;
    const ctrl = byIndex.get(ctrlIdx);
    if (!ctrl) throw withFile(xmlError(`virtio serial controller ${ctrlIdx} is missing`, dev));
    if (port >= ctrl.ports) throw withFile(xmlError(`virtio serial controller ${ctrlIdx} does not have port ${port}`, dev));
    if (ctrl.used.has(port)) throw withFile(xmlError(`virtio serial port ${port} on controller ${ctrlIdx} is already occupied`, dev));
    ctrl.used.add(port);
  }

  // Controllers before these positions in `set` have no free port (from 0, from 1).
  const firstOpen = [0, 0];
  let nextIndex = 0;

  const assign = (dev: ChrDeviceDef, allowZero: boolean): void => {
    const addr = dev.info.address;
    if (addr?.type === 'virtio-serial' && (addrNumber(addr, 'port') ?? 0) !== 0) return;
    const portOnly = !allowZero && addr?.type === 'virtio-serial';
    let ctrlIdx: number;
    let port: number;
    if (portOnly) {
      ctrlIdx = addrNumber(addr, 'controller') ?? 0;
      const ctrl = byIndex.get(ctrlIdx);
      if (!ctrl) throw withFile(new ConfigError('ERR_CONFIG_INVALID', 'internal error', `virtio-serial controller ${ctrlIdx} not available`, { file }));
      port = firstFree(ctrl, 1);
      if (port < 0) throw withFile(xmlError(`Unable to find a free port on virtio-serial controller ${ctrlIdx}`, dev));
      ctrl.used.add(port);
    } else {
      const start = allowZero ? 0 : 1;
      let found: ControllerPorts | undefined;
      port = -1;
      let i = firstOpen[start]!;
      for (; i < set.length; i++) {
        const c = set[i]!;
        const p = firstFree(c, start);
        if (p >= 0) {
          found = c;
          port = p;
          break;
        }
      }
      firstOpen[start] = i;
      if (!found) {
        while (indexes.has(nextIndex)) nextIndex++;
        const index = nextIndex;
        indexes.add(index);
        def.virtioSerialControllers.push({ index, implicit: true });
        found = controllerPorts(index, DEFAULT_PORTS);
        byIndex.set(index, found);
        // Keep `set` sorted by index; the new controller is open from where it lands.
        let at = set.findIndex((c) => c.index > index);
        if (at < 0) at = set.length;
        set.splice(at, 0, found);
        firstOpen[0] = Math.min(firstOpen[0]!, at);
        firstOpen[1] = Math.min(firstOpen[1]!, at);
        port = start;
      }
      ctrlIdx = found.index;
      // libvirt never marks port 0 (consoles share it).
      if (port !== 0) found.used.add(port);
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
