/**
 * libvirt's post-parse for character devices (domain_postparse.c and the QEMU
 * driver's qemuDomainChrDefPostParse), in libvirt 9.0.0's order: ISA serial
 * ports, per-device defaults, console compatibility, virtio-serial addresses.
 */
import type { ConfigError } from '../errors.ts';
import { aliasAtParse, configError, describeElement, inheritAlias } from './parse.ts';
import type { ChrDeviceDef, ChrSourceDef, ConsoleDef, DomainChardevsDef, SerialDef, SerialTargetModel, SerialTargetType } from './types.ts';
import { assignVirtioSerialAddresses } from './virtio-serial.ts';

/** What libvirt takes from qemu.conf and the driver, rather than the XML. */
export interface DriverOptions {
  /** qemu.conf `channel_target_dir`: where generated virtio channel sockets go. */
  channelTargetDir: string;
  /** qemu.conf `chardev_tls`: TLS for tcp chardevs that don't say `tls=`. */
  tlsDefault: boolean;
  /** qemu.conf `chardev_tls_x509_verify`: verify clients of TLS servers. */
  tlsVerify: boolean;
  /** qemu.conf `chardev_tls_x509_cert_dir`. */
  tlsCertDir: string;
  /** qemu.conf `chardev_tls_x509_secret_uuid`: a password for the key. */
  tlsSecretUuid?: string;
}

/** Effective TLS for a tcp source: its own `tls=`, else the run's default (qemu.conf `chardev_tls`). */
export function tcpUsesTls(src: ChrSourceDef & { type: 'tcp' }, driver: DriverOptions): boolean {
  return src.tls !== undefined ? src.tls === 'yes' : driver.tlsDefault;
}

export interface PostParseContext {
  file: string;
  live: boolean;
  standalone: boolean;
}

export function isX86(arch: string | undefined): boolean {
  return arch === undefined || arch === 'x86_64' || arch === 'i686';
}

function isArm(arch: string | undefined): boolean {
  return arch === 'aarch64' || arch === 'armv7l' || arch === 'armv6l' || arch === 'armv7b';
}

function isRiscv(arch: string | undefined): boolean {
  return arch === 'riscv32' || arch === 'riscv64';
}

function isPPC64(arch: string | undefined): boolean {
  return arch === 'ppc64' || arch === 'ppc64le';
}

function isS390(arch: string | undefined): boolean {
  return arch === 's390' || arch === 's390x';
}

function isPseries(def: DomainChardevsDef): boolean {
  return isPPC64(def.arch) && (def.machine === undefined || def.machine.startsWith('pseries'));
}

function isVirtMachine(def: DomainChardevsDef): boolean {
  return def.machine === 'virt' || (def.machine?.startsWith('virt-') ?? false);
}

const MODEL_FOR_TARGET: Record<Exclude<SerialTargetType, 'system-serial'>, SerialTargetModel> = {
  'isa-serial': 'isa-serial',
  'usb-serial': 'usb-serial',
  'pci-serial': 'pci-serial',
  'spapr-vio-serial': 'spapr-vty',
  'sclp-serial': 'sclpconsole',
  'isa-debug': 'isa-debugcon',
};

/** The QEMU driver's defaults for a serial's target type and model. */
function qemuSerialPostParse(def: DomainChardevsDef, serial: SerialDef): void {
  const t = serial.target;
  if (t.type === undefined) {
    if (isX86(def.arch)) t.type = 'isa-serial';
    else if (isPseries(def)) t.type = 'spapr-vio-serial';
    else if ((isArm(def.arch) || isRiscv(def.arch)) && isVirtMachine(def)) t.type = 'system-serial';
    else if (isS390(def.arch)) t.type = 'sclp-serial';
  }
  if (t.model === undefined && t.type !== undefined) {
    if (t.type === 'system-serial') {
      if (isArm(def.arch)) t.model = 'pl011';
      else if (isRiscv(def.arch)) t.model = '16550a';
    } else {
      t.model = MODEL_FOR_TARGET[t.type];
    }
  }
}

function where(ctx: PostParseContext, dev: ChrDeviceDef) {
  return {
    file: ctx.file,
    line: dev.line,
    element: describeElement(dev.kind, dev.source.type),
    alias: aliasAtParse(dev),
  };
}

function isaSerialPortsPostParse(def: DomainChardevsDef, ctx: PostParseContext): void {
  const used = [false, false, false, false];
  let count = 0;
  for (const s of def.serials) {
    if (s.target.type !== 'isa-serial') continue;
    const port = s.target.port;
    if (count++ >= 4 || (port !== undefined && port >= 4)) {
      throw configError(where(ctx, s), 'ERR_CONFIG_INVALID', 'internal error', "Maximum supported number of ISA serial ports is '4'");
    }
    if (port !== undefined) {
      if (used[port]) {
        throw configError(where(ctx, s), 'ERR_CONFIG_INVALID', 'internal error', `target port '${port}' already allocated`);
      }
      used[port] = true;
    }
  }
  for (const s of def.serials) {
    if (s.target.type !== 'isa-serial' || s.target.port !== undefined) continue;
    const free = used.indexOf(false);
    s.target.port = free;
    used[free] = true;
  }
}

/**
 * The highest target port in each device list, kept as ports are assigned so
 * that numbering N devices costs N steps, not N² (a document may hold many).
 */
type MaxPorts = Map<readonly ChrDeviceDef[], number>;

/** libvirt's generic virDomainChrDefPostParse. */
function chrPostParse(def: DomainChardevsDef, dev: ChrDeviceDef, ctx: PostParseContext, maxPorts: MaxPorts): void {
  if (dev.kind === 'console' && dev.target.type === undefined) dev.target.type = 'serial';
  if (dev.kind === 'serial' && dev.target.type === 'isa-debug' && !isX86(def.arch)) {
    throw configError(where(ctx, dev), 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', 'isa-debug serial type only valid on x86 architecture');
  }
  if (dev.kind === 'channel' || dev.target.port !== undefined) return;
  const peers: ChrDeviceDef[] = dev.kind === 'serial' ? def.serials : dev.kind === 'parallel' ? def.parallels : def.consoles;
  let max = maxPorts.get(peers);
  if (max === undefined) {
    max = -1;
    for (const p of peers) {
      if (p.kind === 'channel') continue;
      const port = p.target.port;
      if (port !== undefined && port > max) max = port;
    }
  }
  dev.target.port = max + 1;
  maxPorts.set(peers, max + 1);
}

function devicePostParse(def: DomainChardevsDef, dev: ChrDeviceDef, ctx: PostParseContext, driver: DriverOptions, maxPorts: MaxPorts): void {
  if (dev.kind === 'serial') qemuSerialPostParse(def, dev);
  qemuUnixPostParse(dev, driver, ctx);
  chrPostParse(def, dev, ctx, maxPorts);
}

function stubConsole(): ConsoleDef {
  return {
    kind: 'console',
    source: { type: 'pty', seclabels: [] },
    target: { type: 'serial' },
    info: {},
    extensions: [],
    ext: {},
    aliasOfSerial: 0,
  };
}

/** libvirt's virDomainDefAddConsoleCompat: the first console of an HVM guest is serial 0. */
function addConsoleCompat(def: DomainChardevsDef, ctx: PostParseContext): void {
  for (const c of def.consoles.slice(1)) {
    if (c.target.type === 'serial') {
      throw configError(where(ctx, c), 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', 'Only the first console can be a serial port');
    }
  }
  if (def.osType !== 'hvm') return;
  const first = def.consoles[0];
  if (first && (first.target.type === 'serial' || first.target.type === undefined)) {
    if (def.serials.length === 0) {
      // The console's definition moves over to become serial 0.
      const moved: SerialDef = {
        kind: 'serial',
        source: first.source,
        target: { port: 0 },
        info: first.info,
        extensions: first.extensions,
        ext: first.ext,
        ...(first.line !== undefined ? { line: first.line } : {}),
      };
      inheritAlias(moved, first);
      def.serials.push(moved);
      def.consoles[0] = stubConsole();
    } else {
      // Equal or not, the console is now printed and run as serial 0; keep
      // only what makes it a console (its extensions apply to serial 0's device).
      const stub = stubConsole();
      stub.extensions = first.extensions;
      stub.ext = first.ext;
      const serial0 = def.serials[0];
      if (serial0 !== undefined) serial0.ext = { ...first.ext, ...serial0.ext };
      if (first.line !== undefined) stub.line = first.line;
      inheritAlias(stub, first);
      def.consoles[0] = stub;
    }
    return;
  }
  const serial0 = def.serials[0];
  if (serial0) {
    const t = serial0.target.type;
    if (t === undefined || t === 'isa-serial' || t === 'spapr-vio-serial' || t === 'system-serial' || t === 'sclp-serial') {
      def.consoles.unshift(stubConsole());
    }
  }
}

export function postParse(def: DomainChardevsDef, driver: DriverOptions, ctx: PostParseContext): void {
  isaSerialPortsPostParse(def, ctx);
  // Device iteration order in libvirt: serials, parallels, channels, consoles.
  const maxPorts: MaxPorts = new Map();
  for (const s of def.serials) devicePostParse(def, s, ctx, driver, maxPorts);
  for (const p of def.parallels) devicePostParse(def, p, ctx, driver, maxPorts);
  for (const c of def.channels) devicePostParse(def, c, ctx, driver, maxPorts);
  for (const c of def.consoles) devicePostParse(def, c, ctx, driver, maxPorts);
  if (!ctx.standalone) {
    addConsoleCompat(def, ctx);
    const serial0 = def.serials[0];
    // Console compatibility moved devices around: ports are counted afresh.
    if (serial0) devicePostParse(def, serial0, ctx, driver, new Map());
    assignVirtioSerialAddresses(def, ctx.file);
  }
}

/**
 * The QEMU driver drops a virtio channel's socket path when it is the one
 * libvirt would generate anyway, and a unix source without a path is a
 * server whose path is generated at start.
 */
function qemuUnixPostParse(dev: ChrDeviceDef, driver: DriverOptions, ctx: PostParseContext): void {
  if (ctx.live) return;
  const src = dev.source;
  if (src.type !== 'unix') return;
  if (dev.kind === 'channel' && dev.target.type === 'virtio' && src.path !== undefined) {
    // libvirt's own regex, alternation quirk included: `^DIR/([^/]+\.)|(domain-[^/]+/)NAME$`.
    const name = dev.target.name ?? '';
    const re = new RegExp(`^${escapeRegExp(driver.channelTargetDir)}/([^/]+\\.)|(domain-[^/]+/)${escapeRegExp(name)}$`);
    if (re.test(src.path)) delete src.path;
  }
  if (src.path === undefined) src.mode = 'bind';
}

export type { ConfigError };

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
