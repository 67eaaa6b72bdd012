/**
 * Model → XML, as libvirt 9.0.0's virDomainChrDefFormat writes it. Inactive
 * XML is what `virsh dumpxml --inactive` prints after define; live XML adds
 * what exists only while running (pty paths, tty=, aliases, bound ports).
 */
import { assertNever } from '../errors.ts';
import type { LoadedDomain } from './domain.ts';
import { deviceAlias } from './names.ts';
import { DEVICE_KINDS, type ChrDeviceDef, type ChrSourceDef, type DomainChardevsDef, type LiveState, type SeclabelDef } from './types.ts';
import {
  attr,
  childElements,
  formatXmlOut,
  NODE,
  rawXml,
  serializeNode,
  textElement,
  x,
  type XmlDocument,
  type XmlElement,
  type XmlNode,
  type XmlOut,
} from './xml.ts';

export interface FormatOptions {
  /** Live XML, with the runtime's state (or just what the document itself carried). */
  live?: boolean;
  state?: LiveState;
}

interface FormatCtx {
  live: boolean;
  state: LiveState;
}

function seclabelOut(s: SeclabelDef): XmlOut {
  const attrs: Array<[string, string | undefined]> = [
    ['model', s.model],
    ['labelskip', s.labelskip],
    ['relabel', s.relabel],
  ];
  return x('seclabel', attrs, s.label !== undefined ? [textElement('label', s.label)] : []);
}

function reconnectOut(src: ChrSourceDef & { type: 'tcp' | 'unix' }): XmlOut | undefined {
  const r = src.reconnect;
  if (!r) return undefined;
  return x('reconnect', [
    ['enabled', r.enabled],
    ['timeout', r.enabled === 'yes' ? r.timeoutSec : undefined],
  ]);
}

/** `<source>`(s) and, for tcp, `<protocol>`; then `<log>`. */
function sourceOut(src: ChrSourceDef, alias: string, ctx: FormatCtx): XmlOut[] {
  const out: XmlOut[] = [];
  const seclabels = src.seclabels.map(seclabelOut);
  switch (src.type) {
    case 'null':
    case 'vc':
    case 'stdio':
    case 'spicevmc':
      break;
    case 'qemu-vdagent':
      if (src.clipboardCopypaste !== undefined || src.mouseMode !== undefined) {
        out.push(
          x(
            'source',
            [],
            [
              src.clipboardCopypaste !== undefined && x('clipboard', [['copypaste', src.clipboardCopypaste]]),
              src.mouseMode !== undefined && x('mouse', [['mode', src.mouseMode]]),
            ],
          ),
        );
      }
      break;
    case 'pty': {
      const path = ctx.state.ptyPaths?.get(alias) ?? src.path;
      if (ctx.live && path !== undefined) out.push(x('source', [['path', path]], seclabels));
      break;
    }
    case 'dev':
    case 'pipe':
      out.push(x('source', [['path', src.path]], seclabels));
      break;
    case 'file':
      out.push(
        x(
          'source',
          [
            ['path', src.path],
            ['append', src.append],
          ],
          seclabels,
        ),
      );
      break;
    case 'nmdm':
      if (src.master !== undefined || src.slave !== undefined) {
        out.push(
          x('source', [
            ['master', src.master],
            ['slave', src.slave],
          ]),
        );
      }
      break;
    case 'udp': {
      const bound = ctx.live ? ctx.state.boundServices?.get(alias) : undefined;
      if (src.bindHost !== undefined || src.bindService !== undefined) {
        out.push(
          x('source', [
            ['mode', 'bind'],
            ['host', src.bindHost],
            ['service', bound ?? src.bindService],
          ]),
        );
      }
      if (src.connectHost !== undefined || src.connectService !== undefined) {
        out.push(
          x('source', [
            ['mode', 'connect'],
            ['host', src.connectHost],
            ['service', src.connectService],
          ]),
        );
      }
      break;
    }
    case 'tcp': {
      const bound = ctx.live && src.mode === 'bind' ? ctx.state.boundServices?.get(alias) : undefined;
      // libvirt parses seclabels on tcp sources but never writes them back.
      out.push(
        x(
          'source',
          [
            ['mode', src.mode],
            ['host', src.host],
            ['service', bound ?? src.service],
            ['tls', src.tls],
          ],
          [reconnectOut(src)],
        ),
      );
      out.push(x('protocol', [['type', src.protocol]]));
      break;
    }
    case 'unix':
      if (src.path !== undefined) {
        out.push(
          x(
            'source',
            [
              ['mode', src.mode],
              ['path', src.path],
            ],
            [...seclabels, reconnectOut(src)],
          ),
        );
      }
      break;
    case 'spiceport':
    case 'dbus':
      if (src.channel !== undefined) out.push(x('source', [['channel', src.channel]]));
      break;
    default:
      assertNever(src, 'chardev type');
  }
  if (src.log)
    out.push(
      x('log', [
        ['file', src.log.file],
        ['append', src.log.append],
      ]),
    );
  return out;
}

function targetOut(dev: ChrDeviceDef, ctx: FormatCtx): XmlOut {
  switch (dev.kind) {
    case 'serial':
      return x(
        'target',
        [
          ['type', dev.target.type],
          ['port', dev.target.port],
        ],
        [dev.target.model !== undefined && x('model', [['name', dev.target.model]])],
      );
    case 'parallel':
      return x('target', [['port', dev.target.port]]);
    case 'console':
      return x('target', [
        ['type', dev.target.type],
        ['port', dev.target.port],
      ]);
    case 'channel': {
      const t = dev.target;
      if (t.type === 'guestfwd')
        return x('target', [
          ['type', t.type],
          ['address', t.address],
          ['port', t.port],
        ]);
      return x('target', [
        ['type', t.type],
        ['name', t.name],
        ['state', ctx.live && t.type === 'virtio' ? t.state : undefined],
      ]);
    }
  }
}

/**
 * What a device element prints as: a serial-typed console N of an HVM guest
 * is serial N seen again, printed with serial N's source, log, port and address.
 */
function printedAs(def: DomainChardevsDef, dev: ChrDeviceDef, index: number): { dev: ChrDeviceDef; alias: string } {
  if (dev.kind === 'console' && def.osType === 'hvm' && (dev.target.type === 'serial' || dev.target.type === undefined) && index < def.serials.length) {
    const serial = def.serials[index];
    if (serial) {
      return {
        dev: {
          kind: 'console',
          source: serial.source,
          info: serial.info,
          target: { type: 'serial', ...(serial.target.port !== undefined ? { port: serial.target.port } : {}) },
          extensions: dev.extensions,
          ext: dev.ext,
        },
        alias: deviceAlias(serial, index),
      };
    }
  }
  return { dev, alias: deviceAlias(dev, index) };
}

export function deviceOut(def: DomainChardevsDef, device: ChrDeviceDef, index: number, ctx: FormatCtx): XmlOut {
  const { dev, alias } = printedAs(def, device, index);
  const src = dev.source;
  let tty: string | undefined;
  if (dev.kind === 'console' && dev.target.port === 0 && src.type === 'pty' && ctx.live) {
    tty = ctx.state.ptyPaths?.get(alias) ?? src.path;
  }
  const info = dev.info;
  const shownAlias = ctx.live ? alias : info.userAlias;
  return x(
    dev.kind,
    [
      ['type', src.type],
      ['tty', tty],
    ],
    [
      ...sourceOut(src, alias, ctx),
      targetOut(dev, ctx),
      shownAlias !== undefined && x('alias', [['name', shownAlias]]),
      info.acpiIndex !== undefined && x('acpi', [['index', info.acpiIndex]]),
      info.address !== undefined && x('address', [['type', info.address.type], ...info.address.attrs]),
      ...dev.extensions.map(rawXml),
    ],
  );
}

/** All chardev elements in libvirt's order: serials, parallels, consoles, channels. */
export function chardevElementsOut(def: DomainChardevsDef, options: FormatOptions = {}): XmlOut[] {
  const ctx: FormatCtx = { live: options.live ?? false, state: options.state ?? {} };
  return [
    ...def.serials.map((d, i) => deviceOut(def, d, i, ctx)),
    ...def.parallels.map((d, i) => deviceOut(def, d, i, ctx)),
    ...def.consoles.map((d, i) => deviceOut(def, d, i, ctx)),
    ...def.channels.map((d, i) => deviceOut(def, d, i, ctx)),
  ];
}

const CHARDEV_ELEMENTS: ReadonlySet<string> = new Set(DEVICE_KINDS);
/** Elements libvirt writes after the chardevs, to place them when the input had none. */
const AFTER_CHARDEVS = new Set([
  'input',
  'tpm',
  'graphics',
  'sound',
  'audio',
  'video',
  'hostdev',
  'redirdev',
  'redirfilter',
  'hub',
  'watchdog',
  'memballoon',
  'rng',
  'nvram',
  'panic',
  'shmem',
  'iommu',
  'vsock',
  'crypto',
]);

/** Elements libvirt writes after its controllers, to place the first one when there was none. */
const AFTER_CONTROLLERS = new Set(['lease', 'filesystem', 'interface', 'smartcard', ...DEVICE_KINDS, ...AFTER_CHARDEVS]);

/** The whitespace before `el`'s line, i.e. its indentation ('    ' if there is none to copy). */
function indentOf(el: XmlNode): string {
  const prev = el.previousSibling;
  if (!prev || !isBlank(prev)) return '    ';
  const ws = prev.nodeValue ?? '';
  return ws.slice(ws.lastIndexOf('\n') + 1);
}

/**
 * The virtio-serial controllers as libvirt prints them: the document's own with the index
 * libvirt gave one that had none (attributes in libvirt's order), and the ones libvirt added for
 * a virtio channel or console that needed one, among the controllers in index order. libvirt
 * also gives every controller a PCI `<address>` from its PCI allocator, which models every PCI
 * device of the domain; chardev does not, so an added controller has none (QEMU places it).
 */
function virtioSerialControllersOut(doc: XmlDocument, devices: XmlElement, def: DomainChardevsDef): void {
  const own = childElements(devices, 'controller').filter((e) => attr(e, 'type') === 'virtio-serial');
  // The document's controllers were parsed first, in document order.
  const parsed = def.virtioSerialControllers.filter((c) => c.implicit !== true);
  own.forEach((el, i) => {
    const ctrl = parsed[i];
    if (ctrl === undefined || el.hasAttribute('index')) return;
    const rest: Array<[string, string]> = [];
    for (let a = 0; a < el.attributes.length; a++) {
      const item = el.attributes.item(a);
      if (item && item.name !== 'type') rest.push([item.name, item.value]);
    }
    for (const [name] of rest) el.removeAttribute(name);
    el.setAttribute('index', String(ctrl.index));
    for (const [name, value] of rest) el.setAttribute(name, value);
  });
  const added = def.virtioSerialControllers.filter((c) => c.implicit === true).sort((a, b) => a.index - b.index);
  for (const ctrl of added) {
    const el = doc.createElement('controller');
    el.setAttribute('type', 'virtio-serial');
    el.setAttribute('index', String(ctrl.index));
    const virtioSerial = childElements(devices, 'controller').filter((e) => attr(e, 'type') === 'virtio-serial');
    const higher = virtioSerial.find((e) => Number(attr(e, 'index') ?? NaN) > ctrl.index);
    const controllers = childElements(devices, 'controller');
    const last = controllers[controllers.length - 1];
    if (higher !== undefined) {
      devices.insertBefore(el, higher);
      devices.insertBefore(doc.createTextNode(`\n${indentOf(higher)}`), higher);
    } else if (last !== undefined) {
      const next = last.nextSibling;
      devices.insertBefore(doc.createTextNode(`\n${indentOf(last)}`), next);
      devices.insertBefore(el, next);
    } else {
      const follower = childElements(devices).find((e) => e.namespaceURI === null && AFTER_CONTROLLERS.has(e.localName ?? ''));
      if (follower !== undefined) {
        devices.insertBefore(el, follower);
        devices.insertBefore(doc.createTextNode(`\n${indentOf(follower)}`), follower);
      } else {
        const end = devices.lastChild;
        const ws = doc.createTextNode('\n    ');
        if (end && isBlank(end)) {
          devices.insertBefore(ws, end);
          devices.insertBefore(el, end);
        } else devices.appendChild(el);
      }
    }
  }
}

function isBlank(node: XmlNode | null): boolean {
  return node !== null && node.nodeType === NODE.TEXT && /^\s*$/.test(node.nodeValue ?? '');
}

/**
 * The whole document with its chardev elements rewritten from the model and
 * everything else as it was.
 */
export function formatDomain(loaded: LoadedDomain, options: FormatOptions = {}): string {
  const elements = chardevElementsOut(loaded.def, options);
  if (loaded.standalone) {
    return elements.map((e) => formatXmlOut(e, '')).join('');
  }
  const doc = loaded.doc.cloneNode(true) as typeof loaded.doc;
  const root = doc.documentElement;
  const devices = root ? childElements(root, 'devices')[0] : undefined;
  if (!devices) return serializeNode(doc);
  virtioSerialControllersOut(doc, devices, loaded.def);
  const old = childElements(devices).filter((e) => e.namespaceURI === null && CHARDEV_ELEMENTS.has(e.localName ?? ''));
  if (old.length === 0 && elements.length === 0) return serializeNode(doc);
  let indent = '    ';
  const anchor = old[0] ?? childElements(devices).find((e) => e.namespaceURI === null && AFTER_CHARDEVS.has(e.localName ?? ''));
  const before = anchor?.previousSibling ?? devices.lastChild;
  if (before && isBlank(before)) {
    const ws = before.nodeValue ?? '';
    indent = ws.slice(ws.lastIndexOf('\n') + 1);
  }
  const token = `chardev-${Math.random().toString(36).slice(2)}`;
  const marker = doc.createComment(token);
  if (anchor) {
    devices.insertBefore(marker, anchor);
    if (!old[0]) devices.insertBefore(doc.createTextNode(`\n${indent}`), anchor);
  } else {
    const last = devices.lastChild;
    if (last && isBlank(last)) {
      devices.insertBefore(doc.createTextNode(`\n${indent}`), last);
      devices.insertBefore(marker, last);
    } else devices.appendChild(marker);
  }
  for (const el of old) {
    const prev = el.previousSibling;
    if (el !== old[0] && prev && isBlank(prev)) devices.removeChild(prev);
    devices.removeChild(el);
  }
  // The first chardev follows the whitespace that preceded the first old one.
  const text = elements
    .map((e) => formatXmlOut(e, indent).slice(indent.length))
    .join(indent)
    .replace(/\n$/, '');
  const out = serializeNode(doc);
  return out.replace(`<!--${token}-->`, () => text);
}
