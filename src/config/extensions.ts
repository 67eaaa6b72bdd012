/**
 * chardev's own settings, in the `urn:chardev:1` namespace inside a device element. libvirt
 * has no words for these, so the messages are ours; they still name file, line and device.
 * The elements themselves are kept verbatim for formatting (DeviceCommon.extensions); this
 * module only turns them into typed settings the runtime reads.
 */
import type { ConfigErrorCode, LibvirtErrorClass } from '../errors.ts';
import type { ConfigError } from '../errors.ts';
import type {
  ClientsExtensionDef,
  DeviceExtensions,
  HistoryExtensionDef,
  RotateExtensionDef,
  StallExtensionDef,
  TlsExtensionDef,
  WebExtensionDef,
} from './types.ts';
import { attr, type XmlElement } from './xml.ts';

export const CHARDEV_NS = 'urn:chardev:1';

/** Extension elements chardev knows; anything else in the namespace is a typo worth reporting. */
export const EXTENSION_ELEMENTS = ['tls', 'history', 'clients', 'web', 'rotate', 'stall'] as const;

export type ErrorAt = (node: XmlElement, code: ConfigErrorCode, cls: LibvirtErrorClass, detail: string) => ConfigError;

function yesNo(el: XmlElement, name: string, errAt: ErrorAt): boolean | undefined {
  const v = attr(el, name);
  if (v === undefined) return undefined;
  if (v === 'yes') return true;
  if (v === 'no') return false;
  throw errAt(el, 'ERR_CONFIG_INVALID', 'XML error', `Invalid value for attribute '${name}' in element '${el.tagName}': '${v}'. Expected 'yes' or 'no'`);
}

function parseTls(el: XmlElement, errAt: ErrorAt): TlsExtensionDef {
  const out: TlsExtensionDef = {};
  const dir = attr(el, 'dir');
  if (dir !== undefined) {
    if (!dir.startsWith('/'))
      throw errAt(el, 'ERR_CONFIG_INVALID', 'XML error', `TLS credentials directory '${dir}' in element '${el.tagName}' must be an absolute path`);
    out.dir = dir;
  }
  const verify = yesNo(el, 'verify', errAt);
  if (verify !== undefined) out.verifyPeer = verify;
  return out;
}

/** Upper bounds that keep a typo (an extra zero or three) from reserving gigabytes. */
export const MAX_HISTORY_BYTES = 64 * 1024 * 1024;
export const MAX_CLIENTS = 256;
export const MAX_QUEUE_BYTES = 64 * 1024 * 1024;
export const MAX_ROTATE_BYTES = 1024 * 1024 * 1024 * 1024;
export const MAX_ROTATE_BACKUPS = 1000;
/** A day: a longer stall limit is a typo for "none". */
export const MAX_STALL_SECONDS = 86_400;
/** virtlogd's: the domain log rotates the same way. */
/** virtlogd's: 2 MiB, 3 rotated files. The one default, for `<cd:rotate/>` and the domain log alike. */
export const DEFAULT_ROTATE: RotateExtensionDef = { maxBytes: 2 * 1024 * 1024, backups: 3 };

function positiveInt(el: XmlElement, name: string, max: number, errAt: ErrorAt): number | undefined {
  const v = attr(el, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > max) {
    throw errAt(
      el,
      'ERR_CONFIG_INVALID',
      'XML error',
      `Invalid value for attribute '${name}' in element '${el.tagName}': '${v}'. Expected an integer from 1 to ${max}`,
    );
  }
  return n;
}

function parseHistory(el: XmlElement, errAt: ErrorAt): HistoryExtensionDef {
  const size = positiveInt(el, 'size', MAX_HISTORY_BYTES, errAt);
  if (size === undefined) throw errAt(el, 'ERR_CONFIG_MISSING', 'XML error', `missing attribute 'size' (bytes) in element '${el.tagName}'`);
  return { sizeBytes: size };
}

function parseClients(el: XmlElement, errAt: ErrorAt): ClientsExtensionDef {
  const max = positiveInt(el, 'max', MAX_CLIENTS, errAt);
  if (max === undefined) throw errAt(el, 'ERR_CONFIG_MISSING', 'XML error', `missing attribute 'max' in element '${el.tagName}'`);
  const out: ClientsExtensionDef = { max };
  const queue = positiveInt(el, 'queue', MAX_QUEUE_BYTES, errAt);
  if (queue !== undefined) out.queueBytes = queue;
  const slow = attr(el, 'slow');
  if (slow !== undefined) {
    if (slow !== 'drop' && slow !== 'disconnect') {
      throw errAt(
        el,
        'ERR_CONFIG_INVALID',
        'XML error',
        `Invalid value for attribute 'slow' in element '${el.tagName}': '${slow}'. Expected 'drop' or 'disconnect'`,
      );
    }
    out.slow = slow;
  }
  return out;
}

function parseStall(el: XmlElement, errAt: ErrorAt): StallExtensionDef {
  const timeout = positiveInt(el, 'timeout', MAX_STALL_SECONDS, errAt);
  if (timeout === undefined) throw errAt(el, 'ERR_CONFIG_MISSING', 'XML error', `missing attribute 'timeout' (seconds) in element '${el.tagName}'`);
  const action = attr(el, 'action') ?? 'drop';
  if (action !== 'drop' && action !== 'disconnect') {
    throw errAt(
      el,
      'ERR_CONFIG_INVALID',
      'XML error',
      `Invalid value for attribute 'action' in element '${el.tagName}': '${action}'. Expected 'drop' or 'disconnect'`,
    );
  }
  return { timeoutSec: timeout, action };
}

function parseRotate(el: XmlElement, errAt: ErrorAt): RotateExtensionDef {
  const size = positiveInt(el, 'size', MAX_ROTATE_BYTES, errAt);
  const backups = attr(el, 'backups');
  if (backups !== undefined && (!/^\d+$/.test(backups) || Number(backups) > MAX_ROTATE_BACKUPS)) {
    throw errAt(
      el,
      'ERR_CONFIG_INVALID',
      'XML error',
      `Invalid value for attribute 'backups' in element '${el.tagName}': '${backups}'. Expected an integer from 0 to ${MAX_ROTATE_BACKUPS}`,
    );
  }
  return { maxBytes: size ?? DEFAULT_ROTATE.maxBytes, backups: backups === undefined ? DEFAULT_ROTATE.backups : Number(backups) };
}

function parseWeb(el: XmlElement, errAt: ErrorAt): WebExtensionDef {
  const out: WebExtensionDef = {};
  const listen = attr(el, 'listen');
  if (listen !== undefined) {
    if (listen === '' || /[\s/]/.test(listen))
      throw errAt(el, 'ERR_CONFIG_INVALID', 'XML error', `Invalid value for attribute 'listen' in element '${el.tagName}': '${listen}'. Expected an address`);
    out.listen = listen;
  }
  const port = attr(el, 'port');
  if (port !== undefined) {
    const n = Number(port);
    if (!/^\d+$/.test(port) || n > 65535)
      throw errAt(
        el,
        'ERR_CONFIG_INVALID',
        'XML error',
        `Invalid value for attribute 'port' in element '${el.tagName}': '${port}'. Expected a port number (0 picks a free one)`,
      );
    out.port = n;
  }
  return out;
}

/** Typed settings from a device's `urn:chardev:1` children. */
export function parseExtensions(elements: readonly XmlElement[], errAt: ErrorAt): DeviceExtensions {
  const ext: DeviceExtensions = {};
  const seen = new Set<string>();
  for (const el of elements) {
    const name = el.localName ?? el.tagName;
    if (!(EXTENSION_ELEMENTS as readonly string[]).includes(name)) {
      throw errAt(
        el,
        'ERR_CONFIG_UNSUPPORTED',
        'unsupported configuration',
        `unknown chardev extension element '${el.tagName}' (known: ${EXTENSION_ELEMENTS.join(', ')})`,
      );
    }
    if (seen.has(name)) throw errAt(el, 'ERR_CONFIG_INVALID', 'XML error', `element '${el.tagName}' may appear only once per device`);
    seen.add(name);
    if (name === 'tls') ext.tls = parseTls(el, errAt);
    else if (name === 'history') ext.history = parseHistory(el, errAt);
    else if (name === 'web') ext.web = parseWeb(el, errAt);
    else if (name === 'rotate') ext.rotate = parseRotate(el, errAt);
    else if (name === 'stall') ext.stall = parseStall(el, errAt);
    else ext.clients = parseClients(el, errAt);
  }
  return ext;
}
