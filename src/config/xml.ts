/**
 * XML loading and writing for domain documents. Loading refuses DTDs and
 * entity declarations outright, so nothing is ever read from outside the
 * document; writing follows libvirt's style (single quotes, two-space indent).
 */
import { DOMParser, type Document, type Element, type Node, type ProcessingInstruction } from '@xmldom/xmldom';
import { ConfigError } from '../errors.ts';
import { encodingProblem } from './encodings.ts';

export type XmlDocument = Document;
export type XmlElement = Element;
export type XmlNode = Node;

export const NODE = {
  ELEMENT: 1,
  TEXT: 3,
  CDATA: 4,
  PI: 7,
  COMMENT: 8,
  DOCUMENT: 9,
  DOCTYPE: 10,
} as const;

/** 1-based line and column of `offset` in `text`. */
function lineColumnAt(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

/**
 * Nesting deeper than this is refused, as libxml2 (and so libvirt) does without
 * XML_PARSE_HUGE. It also keeps every recursive walk over the tree shallow.
 */
export const MAX_XML_DEPTH = 256;

/** Characters XML 1.0 allows (its Char production), as a test for the first one it doesn't. */
const NOT_XML_CHAR = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
const CHAR_REF = /&#(?:x([0-9A-Fa-f]+)|([0-9]+));/g;

function isXmlChar(cp: number): boolean {
  return cp === 0x9 || cp === 0xa || cp === 0xd || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
}

/**
 * xmldom's message in words for a user: its recoverable well-formedness errors
 * (which it would otherwise repair silently) in libxml2's wording, and its
 * wrapped exceptions without their `Error:` prefixes.
 */
function xmldomMessage(message: string): string {
  let m = /^attribute "(.*)" missed quot\("\)!/.exec(message);
  if (m) return `AttValue: " or ' expected (attribute value ${m[1]} is not quoted)`;
  m = /^attribute "(.*)" missed value!!/.exec(message);
  if (m) return `Specification mandates value for attribute ${m[1]}`;
  m = /^attribute space is required"(.*)"!!/.exec(message);
  if (m) return `attributes construct error (no space before attribute ${m[1]})`;
  m = /^element parse error: (?:\w*Error: )?invalid tagName:(.*)$/.exec(message);
  if (m) return `invalid element name '${m[1]}'`;
  m = /^element parse error: (?:\w*Error: )?invalid attribute:(.*)$/.exec(message);
  if (m) return `invalid attribute name '${m[1]}'`;
  if (/HierarchyRequestError/.test(message)) return 'Extra content at the end of the document (only one root element is allowed)';
  if (/NamespaceError: prefix is non-null and namespace is null/.test(message)) return 'Namespace prefix is not defined';
  return message.replace(/(?:^|\b)\w*Error: /g, '');
}

/** Refuse characters XML 1.0 does not allow, written out or as character references. */
function checkCharacters(text: string, file: string): void {
  const raw = NOT_XML_CHAR.exec(text);
  let bad: { index: number; cp: number } | undefined;
  if (raw) bad = { index: raw.index, cp: raw[0].codePointAt(0) ?? 0 };
  for (const m of text.matchAll(CHAR_REF)) {
    if (bad !== undefined && (m.index ?? 0) > bad.index) break;
    const digits = m[1] ?? m[2] ?? '';
    const cp = digits.length > 8 ? Infinity : parseInt(digits, m[1] !== undefined ? 16 : 10);
    if (!isXmlChar(cp)) {
      bad = { index: m.index ?? 0, cp };
      break;
    }
  }
  if (bad === undefined) return;
  const { line, column } = lineColumnAt(text, bad.index);
  const what = bad.cp <= 0x10ffff ? `U+${bad.cp.toString(16).toUpperCase().padStart(4, '0')}` : 'beyond U+10FFFF';
  throw new ConfigError('ERR_XML_MALFORMED', 'XML error', `malformed XML: character ${what} is not allowed in XML`, { file, line, column });
}

/** The first element nested deeper than MAX_XML_DEPTH, found without recursion. */
function tooDeep(doc: XmlDocument): XmlNode | undefined {
  const stack: Array<[XmlNode, number]> = [];
  for (let n = doc.firstChild; n; n = n.nextSibling) stack.push([n, 1]);
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node.nodeType !== NODE.ELEMENT) continue;
    if (depth > MAX_XML_DEPTH) return node;
    for (let n = node.firstChild; n; n = n.nextSibling) stack.push([n, depth + 1]);
  }
  return undefined;
}

/** Offset of the first byte that does not start (or continue) a valid UTF-8 sequence, or -1. */
function invalidUtf8At(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let min: number;
    if (b >= 0xc2 && b <= 0xdf) [need, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [need, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [need, min] = [3, 0x10000];
    else return i;
    let cp = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return -1;
}

/**
 * A document's bytes as text. libvirt hands libxml2 a C string, so only UTF-8
 * (with or without a byte order mark) reaches it intact: UTF-16 and bytes that
 * are not UTF-8 are refused here rather than silently replaced by U+FFFD.
 */
export function decodeDocument(bytes: Uint8Array, file: string): string {
  const b0 = bytes[0];
  const b1 = bytes[1];
  if ((b0 === 0xff && b1 === 0xfe) || (b0 === 0xfe && b1 === 0xff) || (b0 === 0 && b1 === 0 && bytes[2] === 0xfe && bytes[3] === 0xff)) {
    throw new ConfigError('ERR_XML_MALFORMED', 'XML error', 'malformed XML: the document is UTF-16 or UTF-32 (byte order mark); only UTF-8 is supported', {
      file,
      line: 1,
    });
  }
  const bad = invalidUtf8At(bytes);
  if (bad >= 0) {
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < bad; i++) {
      if (bytes[i] === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    const hex = (bytes[bad] ?? 0).toString(16).toUpperCase().padStart(2, '0');
    throw new ConfigError('ERR_XML_MALFORMED', 'XML error', `malformed XML: input is not proper UTF-8 (byte 0x${hex}); only UTF-8 is supported`, {
      file,
      line,
      column: bad - lineStart + 1,
    });
  }
  // Valid UTF-8 by now. A byte order mark is kept: loadXml skips one, and only one.
  return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
}

/**
 * Parse `text` as XML. Malformed input, DTDs and entity declarations become a
 * ConfigError naming `file`, the line and the column.
 */
export function loadXml(text: string, file: string): XmlDocument {
  // A byte order mark is not content (libxml2 skips it too).
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  // libvirt accepts DTDs without loading them; we refuse them (nothing is read from outside the document): an
  // internal subset is where "billion laughs" and external entities live.
  const forbidden = /<!(DOCTYPE|ENTITY)\b/.exec(text);
  if (forbidden) {
    const { line, column } = lineColumnAt(text, forbidden.index);
    throw new ConfigError('ERR_XML_FORBIDDEN', 'XML error', `document type declarations and entity declarations are not allowed (<!${forbidden[1]}>)`, {
      file,
      line,
      column,
    });
  }
  // xmldom passes NUL and other control characters through; libxml2 refuses them.
  checkCharacters(text, file);
  checkEncodingDecl(text, file);
  let failure: { message: string } | undefined;
  const parser = new DOMParser({
    onError(_level, message) {
      // xmldom repairs some malformed input and reports it as a 'warning' (an
      // unquoted or missing attribute value); libxml2 refuses it, and so do we.
      failure ??= { message: xmldomMessage(String(message)) };
      throw new Error(String(message));
    },
  });
  let doc: XmlDocument;
  try {
    doc = parser.parseFromString(text, 'text/xml');
  } catch (e) {
    const locator = (e as { locator?: { lineNumber?: number; columnNumber?: number } }).locator;
    const detail = failure?.message ?? (e instanceof Error ? e.message : String(e));
    if (/missing root element/.test(detail)) throw missingRoot(text, file);
    const loc: { file: string; line?: number; column?: number } = { file };
    if (locator?.lineNumber) loc.line = locator.lineNumber;
    if (locator?.columnNumber) loc.column = locator.columnNumber;
    throw new ConfigError('ERR_XML_MALFORMED', 'XML error', `malformed XML: ${detail}`, loc);
  }
  if (!doc.documentElement) throw missingRoot(text, file);
  checkNameLengths(doc, file);
  const deep = tooDeep(doc);
  if (deep) {
    const loc: { file: string; line?: number; column?: number } = { file };
    if (deep.lineNumber) loc.line = deep.lineNumber;
    if (deep.columnNumber) loc.column = deep.columnNumber;
    throw new ConfigError('ERR_XML_MALFORMED', 'XML error', `malformed XML: elements nested more than ${MAX_XML_DEPTH} deep`, loc);
  }
  return doc;
}

/**
 * A document with no element (empty, blank, only comments or a declaration), reported on the
 * line where libxml2 gives up looking for one: the last line (1 for an empty file).
 */
function missingRoot(text: string, file: string): ConfigError {
  let line = 1;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) line++;
  return new ConfigError('ERR_XML_MALFORMED', 'XML error', 'malformed XML: missing root element', { file, line });
}

/** The XML declaration's `encoding=`, refused where libxml2 refuses it. */
function checkEncodingDecl(text: string, file: string): void {
  const decl = /^<\?xml[ \t\r\n][\s\S]*?\?>/.exec(text);
  if (!decl) return;
  const enc = /[ \t\r\n]encoding[ \t\r\n]*=[ \t\r\n]*(["'])([^"'<>]*)\1/.exec(decl[0]);
  if (!enc) return;
  const name = enc[2] ?? '';
  const problem = encodingProblem(name);
  if (problem === undefined) return;
  const { line, column } = lineColumnAt(text, enc.index + enc[0].length - name.length - 1);
  throw new ConfigError('ERR_XML_MALFORMED', 'XML error', `malformed XML: ${problem}`, { file, line, column });
}

/**
 * libxml2's XML_MAX_NAME_LENGTH: without XML_PARSE_HUGE (libvirt does not set it) an element or
 * attribute name, or either part of a prefixed one, longer than this is refused.
 */
export const MAX_XML_NAME_LENGTH = 50_000;

function checkNameLengths(doc: XmlDocument, file: string): void {
  const stack: XmlNode[] = [];
  for (let n = doc.firstChild; n; n = n.nextSibling) stack.push(n);
  const tooLong = (name: string): number => (Math.max(0, ...name.split(':').map((part) => part.length)) > MAX_XML_NAME_LENGTH ? name.length : 0);
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (node.nodeType !== NODE.ELEMENT) continue;
    const el = node as XmlElement;
    let what: string | undefined;
    let length = tooLong(el.tagName);
    if (length > 0) what = 'element';
    for (let i = 0; what === undefined && i < el.attributes.length; i++) {
      const a = el.attributes.item(i);
      if (a === null) continue;
      length = tooLong(a.name);
      if (length > 0) what = 'attribute';
    }
    if (what !== undefined) {
      const loc: { file: string; line?: number; column?: number } = { file };
      if (el.lineNumber) loc.line = el.lineNumber;
      if (el.columnNumber) loc.column = el.columnNumber;
      throw new ConfigError(
        'ERR_XML_MALFORMED',
        'XML error',
        `malformed XML: Name too long (an ${what} name of ${length} characters; libxml2 allows ${MAX_XML_NAME_LENGTH})`,
        loc,
      );
    }
    for (let n = el.firstChild; n; n = n.nextSibling) stack.push(n);
  }
}

export function isElement(node: XmlNode | null): node is XmlElement {
  return node !== null && node.nodeType === NODE.ELEMENT;
}

/** Child elements, optionally only those with local name `name` in no namespace. */
export function childElements(parent: XmlNode, name?: string): XmlElement[] {
  const out: XmlElement[] = [];
  for (let n = parent.firstChild; n; n = n.nextSibling) {
    if (!isElement(n)) continue;
    if (name !== undefined && (n.namespaceURI !== null || n.localName !== name)) continue;
    out.push(n);
  }
  return out;
}

export function firstChild(parent: XmlNode, name: string): XmlElement | undefined {
  return childElements(parent, name)[0];
}

/** An attribute in no namespace, or undefined. */
export function attr(el: XmlElement, name: string): string | undefined {
  return el.hasAttribute(name) ? (el.getAttribute(name) ?? undefined) : undefined;
}

export function lineOf(node: XmlNode): number | undefined {
  return node.lineNumber;
}

export function escapeAttr(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

export function escapeText(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * Serialise a node (and its subtree) the way libvirt writes XML: single-quoted
 * attributes. `declare` adds namespace declarations (`xmlns:prefix`, value) to
 * the node itself, for a subtree that will be written away from the ancestor
 * that declared them.
 */
export function serializeNode(node: XmlNode, declare: ReadonlyArray<readonly [string, string]> = []): string {
  const parts: string[] = [];
  writeNode(node, parts, declare);
  return parts.join('');
}

/**
 * The namespace declarations `el`'s subtree relies on that `holder` (an
 * ancestor) makes: what the subtree needs to stand on its own when written
 * out without `holder`'s attributes.
 */
export function declarationsFrom(holder: XmlElement, el: XmlElement): Array<[string, string]> {
  const prefixes = new Set<string>();
  const stack: XmlElement[] = [el];
  while (stack.length > 0) {
    const e = stack.pop()!;
    if (e.prefix) prefixes.add(e.prefix);
    for (let i = 0; i < e.attributes.length; i++) {
      const a = e.attributes.item(i);
      if (a?.prefix && a.prefix !== 'xmlns' && a.prefix !== 'xml') prefixes.add(a.prefix);
    }
    for (const c of childElements(e)) stack.push(c);
  }
  const out: Array<[string, string]> = [];
  for (const prefix of [...prefixes].sort()) {
    const name = `xmlns:${prefix}`;
    if (!el.hasAttribute(name) && holder.hasAttribute(name)) out.push([name, holder.getAttribute(name) ?? '']);
  }
  return out;
}

function writeNode(node: XmlNode, out: string[], declare: ReadonlyArray<readonly [string, string]> = []): void {
  switch (node.nodeType) {
    case NODE.DOCUMENT:
      for (let n = node.firstChild; n; n = n.nextSibling) writeNode(n, out);
      out.push('\n');
      return;
    case NODE.ELEMENT: {
      const el = node as XmlElement;
      out.push('<', el.tagName);
      for (const [name, value] of declare) out.push(' ', name, "='", escapeAttr(value), "'");
      for (let i = 0; i < el.attributes.length; i++) {
        const a = el.attributes.item(i);
        if (a) out.push(' ', a.name, "='", escapeAttr(a.value), "'");
      }
      if (!el.firstChild) {
        out.push('/>');
        return;
      }
      out.push('>');
      for (let n: XmlNode | null = el.firstChild; n; n = n.nextSibling) writeNode(n, out);
      out.push('</', el.tagName, '>');
      return;
    }
    case NODE.TEXT:
      out.push(escapeText(node.nodeValue ?? ''));
      return;
    case NODE.CDATA:
      out.push('<![CDATA[', node.nodeValue ?? '', ']]>');
      return;
    case NODE.COMMENT:
      out.push('<!--', node.nodeValue ?? '', '-->');
      return;
    case NODE.PI: {
      const pi = node as ProcessingInstruction;
      out.push('<?', pi.target, pi.data ? ` ${pi.data}` : '', '?>');
      return;
    }
    default:
      return;
  }
}

/**
 * A tiny builder for the elements we format ourselves, written out with
 * libvirt's indentation.
 */
export interface XmlOut {
  readonly name: string;
  readonly attrs: ReadonlyArray<readonly [string, string | number | undefined]>;
  readonly children: ReadonlyArray<XmlOut>;
  /** Pre-serialised XML kept verbatim (extension elements). */
  readonly raw?: string;
  /** Text content (for elements like <label>). */
  readonly text?: string;
}

export function x(
  name: string,
  attrs: ReadonlyArray<readonly [string, string | number | undefined]> = [],
  children: ReadonlyArray<XmlOut | undefined | false> = [],
): XmlOut {
  return { name, attrs, children: children.filter((c): c is XmlOut => Boolean(c)) };
}

export function rawXml(xml: string): XmlOut {
  return { name: '', attrs: [], children: [], raw: xml };
}

export function textElement(name: string, text: string): XmlOut {
  return { name, attrs: [], children: [], text };
}

export function formatXmlOut(node: XmlOut, indent: string, step = '  '): string {
  if (node.raw !== undefined) return `${indent + node.raw}\n`;
  let s = `${indent}<${node.name}`;
  for (const [k, v] of node.attrs) {
    if (v === undefined) continue;
    s += ` ${k}='${escapeAttr(String(v))}'`;
  }
  if (node.text !== undefined) return `${s}>${escapeText(node.text)}</${node.name}>\n`;
  if (node.children.length === 0) return `${s}/>\n`;
  s += '>\n';
  for (const c of node.children) s += formatXmlOut(c, indent + step, step);
  return `${s + indent}</${node.name}>\n`;
}
