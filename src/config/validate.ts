/**
 * Semantic checks, exhaustive over host types: libvirt's
 * virDomainChrSourceDefValidate (all drivers) followed by the QEMU driver's
 * chardev checks, with their exact messages and error classes.
 */
import { assertNever, type ConfigError } from '../errors.ts';
import { configError, describeElement } from './parse.ts';
import { namedDevices, type NamedDevice } from './names.ts';
import type { DriverOptions } from './postparse.ts';
import type { ChrDeviceDef, ChrSourceDef, DomainChardevsDef } from './types.ts';

const CHANNEL_NAME_RE = /^[A-Za-z0-9_.-]+$/;

function fail(file: string, nd: NamedDevice, cls: ConfigError['libvirtClass'], detail: string): ConfigError {
  const code = detail.startsWith('Missing') ? 'ERR_CONFIG_MISSING' : cls === 'unsupported configuration' ? 'ERR_CONFIG_UNSUPPORTED' : 'ERR_CONFIG_INVALID';
  return configError({ file, line: nd.dev.line, element: describeElement(nd.dev.kind, nd.dev.source.type), alias: nd.alias }, code, cls, detail);
}

/** The generic check libvirt applies to every chardev source; returns a message or undefined. */
export type Problem = readonly [ConfigError['libvirtClass'], string];

export function sourceProblem(src: ChrSourceDef, dev: ChrDeviceDef | undefined): Problem | undefined {
  const msg = sourceMessage(src, dev);
  if (msg === undefined) return undefined;
  if (msg.startsWith('Missing source channel')) return ['unsupported configuration', msg];
  if (msg.startsWith('Invalid character')) return ['invalid argument', msg];
  return ['internal error', msg];
}

function sourceMessage(src: ChrSourceDef, dev: ChrDeviceDef | undefined): string | undefined {
  switch (src.type) {
    case 'null':
    case 'pty':
    case 'vc':
    case 'stdio':
    case 'spicevmc':
    case 'qemu-vdagent':
      return undefined;
    case 'file':
    case 'dev':
    case 'pipe':
      return src.path === undefined ? 'Missing source path attribute for char device' : undefined;
    case 'nmdm':
      return src.master === undefined || src.slave === undefined ? 'Should define both master and slave path attributes for nmdm device' : undefined;
    case 'tcp':
      if (src.host === undefined) return 'Missing source host attribute for char device';
      if (src.service === undefined) return 'Missing source service attribute for char device';
      if (src.mode === 'bind' && src.reconnect !== undefined) return 'chardev reconnect is possible only for connect mode';
      return undefined;
    case 'udp':
      return src.connectService === undefined ? 'Missing source service attribute for char device' : undefined;
    case 'unix': {
      const generated = dev !== undefined && dev.kind === 'channel' && (dev.target.type === 'virtio' || dev.target.type === 'xen');
      if (src.path === undefined && !generated) return 'Missing source path attribute for char device';
      if (src.mode === 'bind' && src.reconnect !== undefined) return 'chardev reconnect is possible only for connect mode';
      return undefined;
    }
    case 'spiceport':
    case 'dbus':
      if (src.channel === undefined) return 'Missing source channel attribute for char device';
      if (!CHANNEL_NAME_RE.test(src.channel)) return 'Invalid character in source channel for char device';
      return undefined;
    default:
      return assertNever(src, 'chardev type');
  }
}

/** Address type each serial target type needs (undefined: none allowed). */
const SERIAL_TARGET_ADDRESS: Record<string, string | undefined> = {
  'isa-serial': 'isa',
  'isa-debug': 'isa',
  'usb-serial': 'usb',
  'pci-serial': 'pci',
  'spapr-vio-serial': 'spapr-vio',
  'system-serial': undefined,
  'sclp-serial': undefined,
};

const SERIAL_MODEL_TARGET: Record<string, string> = {
  'isa-serial': 'isa-serial',
  'usb-serial': 'usb-serial',
  'pci-serial': 'pci-serial',
  'spapr-vty': 'spapr-vio-serial',
  pl011: 'system-serial',
  '16550a': 'system-serial',
  sclpconsole: 'sclp-serial',
  sclplmconsole: 'sclp-serial',
  'isa-debugcon': 'isa-debug',
};

/** The QEMU driver's checks. */
function qemuProblem(nd: NamedDevice, def: DomainChardevsDef): Problem | undefined {
  const { dev } = nd;
  const src = dev.source;
  if ((src.type === 'spicevmc' || src.type === 'spiceport') && def.spiceGraphics === false) {
    return ['unsupported configuration', `chardev '${src.type}' not supported without spice graphics`];
  }
  if ((src.type === 'tcp' || src.type === 'unix') && src.reconnect?.enabled === 'yes' && src.reconnect.timeoutSec === 0) {
    return ['invalid argument', "chardev reconnect source timeout cannot be '0'"];
  }
  // nmdm (bhyve's null-modem pair) is a document libvirt 9.0.0 accepts and formats: valid here.
  // QEMU has no backend for it, so qemu-args (command.ts) and a start (the registry) refuse it.
  if (dev.kind === 'parallel' && (def.arch === 's390' || def.arch === 's390x' || def.arch === 'ppc64' || def.arch === 'ppc64le')) {
    return ['unsupported configuration', 'parallel ports are not supported'];
  }
  if (dev.kind === 'serial' && dev.target.type !== undefined) {
    const t = dev.target.type;
    const addr = dev.info.address?.type;
    if (t in SERIAL_TARGET_ADDRESS) {
      const need = SERIAL_TARGET_ADDRESS[t];
      if (need === undefined && addr !== undefined) {
        return ['unsupported configuration', `Target type '${t}' cannot have an associated address`];
      }
      if (need !== undefined && addr !== undefined && addr !== need) {
        return ['unsupported configuration', `Target type '${t}' requires address type '${need}'`];
      }
    }
    const model = dev.target.model;
    if (model !== undefined && SERIAL_MODEL_TARGET[model] !== t) {
      return ['unsupported configuration', `Target model '${model}' requires target type '${SERIAL_MODEL_TARGET[model] ?? ''}'`];
    }
  }
  return undefined;
}

export function validateDomain(def: DomainChardevsDef, driver: DriverOptions, file: string): void {
  void driver;
  // The QEMU driver's domain-level console check comes before any device check.
  for (const [index, c] of def.consoles.entries()) {
    const t = c.target.type;
    if (t === 'xen' || t === 'uml' || t === 'lxc' || t === 'openvz') {
      throw fail(file, { dev: c, alias: `console${index}`, index }, 'unsupported configuration', `unsupported console target type ${t}`);
    }
  }
  for (const nd of namedDevices(def)) {
    // Serial 0 seen again as console 0 was checked as serial 0.
    if (nd.dev.kind === 'console' && nd.dev.aliasOfSerial !== undefined) continue;
    const generic = sourceProblem(nd.dev.source, nd.dev);
    if (generic !== undefined) throw fail(file, nd, generic[0], generic[1]);
    const qemu = qemuProblem(nd, def);
    if (qemu) throw fail(file, nd, qemu[0], qemu[1]);
    const src = nd.dev.source;
    if (src.type === 'tcp' && src.mode === 'connect' && nd.dev.ext.tls?.verifyPeer === false) {
      // chardev's own rule: QEMU's client endpoint always verifies the server (and its name).
      throw fail(
        file,
        nd,
        'unsupported configuration',
        "verify='no' in <cd:tls> is for TLS servers only: a TLS client always verifies the server's certificate, as QEMU's does",
      );
    }
  }
}
