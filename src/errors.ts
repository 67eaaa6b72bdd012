/**
 * Errors with stable codes. One class per layer, a literal code per condition:
 * callers switch on `code`, users read `message`.
 */

export type ConfigErrorCode =
  | 'ERR_XML_MALFORMED'
  | 'ERR_XML_FORBIDDEN'
  | 'ERR_XML_NOT_DOMAIN'
  | 'ERR_CONFIG_INVALID'
  | 'ERR_CONFIG_MISSING'
  | 'ERR_CONFIG_UNSUPPORTED';

/** libvirt's error class, printed by libvirt as a prefix ("internal error: …"). */
export type LibvirtErrorClass =
  | 'XML error'
  | 'internal error'
  | 'unsupported configuration'
  | 'invalid argument'
  | 'XML document failed to validate against schema';

export type RuntimeErrorCode =
  | 'ERR_BACKEND_OPEN'
  /** Output could not be written (full disk, file size limit): reported once, the guest keeps running. */
  | 'ERR_BACKEND_WRITE'
  | 'ERR_BACKEND_UNSUPPORTED'
  | 'ERR_BACKEND_BUSY'
  | 'ERR_NOT_CONNECTED'
  | 'ERR_CONNECT'
  | 'ERR_TLS_CREDENTIALS'
  | 'ERR_TLS_HANDSHAKE'
  /** A client that held the guest took nothing for the device's stall limit and was released. */
  | 'ERR_CLIENT_STALLED'
  | 'ERR_USAGE'
  /** The emulator chardev runs as the guest (`chardev qemu`) failed to start or exited with an error. */
  | 'ERR_GUEST';

export type ChardevErrorCode = ConfigErrorCode | RuntimeErrorCode;

export class ChardevError extends Error {
  readonly code: ChardevErrorCode;

  constructor(code: ChardevErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ChardevError';
    this.code = code;
  }
}

/** Where in a document an error was found. */
export interface ConfigLocation {
  /** File name as given by the user, or '<string>' for in-memory documents. */
  readonly file: string;
  /** 1-based line, when known. */
  readonly line?: number;
  /** 1-based column, for malformed XML. */
  readonly column?: number;
  /** The element's start tag as the user wrote its type, e.g. `<serial type='tcp'>`. */
  readonly element?: string;
  /** The device alias, e.g. `serial0`. */
  readonly alias?: string;
}

/**
 * A document libvirt would refuse. `detail` is libvirt's own message text
 * (without its class prefix); `message` adds where it is.
 */
export class ConfigError extends ChardevError {
  readonly detail: string;
  readonly libvirtClass: LibvirtErrorClass;
  readonly location: ConfigLocation;

  constructor(code: ConfigErrorCode, libvirtClass: LibvirtErrorClass, detail: string, location: ConfigLocation) {
    super(code, formatConfigMessage(detail, location));
    this.name = 'ConfigError';
    this.detail = detail;
    this.libvirtClass = libvirtClass;
    this.location = location;
  }

  /** The message exactly as libvirt prints it, e.g. `internal error: Missing source path attribute for char device`. */
  get libvirtMessage(): string {
    return `${this.libvirtClass}: ${this.detail}`;
  }
}

/** Longest element, alias or detail a message repeats; a document's value can be megabytes. */
const MAX_MESSAGE_PART = 300;

/**
 * A piece of a document made fit for a one-line message: control characters
 * (a newline from `&#10;`, a NUL, a byte order mark, a bidi override) escaped,
 * and anything very long cut short.
 */
export function printable(text: string, max = MAX_MESSAGE_PART): string {
  let s = text;
  let cut = 0;
  if (s.length > max) {
    cut = s.length - max;
    s = s.slice(0, max);
  }
  // Invisible and direction-changing characters too: what a terminal shows must be what is there.
  s = s.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]/g, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16)}`;
  });
  return cut > 0 ? `${s}… (${cut} more characters)` : s;
}

function formatConfigMessage(detail: string, loc: ConfigLocation): string {
  let where = printable(loc.file, 4096);
  if (loc.line !== undefined) where += `:${loc.line}`;
  if (loc.column !== undefined) where += `:${loc.column}`;
  let subject = '';
  if (loc.element !== undefined) subject += ` ${printable(loc.element)}`;
  if (loc.alias !== undefined) subject += ` (${printable(loc.alias)})`;
  const text = printable(detail);
  return subject === '' ? `${where}: ${text}` : `${where}:${subject}: ${text}`;
}

export function assertNever(value: never, what = 'value'): never {
  throw new Error(`unexpected ${what}: ${JSON.stringify(value)}`);
}
