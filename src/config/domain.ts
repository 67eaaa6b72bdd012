/**
 * Loading a whole `<domain>` document (or a single device element) into the
 * model, in libvirt's order: parse, post-parse (defaults, console
 * compatibility, addresses), validate.
 */
import { ConfigError } from '../errors.ts';
import { parseChrDevice, configError, type ParseOptions } from './parse.ts';
import { postParse, type DriverOptions } from './postparse.ts';
import {
  DEVICE_KINDS,
  type ChannelDef,
  type ChrDeviceDef,
  type ConsoleDef,
  type DomainChardevsDef,
  type ParallelDef,
  type SerialDef,
  type VirtioSerialControllerDef,
} from './types.ts';
import { validateDomain } from './validate.ts';
import { attr, childElements, lineOf, loadXml, type XmlDocument, type XmlElement } from './xml.ts';

export interface LoadOptions extends Partial<DriverOptions> {
  /** File name for messages (default '<string>'). */
  file?: string;
  /** Parse as live XML (keeps pty paths, tty=, channel state). */
  live?: boolean;
}

/** A loaded document: the model plus what is needed to write the rest back unchanged. */
export interface LoadedDomain {
  readonly def: DomainChardevsDef;
  readonly file: string;
  /** The parsed document; chardev elements are rewritten from `def` when formatting. */
  readonly doc: XmlDocument;
  /** True when the document is a single device element rather than a `<domain>`. */
  readonly standalone: boolean;
  readonly driver: DriverOptions;
}

export const DEFAULT_DRIVER_OPTIONS: DriverOptions = {
  channelTargetDir: '/var/lib/libvirt/qemu/channel/target',
  tlsDefault: false,
  // libvirt's default_tls_x509_verify is 1; its test harness sets 0 explicitly.
  tlsVerify: true,
  tlsCertDir: '/etc/pki/libvirt-chardev',
};

const DEVICE_NAMES: ReadonlySet<string> = new Set(DEVICE_KINDS);

/** Parse a domain (or device) document, apply libvirt's defaults and validate it. */
export function loadDomain(text: string, options: LoadOptions = {}): LoadedDomain {
  const file = options.file ?? '<string>';
  const driver: DriverOptions = {
    channelTargetDir: options.channelTargetDir ?? DEFAULT_DRIVER_OPTIONS.channelTargetDir,
    tlsDefault: options.tlsDefault ?? DEFAULT_DRIVER_OPTIONS.tlsDefault,
    tlsVerify: options.tlsVerify ?? DEFAULT_DRIVER_OPTIONS.tlsVerify,
    tlsCertDir: options.tlsCertDir ?? DEFAULT_DRIVER_OPTIONS.tlsCertDir,
    ...(options.tlsSecretUuid !== undefined ? { tlsSecretUuid: options.tlsSecretUuid } : {}),
  };
  const doc = loadXml(text, file);
  const root = doc.documentElement;
  if (!root) throw new ConfigError('ERR_XML_MALFORMED', 'XML error', 'missing root element', { file });
  const parseOpts: ParseOptions = { file, live: options.live ?? false };
  let def: DomainChardevsDef;
  let standalone = false;
  if (root.namespaceURI === null && root.localName === 'domain') {
    def = parseDomainElement(root, parseOpts);
  } else if (root.namespaceURI === null && DEVICE_NAMES.has(root.localName ?? '')) {
    standalone = true;
    def = emptyDomain();
    addDevice(def, parseChrDevice(root, { ...parseOpts, alias: `${root.localName ?? ''}0` }), 0);
  } else {
    throw configError(
      { file, line: lineOf(root), element: `<${root.tagName}>` },
      'ERR_XML_NOT_DOMAIN',
      'XML error',
      'expected a <domain> document or a <serial>, <parallel>, <console> or <channel> element',
    );
  }
  postParse(def, driver, { file, live: parseOpts.live ?? false, standalone });
  validateDomain(def, driver, file);
  return { def, file, doc, standalone, driver };
}

function emptyDomain(): DomainChardevsDef {
  return { serials: [], parallels: [], consoles: [], channels: [], virtioSerialControllers: [] };
}

function addDevice(def: DomainChardevsDef, dev: ChrDeviceDef, index: number): void {
  switch (dev.kind) {
    case 'serial':
      def.serials.push(dev);
      return;
    case 'parallel':
      def.parallels.push(dev);
      return;
    case 'console':
      // libvirt sets a console's port to its index, whatever the XML says.
      dev.target.port = index;
      def.consoles.push(dev);
      return;
    case 'channel':
      def.channels.push(dev);
      return;
  }
}

/** Serial target types after which console compatibility puts a stub console first. */
const STUB_BEFORE_SERIAL_TARGETS: ReadonlySet<string | undefined> = new Set([undefined, 'isa-serial', 'spapr-vio-serial', 'system-serial', 'sclp-serial']);

/**
 * The aliases libvirt will give the `<console>` elements, known before parsing them so that
 * a parse error can name its device: console compatibility (postparse.ts addConsoleCompat) makes
 * a serial-typed first console serial 0, or puts a stub console in front of the others.
 */
function predictConsoleAliases(devices: XmlElement, hvm: boolean): string[] {
  const consoles = childElements(devices, 'console');
  const targetType = (el: XmlElement | undefined): string | undefined => {
    const t = el ? childElements(el, 'target')[0] : undefined;
    return t ? attr(t, 'type') : undefined;
  };
  if (!hvm) return consoles.map((_, i) => `console${i}`);
  const firstType = targetType(consoles[0]);
  if (consoles.length > 0 && (firstType === undefined || firstType === 'serial')) {
    return consoles.map((_, i) => (i === 0 ? 'serial0' : `console${i}`));
  }
  const serial0 = childElements(devices, 'serial')[0];
  const shift = serial0 !== undefined && STUB_BEFORE_SERIAL_TARGETS.has(targetType(serial0)) ? 1 : 0;
  return consoles.map((_, i) => `console${i + shift}`);
}

function parseDomainElement(root: XmlElement, opts: ParseOptions): DomainChardevsDef {
  const def = emptyDomain();
  const nameEl = childElements(root, 'name')[0];
  if (nameEl?.textContent) def.name = nameEl.textContent.trim();
  const osEl = childElements(root, 'os')[0];
  const typeEl = osEl ? childElements(osEl, 'type')[0] : undefined;
  if (typeEl) {
    const osType = typeEl.textContent?.trim();
    if (osType) def.osType = osType;
    const arch = attr(typeEl, 'arch');
    if (arch !== undefined) def.arch = arch;
    const machine = attr(typeEl, 'machine');
    if (machine !== undefined) def.machine = machine;
  }
  const devices = childElements(root, 'devices')[0];
  def.spiceGraphics = devices !== undefined && childElements(devices, 'graphics').some((g) => attr(g, 'type') === 'spice');
  if (!devices) return def;
  // libvirt parses parallels, serials, consoles, channels in that order.
  // Parallel ports missing a port number take one past the earlier siblings' maximum
  // (kept as a running maximum: a document may hold many thousands of them).
  let maxParallelPort = -1;
  const as = (kind: string, i: number): ParseOptions => ({ ...opts, alias: `${kind}${i}` });
  const consoleAliases = predictConsoleAliases(devices, def.osType === 'hvm');
  for (const [i, el] of childElements(devices, 'parallel').entries()) {
    const p = parseChrDevice(el, as('parallel', i)) as ParallelDef;
    if (p.target.port === undefined) p.target.port = maxParallelPort + 1;
    maxParallelPort = Math.max(maxParallelPort, p.target.port);
    def.parallels.push(p);
  }
  childElements(devices, 'serial').forEach((el, i) => def.serials.push(parseChrDevice(el, as('serial', i)) as SerialDef));
  childElements(devices, 'console').forEach((el, i) =>
    addDevice(def, parseChrDevice(el, { ...opts, alias: consoleAliases[i] ?? `console${i}` }) as ConsoleDef, i),
  );
  childElements(devices, 'channel').forEach((el, i) => def.channels.push(parseChrDevice(el, as('channel', i)) as ChannelDef));
  const unindexed: VirtioSerialControllerDef[] = [];
  for (const el of childElements(devices, 'controller')) {
    if (attr(el, 'type') !== 'virtio-serial') continue;
    const idx = attr(el, 'index');
    // virStrToLong_i, then a check for negative values.
    if (idx !== undefined && (!/^\s*\+?\d+$/.test(idx) || Number(idx) > 0x7fffffff)) {
      throw configError(
        { file: opts.file, line: lineOf(el), element: "<controller type='virtio-serial'>" },
        'ERR_CONFIG_INVALID',
        'internal error',
        `Cannot parse controller index ${idx}`,
      );
    }
    const ctrl: VirtioSerialControllerDef = { index: idx === undefined ? -1 : Number(idx) };
    const ports = attr(el, 'ports');
    if (ports !== undefined && /^\d+$/.test(ports)) ctrl.ports = Number(ports);
    if (idx === undefined) unindexed.push(ctrl);
    def.virtioSerialControllers.push(ctrl);
  }
  // libvirt's post-parse gives a controller without an index the lowest unused one.
  const usedIndexes = new Set(def.virtioSerialControllers.map((c) => c.index));
  let nextIndex = 0;
  for (const ctrl of unindexed) {
    while (usedIndexes.has(nextIndex)) nextIndex++;
    ctrl.index = nextIndex;
    usedIndexes.add(nextIndex);
  }
  return def;
}
