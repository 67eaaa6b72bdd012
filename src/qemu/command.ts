/**
 * The QEMU command line libvirt 9.0.0 builds for character devices
 * (qemuBuildChardevStr and the frontend -device builders in qemu_command.c),
 * in path form: where libvirt hands QEMU a descriptor (`/dev/fdset/N`,
 * `fd=N`) we print the path itself.
 */
import { assertNever } from '../errors.ts';
import type { LoadedDomain } from '../config/domain.ts';
import { tcpUsesTls, type DriverOptions } from '../config/postparse.ts';
import { chardevId, namedDevices, type NamedDevice } from '../config/names.ts';
import { configError, describeElement } from '../config/parse.ts';
import type { ChrDeviceDef, DomainChardevsDef } from '../config/types.ts';

export type ArgSyntax = 'json' | 'keyval';

export interface QemuArgsOptions {
  /**
   * `json`: `-device '{"driver":…}'` and `-object '{"qom-type":…}'` as libvirt
   * builds them for current QEMU (the default); `keyval`: the older
   * `-device isa-serial,chardev=…` form.
   */
  syntax?: ArgSyntax;
}

/** One option and its value, e.g. `['-chardev', 'pty,id=charserial0']`. */
export type QemuArg = readonly [string, string];

type Props = Array<[string, string | number | boolean]>;

/** QEMU's option syntax doubles commas inside values. */
export function escapeComma(v: string): string {
  return v.replace(/,/g, ',,');
}

function keyval(props: Props): string {
  return props.map(([k, v]) => (typeof v === 'boolean' ? `${k}=${v ? 'on' : 'off'}` : `${k}=${v}`)).join(',');
}

function json(props: Props): string {
  return JSON.stringify(Object.fromEntries(props));
}

/** libvirt's VIR_DOMAIN_SHORT_NAME_MAX: how much of the name a per-domain directory keeps. */
const SHORT_NAME_MAX = 20;

/**
 * libvirt's virDomainDefGetShortName: `ID-NAME` with the name cut to 20 characters (wide
 * characters, so a multi-byte name is cut between characters). The ID is -1 for a domain
 * that is not running — what `virsh domxml-to-native` and libvirt's test data see, and what
 * qemu-args prints.
 */
export function domainShortName(name: string, id = -1): string {
  return `${id}-${[...name].slice(0, SHORT_NAME_MAX).join('')}`;
}

/**
 * The path QEMU's chardev sees for a virtio channel's unix server whose path libvirt
 * generates at start (qemuDomainPrepareChannel): the domain's channel directory
 * (qemuDomainSetPrivatePaths: channel_target_dir/domain-SHORTNAME), then the target name, or
 * `vioser-CC-BB-PP.sock` from its virtio-serial address when it has none.
 */
export function generatedChannelPath(def: DomainChardevsDef, dev: ChrDeviceDef, driver: DriverOptions, domainId = -1): string {
  const dir = `${driver.channelTargetDir}/domain-${domainShortName(def.name ?? 'chardev', domainId)}`;
  if (dev.kind === 'channel' && dev.target.name !== undefined) return `${dir}/${dev.target.name}`;
  const a = dev.info.address?.attrs ?? [];
  const num = (k: string) => String(Number(a.find(([n]) => n === k)?.[1] ?? 0)).padStart(2, '0');
  return `${dir}/vioser-${num('controller')}-${num('bus')}-${num('port')}.sock`;
}

/** The `-chardev` value for one device. */
export function chardevValue(def: DomainChardevsDef, nd: NamedDevice, driver: DriverOptions): string {
  const id = chardevId(nd.alias);
  const src = nd.dev.source;
  let s: string;
  switch (src.type) {
    case 'null':
    case 'vc':
    case 'pty':
    case 'stdio':
      s = `${src.type},id=${id}`;
      break;
    case 'dev':
      s = `${nd.dev.kind === 'parallel' ? 'parallel' : 'serial'},id=${id},path=${escapeComma(src.path ?? '')}`;
      break;
    case 'file':
      s = `file,id=${id},path=${escapeComma(src.path ?? '')}`;
      if (src.append !== undefined) s += `,append=${src.append}`;
      break;
    case 'pipe':
      s = `pipe,id=${id},path=${escapeComma(src.path ?? '')}`;
      break;
    case 'udp':
      s = `udp,id=${id},host=${src.connectHost ?? ''},port=${src.connectService ?? ''},localaddr=${src.bindHost ?? ''},localport=${src.bindService ?? '0'}`;
      break;
    case 'tcp':
      s = `socket,id=${id},host=${src.host ?? ''},port=${src.service ?? ''}`;
      if (src.protocol === 'telnet') s += ',telnet=on';
      if (src.mode === 'bind') s += ',server=on,wait=off';
      if (src.reconnect) s += `,reconnect=${src.reconnect.enabled === 'yes' ? (src.reconnect.timeoutSec ?? 0) : 0}`;
      if (tcpUsesTls(src, driver)) s += `,tls-creds=obj${id}_tls0`;
      break;
    case 'unix': {
      const path = src.path ?? generatedChannelPath(def, nd.dev, driver);
      s = `socket,id=${id},path=${escapeComma(path)}`;
      if (src.mode === 'bind') s += ',server=on,wait=off';
      if (src.reconnect) s += `,reconnect=${src.reconnect.enabled === 'yes' ? (src.reconnect.timeoutSec ?? 0) : 0}`;
      break;
    }
    case 'spicevmc':
      s = `spicevmc,id=${id},name=vdagent`;
      break;
    case 'spiceport':
      s = `spiceport,id=${id},name=${src.channel ?? ''}`;
      break;
    case 'qemu-vdagent':
      s = `qemu-vdagent,id=${id},name=vdagent`;
      if (src.clipboardCopypaste !== undefined) s += `,clipboard=${src.clipboardCopypaste === 'yes' ? 'on' : 'off'}`;
      if (src.mouseMode !== undefined) s += `,mouse=${src.mouseMode === 'client' ? 'on' : 'off'}`;
      break;
    case 'dbus':
      s = `dbus,id=${id},name=${src.channel ?? ''}`;
      break;
    case 'nmdm':
      // buildQemuArgs refuses nmdm first; keep the switch exhaustive.
      s = `nmdm,id=${id}`;
      break;
    default:
      return assertNever(src, 'chardev type');
  }
  if (src.log) {
    s += `,logfile=${escapeComma(src.log.file)}`;
    if (src.log.append !== undefined) s += `,logappend=${src.log.append}`;
  }
  return s;
}

function addrAttr(dev: ChrDeviceDef, name: string): string | undefined {
  return dev.info.address?.attrs.find(([k]) => k === name)?.[1];
}

function num(v: string): number {
  return v.startsWith('0x') || v.startsWith('0X') ? parseInt(v, 16) : parseInt(v, 10);
}

/** The frontend `-device` props for a device, or undefined when it has none we build. */
function frontendProps(nd: NamedDevice): Props | undefined {
  const { dev, alias } = nd;
  const chardev = chardevId(alias);
  switch (dev.kind) {
    case 'serial': {
      const model = dev.target.model;
      if (model === undefined || model === 'pl011' || model === '16550a') return undefined;
      const props: Props = [
        ['driver', model],
        ['chardev', chardev],
        ['id', alias],
      ];
      if (model === 'isa-serial' && dev.target.port !== undefined && dev.target.port >= 0) props.push(['index', dev.target.port]);
      const type = dev.info.address?.type;
      if (type === 'isa') {
        props.push(['iobase', num(addrAttr(dev, 'iobase') ?? '0')]);
        const irq = num(addrAttr(dev, 'irq') ?? '0');
        if (irq !== 0) props.push(['irq', irq]);
      } else if (type === 'pci') {
        props.push(['bus', `pci.${num(addrAttr(dev, 'bus') ?? '0')}`]);
        const slot = num(addrAttr(dev, 'slot') ?? '0');
        const fn = num(addrAttr(dev, 'function') ?? '0');
        props.push(['addr', `0x${slot.toString(16)}${fn ? `.0x${fn.toString(16)}` : ''}`]);
      } else if (type === 'usb') {
        props.push(['bus', `usb.${num(addrAttr(dev, 'bus') ?? '0')}`]);
        const port = addrAttr(dev, 'port');
        if (port !== undefined) props.push(['port', port]);
      } else if (type === 'spapr-vio') {
        const reg = addrAttr(dev, 'reg');
        if (reg !== undefined) props.push(['reg', reg]);
      }
      return props;
    }
    case 'parallel':
      return [
        ['driver', 'isa-parallel'],
        ['chardev', chardev],
        ['id', alias],
      ];
    case 'channel':
    case 'console': {
      if (dev.target.type !== 'virtio') return undefined;
      const props: Props = [['driver', dev.kind === 'channel' ? 'virtserialport' : 'virtconsole']];
      if (dev.info.address?.type === 'virtio-serial') {
        props.push(['bus', `virtio-serial${num(addrAttr(dev, 'controller') ?? '0')}.${num(addrAttr(dev, 'bus') ?? '0')}`]);
        props.push(['nr', num(addrAttr(dev, 'port') ?? '0')]);
      }
      props.push(['chardev', chardev], ['id', alias]);
      if (dev.kind === 'channel') {
        const name = dev.target.name ?? (dev.source.type === 'spicevmc' ? 'com.redhat.spice.0' : undefined);
        if (name !== undefined) props.push(['name', name]);
      }
      return props;
    }
  }
}

/** The guest frontend of one device (`-device …`, `-serial chardev:…`, guestfwd `-netdev`); empty when it has none. */
export function frontendArgs(nd: NamedDevice, syntax: ArgSyntax): QemuArg[] {
  const { dev, alias } = nd;
  if (dev.kind === 'channel' && dev.target.type === 'guestfwd') {
    const fwd = `tcp:${dev.target.address ?? ''}:${dev.target.port ?? ''}-chardev:${chardevId(alias)}`;
    return [['-netdev', syntax === 'json' ? JSON.stringify({ type: 'user', guestfwd: [{ str: fwd }], id: alias }) : `user,guestfwd=${fwd},id=${alias}`]];
  }
  if (dev.kind === 'serial' && (dev.target.model === 'pl011' || dev.target.model === '16550a' || dev.target.model === undefined)) {
    return [['-serial', `chardev:${chardevId(alias)}`]];
  }
  const props = frontendProps(nd);
  if (!props) return [];
  if (syntax === 'json') return [['-device', json(props)]];
  const [, driver] = props[0] ?? ['driver', ''];
  return [['-device', `${String(driver)},${keyval(props.slice(1))}`]];
}

function tlsObject(nd: NamedDevice, driver: DriverOptions, syntax: ArgSyntax): QemuArg | undefined {
  const src = nd.dev.source;
  if (src.type !== 'tcp' || !tcpUsesTls(src, driver)) return undefined;
  const id = chardevId(nd.alias);
  const listen = src.mode === 'bind';
  const props: Props = [
    ['id', `obj${id}_tls0`],
    ['dir', driver.tlsCertDir],
    ['endpoint', listen ? 'server' : 'client'],
    ['verify-peer', listen ? driver.tlsVerify : true],
  ];
  if (driver.tlsSecretUuid !== undefined) props.push(['passwordid', `${id}-secret0`]);
  return ['-object', syntax === 'json' ? json([['qom-type', 'tls-creds-x509'], ...props]) : `tls-creds-x509,${keyval(props)}`];
}

/**
 * Every chardev argument for the domain, in libvirt's order (serials,
 * parallels, channels, consoles), each device's `-object`, `-chardev` and
 * frontend together. A console that is serial 0 seen again adds nothing.
 */
export function buildQemuArgs(loaded: Pick<LoadedDomain, 'def' | 'driver'> & { readonly file?: string }, options: QemuArgsOptions = {}): QemuArg[] {
  const syntax = options.syntax ?? 'json';
  const out: QemuArg[] = [];
  for (const nd of namedDevices(loaded.def)) {
    if (nd.dev.kind === 'console' && nd.dev.aliasOfSerial !== undefined) continue;
    if (nd.dev.source.type === 'nmdm') {
      // libvirt's QEMU driver has no -chardev for bhyve's nmdm: qemuBuildChardevStr's words.
      throw configError(
        { file: loaded.file ?? '<string>', line: nd.dev.line, element: describeElement(nd.dev.kind, 'nmdm'), alias: nd.alias },
        'ERR_CONFIG_UNSUPPORTED',
        'unsupported configuration',
        "unsupported chardev 'nmdm'",
      );
    }
    const tls = tlsObject(nd, loaded.driver, syntax);
    if (tls) out.push(tls);
    out.push(['-chardev', chardevValue(loaded.def, nd, loaded.driver)]);
    out.push(...frontendArgs(nd, syntax));
  }
  return out;
}

/** Quote a value for a POSIX shell the way libvirt's .args files do (only when needed). */
export function shellQuote(v: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]*$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

export function formatQemuArgs(args: readonly QemuArg[]): string {
  return args.map(([opt, val]) => `${opt} ${shellQuote(val)}`).join(' \\\n') + (args.length ? '\n' : '');
}
