/**
 * The domain's guest ports as QEMU sees them: which devices share a port (hubs), which port
 * carries the HMP monitor, and the `-chardev` / `-device` / `-mon` arguments that make QEMU
 * connect to chardev's socket for each (see launch.ts for why QEMU connects).
 */
import type { LoadedDomain } from '../config/domain.ts';
import { aliasOfName, chardevId, hostDevices, type NamedDevice } from '../config/names.ts';
import { ChardevError } from '../errors.ts';
import { escapeComma, frontendArgs, type ArgSyntax } from './command.ts';

/** One guest port: a socket chardev in QEMU, one or more devices in the domain. */
export interface QemuPort {
  /** The domain devices of this port; the first one's target is the guest frontend. */
  readonly devices: readonly NamedDevice[];
  /** `frontend`: the target's `-device`/`-serial`; `monitor`: QEMU's HMP monitor instead. */
  readonly role: 'frontend' | 'monitor';
  /** QEMU's chardev id: `char` + the first device's alias. */
  readonly id: string;
}

export interface QemuPortOptions {
  /** Devices (alias or chardev id) that carry QEMU's HMP monitor instead of a guest frontend. */
  readonly monitors?: readonly string[];
  /** Groups of devices (alias or chardev id) that are one guest port: the first one's frontend. */
  readonly hubs?: ReadonlyArray<readonly string[]>;
}

function usage(message: string): ChardevError {
  return new ChardevError('ERR_USAGE', message);
}

/**
 * The domain's guest ports: every device with a host interface of its own (a console that is
 * serial 0 seen again is that same device), hubs folded into their first device.
 */
export function planQemuPorts(loaded: Pick<LoadedDomain, 'def'>, options: QemuPortOptions = {}): QemuPort[] {
  const devices = hostDevices(loaded.def);
  const find = (name: string, what: string): NamedDevice => {
    const alias = aliasOfName(name);
    const nd = devices.find((d) => d.alias === alias || d.alias === name);
    if (nd === undefined) {
      throw usage(`qemu: ${what}: no device '${name}' in domain ${loaded.def.name ?? 'domain'} (has: ${devices.map((d) => d.alias).join(', ') || 'none'})`);
    }
    return nd;
  };
  /** Device alias → the alias of the first device of its hub. */
  const hubOf = new Map<string, string>();
  const members = new Map<string, NamedDevice[]>();
  for (const hub of options.hubs ?? []) {
    const list = hub.map((n) => find(n, `--hub ${hub.join(',')}`));
    if (list.length < 2) throw usage(`qemu: --hub ${hub.join(',')}: a hub joins at least two devices`);
    const first = list[0] as NamedDevice;
    for (const nd of list) {
      if (hubOf.has(nd.alias)) throw usage(`qemu: --hub ${hub.join(',')}: ${nd.alias} is already in a hub`);
      hubOf.set(nd.alias, first.alias);
    }
    members.set(first.alias, list);
  }
  const monitors = new Set<string>();
  for (const m of options.monitors ?? []) {
    const nd = find(m, `--monitor ${m}`);
    monitors.add(hubOf.get(nd.alias) ?? nd.alias);
  }
  const ports: QemuPort[] = [];
  for (const nd of devices) {
    const head = hubOf.get(nd.alias);
    if (head !== undefined && head !== nd.alias) continue;
    ports.push({
      devices: members.get(nd.alias) ?? [nd],
      role: monitors.has(nd.alias) ? 'monitor' : 'frontend',
      id: chardevId(nd.alias),
    });
  }
  return ports;
}

/** QEMU's chardev and monitor id for chardev's own control connection (libvirt's name for it). */
export const QMP_CHARDEV_ID = 'charmonitor';

export interface QemuArgsPaths {
  /** The socket chardev listens on for port `index` of the plan. */
  readonly portSocket: (index: number) => string;
  /** The socket chardev listens on for QEMU's QMP monitor. */
  readonly qmpSocket: string;
  /**
   * QEMU's own reconnect option for every socket (`reconnect=1`), so a QEMU that outlives
   * chardev connects again to whoever listens next (the daemon after a restart).
   */
  readonly reconnect?: string;
}

/**
 * What chardev adds to the user's QEMU command line: `-nodefaults` (no default serial,
 * parallel, monitor or display devices that would compete with the domain's, as libvirt
 * does), the QMP control socket, the virtio-serial controllers virtio consoles and channels
 * need (unless the command line has one with that id), and per port a `-chardev socket` and
 * its frontend or `-mon`.
 */
export function qemuDeviceArgs(ports: readonly QemuPort[], paths: QemuArgsPaths, userArgs: readonly string[] = [], syntax: ArgSyntax = 'json'): string[] {
  const out: string[] = [];
  const again = paths.reconnect === undefined ? '' : `,${paths.reconnect}`;
  if (!userArgs.includes('-nodefaults')) out.push('-nodefaults');
  out.push('-chardev', `socket,id=${QMP_CHARDEV_ID},path=${escapeComma(paths.qmpSocket)}${again}`, '-mon', `chardev=${QMP_CHARDEV_ID},id=monitor,mode=control`);
  const controllers = new Set<number>();
  for (const port of ports) {
    const dev = port.devices[0]?.dev;
    if (port.role !== 'frontend' || dev === undefined) continue;
    if ((dev.kind === 'console' || dev.kind === 'channel') && dev.target.type === 'virtio') {
      const c = dev.info.address?.type === 'virtio-serial' ? Number(dev.info.address.attrs.find(([k]) => k === 'controller')?.[1] ?? 0) : 0;
      controllers.add(c);
    }
  }
  for (const c of [...controllers].sort((a, b) => a - b)) {
    const id = `virtio-serial${c}`;
    if (userArgs.some((a) => new RegExp(`(^|[,{"\\s])id"?[=:]\\s*"?${id}("|,|$)`).test(a))) continue;
    out.push('-device', syntax === 'json' ? JSON.stringify({ driver: 'virtio-serial-pci', id }) : `virtio-serial-pci,id=${id}`);
  }
  ports.forEach((port, i) => {
    out.push('-chardev', `socket,id=${port.id},path=${escapeComma(paths.portSocket(i))}${again}`);
    if (port.role === 'monitor') {
      out.push('-mon', `chardev=${port.id},mode=readline`);
    } else {
      const first = port.devices[0];
      if (first !== undefined) for (const [opt, val] of frontendArgs(first, syntax)) out.push(opt, val);
    }
  });
  return out;
}

/** One line per port for humans: which devices carry which guest port. */
export function describePorts(ports: readonly QemuPort[]): string[] {
  return ports.map((port) => {
    const ids = port.devices.map((d) => chardevId(d.alias)).join(', ');
    if (port.role === 'monitor') return `${ids}: QEMU monitor (HMP)`;
    const first = port.devices[0];
    const fe = first === undefined ? [] : frontendArgs(first, 'keyval');
    const what = fe.length === 0 ? 'no guest frontend' : fe.map(([o, v]) => `${o} ${v.split(',')[0]}`).join(' ');
    return `${ids}: guest ${first?.alias ?? port.id} (${what})`;
  });
}
