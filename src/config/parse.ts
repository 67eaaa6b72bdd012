/**
 * XML → model, following libvirt 9.0.0's virDomainChrDefParseXML and
 * virDomainChrSourceDefParseXML: the same attributes read, the same defaults
 * at parse time, the same messages for what it refuses.
 */
import { ConfigError, printable, type LibvirtErrorClass, type ConfigErrorCode } from '../errors.ts';
import {
  CHANNEL_TARGET_TYPES,
  CHR_TYPES,
  CONSOLE_TARGET_TYPES,
  DEVICE_KINDS,
  SERIAL_TARGET_MODELS,
  SERIAL_TARGET_TYPES,
  SOURCE_MODES,
  TCP_PROTOCOLS,
  type AddressDef,
  type ChannelTargetDef,
  type ChrDeviceDef,
  type ChrSourceDef,
  type ChrType,
  type ConsoleTargetDef,
  type DeviceInfoDef,
  type DeviceKind,
  type ReconnectDef,
  type SeclabelDef,
  type SerialTargetDef,
  type SourceMode,
} from './types.ts';
import { attr, childElements, declarationsFrom, lineOf, serializeNode, type XmlElement } from './xml.ts';
import { CHARDEV_NS, parseExtensions } from './extensions.ts';

export { CHARDEV_NS };

export interface ParseOptions {
  /** File name used in error messages. */
  file: string;
  /**
   * Parse as live (status) XML: keep pty paths, `tty=` and channel state,
   * which libvirt ignores in inactive definitions.
   */
  live?: boolean;
  /**
   * The alias libvirt will give this element (`serial0`, `console1`, …), for messages; a
   * `<alias name='ua-…'/>` in the element wins, as it does in libvirt.
   */
  alias?: string;
}

/**
 * The alias each parsed device was named with in messages, so later stages (post-parse,
 * which moves devices around) name a device the same way.
 */
const aliasesAtParse = new WeakMap<ChrDeviceDef, string>();

/** The alias a device had when it was parsed, if any. */
export function aliasAtParse(dev: ChrDeviceDef): string | undefined {
  return aliasesAtParse.get(dev);
}

/** A device made from another (console compatibility moves a console to serial 0) keeps its name. */
export function inheritAlias(to: ChrDeviceDef, from: ChrDeviceDef): void {
  const alias = aliasesAtParse.get(from);
  if (alias !== undefined) aliasesAtParse.set(to, alias);
}

/** Context for messages: which element we are in. */
export interface ElementContext {
  file: string;
  el: XmlElement;
  kind: DeviceKind;
  type: string;
  /** Alias once known (assigned after post-parse); filled by later stages. */
  alias?: string;
}

export function describeElement(kind: string, type: string | undefined): string {
  // The type is the document's own text: keep the element readable whatever it holds.
  return type === undefined ? `<${kind}>` : `<${kind} type='${printable(type, 40)}'>`;
}

export function configError(
  ctx: { file: string; line?: number | undefined; element?: string; alias?: string | undefined },
  code: ConfigErrorCode,
  cls: LibvirtErrorClass,
  detail: string,
): ConfigError {
  const loc: { file: string; line?: number; element?: string; alias?: string } = { file: ctx.file };
  if (ctx.line !== undefined) loc.line = ctx.line;
  if (ctx.element !== undefined) loc.element = ctx.element;
  if (ctx.alias !== undefined) loc.alias = ctx.alias;
  return new ConfigError(code, cls, detail, loc);
}

function errAt(ctx: ElementContext, node: XmlElement, code: ConfigErrorCode, cls: LibvirtErrorClass, detail: string): ConfigError {
  return configError(
    { file: ctx.file, line: lineOf(node) ?? lineOf(ctx.el), element: describeElement(ctx.kind, ctx.type), alias: ctx.alias },
    code,
    cls,
    detail,
  );
}

/** libvirt's virXMLProp* message for a value outside an enum. */
function invalidValue(ctx: ElementContext, node: XmlElement, name: string, value: string, expected?: string): ConfigError {
  const tail = expected === undefined ? '' : ` Expected ${expected}`;
  return errAt(ctx, node, 'ERR_CONFIG_INVALID', 'XML error', `Invalid value for attribute '${name}' in element '${node.localName}': '${value}'.${tail}`);
}

function missingAttr(ctx: ElementContext, node: XmlElement, name: string): ConfigError {
  return errAt(ctx, node, 'ERR_CONFIG_MISSING', 'XML error', `Missing required attribute '${name}' in element '${node.localName}'`);
}

function enumAttr<T extends string>(ctx: ElementContext, node: XmlElement, name: string, values: readonly T[]): T | undefined {
  const v = attr(node, name);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw invalidValue(ctx, node, name, v);
  return v as T;
}

function uintAttr(ctx: ElementContext, node: XmlElement, name: string, required: boolean): number | undefined {
  const v = attr(node, name);
  if (v === undefined) {
    if (required) throw missingAttr(ctx, node, name);
    return undefined;
  }
  if (!/^\s*\+?\d+$/.test(v) || Number(v) > 0xffffffff) {
    throw invalidValue(ctx, node, name, v, 'non-negative integer value');
  }
  return Number(v);
}

/** virStrToLong_ui as used for target ports: decimal, no sign games. */
function parsePort(ctx: ElementContext, node: XmlElement, value: string): number | undefined {
  // strtoul: leading blanks and a sign are accepted, and '-1' wraps to "unset".
  const m = /^\s*([+-]?)(\d+)$/.exec(value);
  const magnitude = m ? Number(m[2]) : NaN;
  if (!m || magnitude > 0xffffffff) {
    throw errAt(ctx, node, 'ERR_CONFIG_INVALID', 'XML error', `Invalid port number: ${value}`);
  }
  if (m[1] === '-') {
    const wrapped = (0x100000000 - magnitude) % 0x100000000;
    const asInt = wrapped > 0x7fffffff ? wrapped - 0x100000000 : wrapped;
    return asInt < 0 ? undefined : asInt;
  }
  return magnitude > 0x7fffffff ? undefined : magnitude;
}

/**
 * Parse one `<serial>`, `<parallel>`, `<console>` or `<channel>` element.
 * Does not apply domain-wide defaults (see postparse.ts).
 */
export function parseChrDevice(el: XmlElement, opts: ParseOptions): ChrDeviceDef {
  const kind = el.localName ?? el.tagName;
  if (el.namespaceURI !== null || !(DEVICE_KINDS as readonly string[]).includes(kind)) {
    throw configError(
      { file: opts.file, line: lineOf(el), element: `<${el.tagName}>` },
      'ERR_CONFIG_UNSUPPORTED',
      'unsupported configuration',
      `unknown character device type: ${el.tagName}`,
    );
  }
  const deviceKind = kind as DeviceKind;
  const rawType = attr(el, 'type');
  const ctx: ElementContext = { file: opts.file, el, kind: deviceKind, type: rawType ?? 'pty' };
  const alias = userAliasOf(el) ?? opts.alias;
  if (alias !== undefined) ctx.alias = alias;
  let type: ChrType = 'pty';
  if (rawType !== undefined) {
    if (!(CHR_TYPES as readonly string[]).includes(rawType)) {
      throw errAt(ctx, el, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', `unknown type presented to host for character device: ${rawType}`);
    }
    type = rawType as ChrType;
  }

  const targetEl = childElements(el, 'target')[0];
  const source = parseSource(ctx, el, type, opts);
  if (type === 'spicevmc' && (deviceKind !== 'channel' || attr(targetEl ?? el, 'type') !== 'virtio')) {
    throw errAt(ctx, el, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', 'spicevmc device type only supports virtio');
  }
  const info = parseDeviceInfo(ctx, el);
  if (deviceKind === 'serial' && targetEl && attr(targetEl, 'type') === 'usb-serial' && info.address && info.address.type !== 'usb') {
    throw errAt(ctx, el, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', 'usb-serial requires address of usb type');
  }
  const extElements = childElements(el).filter((c) => c.namespaceURI === CHARDEV_NS);
  // Kept verbatim, with the namespace declarations they borrow from the device
  // element itself (which is rewritten from the model when formatting).
  const extensions = extElements.map((c) => serializeNode(c, declarationsFrom(el, c)));
  const ext = parseExtensions(extElements, (node, code, cls, detail) => errAt(ctx, node, code, cls, detail));
  const line = lineOf(el);
  const common = { source, info, extensions, ext, ...(line !== undefined ? { line } : {}) };

  let dev: ChrDeviceDef;
  switch (deviceKind) {
    case 'serial':
      dev = { kind: 'serial', target: parseSerialTarget(ctx, targetEl), ...common };
      break;
    case 'parallel': {
      const port = targetEl ? attr(targetEl, 'port') : undefined;
      dev = {
        kind: 'parallel',
        target: port !== undefined && targetEl ? opt('port', parsePort(ctx, targetEl, port)) : {},
        ...common,
      };
      break;
    }
    case 'console':
      // tty= is output only: libvirt never reads it back (the path is in <source>).
      dev = { kind: 'console', target: parseConsoleTarget(ctx, targetEl), ...common };
      break;
    case 'channel':
      dev = { kind: 'channel', target: parseChannelTarget(ctx, targetEl, opts), ...common };
      break;
  }
  if (alias !== undefined) aliasesAtParse.set(dev, alias);
  return dev;
}

/** `<alias name='ua-…'/>`: a user alias, which libvirt keeps instead of assigning one. */
function userAliasOf(el: XmlElement): string | undefined {
  const aliasEl = childElements(el, 'alias')[0];
  const name = aliasEl ? attr(aliasEl, 'name') : undefined;
  return name?.startsWith('ua-') ? name : undefined;
}

function parseSerialTarget(ctx: ElementContext, t: XmlElement | undefined): SerialTargetDef {
  const target: SerialTargetDef = {};
  if (!t) return target;
  const type = attr(t, 'type');
  if (type !== undefined) {
    if (!(SERIAL_TARGET_TYPES as readonly string[]).includes(type)) {
      throw errAt(ctx, t, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', `unknown target type '${type}' specified for character device`);
    }
    target.type = type as SerialTargetDef['type'] & string;
  }
  const modelEl = childElements(t, 'model')[0];
  const model = modelEl ? attr(modelEl, 'name') : undefined;
  if (model !== undefined && modelEl) {
    if (!(SERIAL_TARGET_MODELS as readonly string[]).includes(model)) {
      throw errAt(ctx, modelEl, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', `unknown target model '${model}' specified for character device`);
    }
    target.model = model as SerialTargetDef['model'] & string;
  }
  const port = attr(t, 'port');
  const portNum = port === undefined ? undefined : parsePort(ctx, t, port);
  if (portNum !== undefined) target.port = portNum;
  return target;
}

function parseConsoleTarget(ctx: ElementContext, t: XmlElement | undefined): ConsoleTargetDef {
  const target: ConsoleTargetDef = {};
  if (!t) return target;
  const type = attr(t, 'type');
  if (type !== undefined) {
    if (!(CONSOLE_TARGET_TYPES as readonly string[]).includes(type)) {
      throw errAt(ctx, t, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', `unknown target type '${type}' specified for character device`);
    }
    target.type = type as ConsoleTargetDef['type'] & string;
  }
  const port = attr(t, 'port');
  const portNum = port === undefined ? undefined : parsePort(ctx, t, port);
  if (portNum !== undefined) target.port = portNum;
  return target;
}

function parseChannelTarget(ctx: ElementContext, t: XmlElement | undefined, opts: ParseOptions): ChannelTargetDef {
  if (!t) {
    throw errAt(ctx, ctx.el, 'ERR_CONFIG_MISSING', 'XML error', 'target type must be specified for channel device');
  }
  const type = attr(t, 'type');
  if (type === undefined || !(CHANNEL_TARGET_TYPES as readonly string[]).includes(type)) {
    // libvirt formats the missing string with printf's "(null)".
    throw errAt(ctx, t, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', `unknown target type '${type ?? '(null)'}' specified for character device`);
  }
  const target: ChannelTargetDef = { type: type as ChannelTargetDef['type'] };
  switch (target.type) {
    case 'guestfwd': {
      const address = attr(t, 'address');
      if (address === undefined) {
        throw errAt(ctx, t, 'ERR_CONFIG_MISSING', 'XML error', 'guestfwd channel does not define a target address');
      }
      if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(address) || address.split('.').some((octet) => Number(octet) > 255)) {
        if (address.includes(':')) {
          throw errAt(ctx, t, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', 'guestfwd channel only supports IPv4 addresses');
        }
        throw errAt(ctx, t, 'ERR_CONFIG_INVALID', 'XML error', `Cannot parse socket address '${address}'`);
      }
      target.address = address;
      const portNum = uintAttr(ctx, t, 'port', true);
      if (portNum !== undefined) target.port = portNum;
      break;
    }
    case 'virtio':
    case 'xen': {
      const name = attr(t, 'name');
      if (name !== undefined) target.name = name;
      if (target.type === 'virtio') {
        const state = attr(t, 'state');
        if (state !== undefined && opts.live) {
          if (state !== 'connected' && state !== 'disconnected') throw invalidValue(ctx, t, 'state', state);
          target.state = state;
        }
      }
      break;
    }
  }
  return target;
}

function parseDeviceInfo(ctx: ElementContext, el: XmlElement): DeviceInfoDef {
  const info: DeviceInfoDef = {};
  // Only user aliases survive in inactive XML; others are runtime names.
  const alias = userAliasOf(el);
  if (alias !== undefined) info.userAlias = alias;
  const addrEl = childElements(el, 'address')[0];
  if (addrEl) info.address = parseAddress(ctx, addrEl);
  const acpiEl = childElements(el, 'acpi')[0];
  if (acpiEl) {
    const index = uintAttr(ctx, acpiEl, 'index', false);
    if (index !== undefined) info.acpiIndex = index;
  }
  return info;
}

/** Attribute order libvirt writes per address type; others keep document order. */
const ADDRESS_ATTRS: Record<string, readonly string[]> = {
  pci: ['domain', 'bus', 'slot', 'function', 'multifunction'],
  'virtio-serial': ['controller', 'bus', 'port'],
  isa: ['iobase', 'irq'],
  usb: ['bus', 'port'],
  'spapr-vio': ['reg'],
  ccw: ['cssid', 'ssid', 'devno'],
};

function parseAddress(ctx: ElementContext, el: XmlElement): AddressDef {
  const type = attr(el, 'type');
  if (type === undefined) throw missingAttr(ctx, el, 'type');
  const order = ADDRESS_ATTRS[type];
  const attrs: Array<[string, string]> = [];
  if (order) {
    for (const name of order) {
      const v = attr(el, name);
      if (v !== undefined) attrs.push([name, v]);
    }
  } else {
    for (let i = 0; i < el.attributes.length; i++) {
      const a = el.attributes.item(i);
      if (a && a.name !== 'type' && a.namespaceURI === null) attrs.push([a.name, a.value]);
    }
  }
  if (type === 'virtio-serial') {
    for (const [name, value] of attrs) {
      if (!/^\d+$/.test(value) || Number(value) > 0xffffffff) throw invalidValue(ctx, el, name, value, 'non-negative integer value');
    }
  }
  return { type, attrs };
}

function parseMode(ctx: ElementContext, source: XmlElement): SourceMode {
  return enumAttr(ctx, source, 'mode', SOURCE_MODES) ?? 'connect';
}

function parseReconnect(ctx: ElementContext, source: XmlElement): ReconnectDef | undefined {
  const el = childElements(source, 'reconnect')[0];
  if (!el) return undefined;
  const enabled = enumAttr(ctx, el, 'enabled', ['yes', 'no'] as const);
  if (enabled === undefined) return undefined;
  if (enabled === 'no') return { enabled };
  const timeoutSec = uintAttr(ctx, el, 'timeout', true);
  return timeoutSec === undefined ? { enabled } : { enabled, timeoutSec };
}

function parseSeclabels(ctx: ElementContext, source: XmlElement): SeclabelDef[] {
  return childElements(source, 'seclabel').map((el) => {
    const label: SeclabelDef = {};
    const model = attr(el, 'model');
    if (model !== undefined) label.model = model;
    const relabel = enumAttr(ctx, el, 'relabel', ['yes', 'no'] as const);
    if (relabel !== undefined) label.relabel = relabel;
    const labelskip = enumAttr(ctx, el, 'labelskip', ['yes', 'no'] as const);
    if (labelskip !== undefined) label.labelskip = labelskip;
    const labelEl = childElements(el, 'label')[0];
    if (labelEl) label.label = (labelEl.textContent ?? '').trim();
    return label;
  });
}

/** `{ key: value }` when value is defined, else `{}` (exactOptionalPropertyTypes-friendly). */
function opt<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

function setIf<T extends object, K extends keyof T>(obj: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) obj[key] = value;
}

function parseSource(ctx: ElementContext, el: XmlElement, type: ChrType, opts: ParseOptions): ChrSourceDef {
  const sources = childElements(el, 'source');
  const logs = childElements(el, 'log');
  const protocols = childElements(el, 'protocol');
  const maxSources = type === 'udp' ? 2 : 1;
  if (sources.length > maxSources) {
    const extra = sources[maxSources] ?? el;
    throw errAt(
      ctx,
      extra,
      'ERR_CONFIG_INVALID',
      'XML error',
      type === 'udp' ? 'only two source elements are allowed for character device' : 'only one source element is allowed for character device',
    );
  }
  if (logs.length > 1) {
    throw errAt(ctx, logs[1] ?? el, 'ERR_CONFIG_INVALID', 'XML error', 'only one log element is allowed for character device');
  }
  if (protocols.length > 1) {
    throw errAt(ctx, protocols[1] ?? el, 'ERR_CONFIG_INVALID', 'XML error', 'only one protocol element is allowed for character device');
  }

  const seclabels = sources.flatMap((s) => parseSeclabels(ctx, s));
  const def = buildSource(ctx, type, sources, protocols[0], opts);
  def.seclabels = seclabels;
  const logEl = logs[0];
  if (logEl) {
    const file = attr(logEl, 'file');
    if (file !== undefined) {
      def.log = { file };
      setIf(def.log, 'append', enumAttr(ctx, logEl, 'append', ['on', 'off'] as const));
    }
  }
  return def;
}

function buildSource(ctx: ElementContext, type: ChrType, sources: XmlElement[], protocolEl: XmlElement | undefined, opts: ParseOptions): ChrSourceDef {
  const src = sources[0];
  const seclabels: SeclabelDef[] = [];
  switch (type) {
    case 'null':
    case 'vc':
    case 'stdio':
    case 'spicevmc':
      return { type, seclabels };
    case 'pty': {
      const def: ChrSourceDef = { type, seclabels };
      // A pty path is runtime state: libvirt reads it from live XML only.
      if (opts.live && src) setIf(def, 'path', attr(src, 'path'));
      return def;
    }
    case 'dev':
    case 'pipe':
      return { type, seclabels, ...opt('path', src && attr(src, 'path')) };
    case 'file': {
      const def: ChrSourceDef = { type, seclabels };
      if (src) {
        setIf(def, 'path', attr(src, 'path'));
        setIf(def, 'append', enumAttr(ctx, src, 'append', ['on', 'off'] as const));
      }
      return def;
    }
    case 'udp': {
      const def: ChrSourceDef = { type, seclabels };
      for (const s of sources) {
        const mode = parseMode(ctx, s);
        if (mode === 'bind') {
          if (def.bindHost === undefined && def.bindService === undefined) {
            setIf(def, 'bindHost', attr(s, 'host'));
            setIf(def, 'bindService', attr(s, 'service'));
          }
        } else if (def.connectHost === undefined && def.connectService === undefined) {
          setIf(def, 'connectHost', attr(s, 'host'));
          setIf(def, 'connectService', attr(s, 'service'));
        }
      }
      return def;
    }
    case 'tcp': {
      let protocol: ChrSourceDef & { type: 'tcp' } extends { protocol: infer P } ? P : never = 'raw';
      if (protocolEl) {
        const p = attr(protocolEl, 'type');
        if (p !== undefined) {
          if (!(TCP_PROTOCOLS as readonly string[]).includes(p)) {
            throw errAt(ctx, protocolEl, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', `Unknown protocol '${p}'`);
          }
          protocol = p as typeof protocol;
        }
      }
      const def: ChrSourceDef = { type, mode: src ? parseMode(ctx, src) : 'connect', protocol, seclabels };
      if (src) {
        setIf(def, 'host', attr(src, 'host'));
        setIf(def, 'service', attr(src, 'service'));
        setIf(def, 'tls', enumAttr(ctx, src, 'tls', ['yes', 'no'] as const));
        setIf(def, 'reconnect', parseReconnect(ctx, src));
      }
      return def;
    }
    case 'unix': {
      const def: ChrSourceDef = { type, mode: src ? parseMode(ctx, src) : 'connect', seclabels };
      if (src) {
        setIf(def, 'path', attr(src, 'path'));
        setIf(def, 'reconnect', parseReconnect(ctx, src));
      }
      return def;
    }
    case 'spiceport':
    case 'dbus':
      return { type, seclabels, ...opt('channel', src && attr(src, 'channel')) };
    case 'nmdm': {
      const def: ChrSourceDef = { type, seclabels };
      if (src) {
        setIf(def, 'master', attr(src, 'master'));
        setIf(def, 'slave', attr(src, 'slave'));
      }
      return def;
    }
    case 'qemu-vdagent': {
      const def: ChrSourceDef = { type, seclabels };
      if (src) {
        const clip = childElements(src, 'clipboard')[0];
        if (clip) setIf(def, 'clipboardCopypaste', enumAttr(ctx, clip, 'copypaste', ['yes', 'no'] as const));
        const mouse = childElements(src, 'mouse')[0];
        if (mouse) setIf(def, 'mouseMode', enumAttr(ctx, mouse, 'mode', ['client', 'server'] as const));
      }
      return def;
    }
  }
}
