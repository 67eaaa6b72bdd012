/**
 * chardev's own settings, in the `urn:chardev:1` namespace inside a device element. libvirt
 * has no words for these, so the messages are ours; they still name file, line and device.
 * The elements themselves are kept verbatim for formatting (DeviceCommon.extensions); this
 * module only turns them into typed settings the runtime reads.
 */
import type { ConfigErrorCode, LibvirtErrorClass } from '../errors.ts';
import type { ConfigError } from '../errors.ts';
import type { DeviceExtensions, TlsExtensionDef } from './types.ts';
import { attr, type XmlElement } from './xml.ts';

export const CHARDEV_NS = 'urn:chardev:1';

/** Extension elements chardev knows; anything else in the namespace is a typo worth reporting. */
export const EXTENSION_ELEMENTS = ['tls', 'history', 'clients'] as const;

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
    if (!dir.startsWith('/')) throw errAt(el, 'ERR_CONFIG_INVALID', 'XML error', `TLS credentials directory '${dir}' in element '${el.tagName}' must be an absolute path`);
    out.dir = dir;
  }
  const verify = yesNo(el, 'verify', errAt);
  if (verify !== undefined) out.verifyPeer = verify;
  return out;
}

/** Typed settings from a device's `urn:chardev:1` children. */
export function parseExtensions(elements: readonly XmlElement[], errAt: ErrorAt): DeviceExtensions {
  const ext: DeviceExtensions = {};
  const seen = new Set<string>();
  for (const el of elements) {
    const name = el.localName ?? el.tagName;
    if (!(EXTENSION_ELEMENTS as readonly string[]).includes(name)) {
      throw errAt(el, 'ERR_CONFIG_UNSUPPORTED', 'unsupported configuration', `unknown chardev extension element '${el.tagName}' (known: ${EXTENSION_ELEMENTS.join(', ')})`);
    }
    if (seen.has(name)) throw errAt(el, 'ERR_CONFIG_INVALID', 'XML error', `element '${el.tagName}' may appear only once per device`);
    seen.add(name);
    if (name === 'tls') ext.tls = parseTls(el, errAt);
    // history and clients are read by the runtime of a later issue; kept verbatim until then.
  }
  return ext;
}
