/**
 * XML loading and writing for domain documents. Loading refuses DTDs and
 * entity declarations outright, so nothing is ever read from outside the
 * document; writing follows libvirt's style (single quotes, two-space indent).
 */
import { DOMParser, type Document, type Element, type Node, type ProcessingInstruction } from '@xmldom/xmldom';
import { ConfigError } from '../errors.ts';

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
 * Parse `text` as XML. Malformed input, DTDs and entity declarations become a
 * ConfigError naming `file`, the line and the column.
 */
export function loadXml(text: string, file: string): XmlDocument {
  // libvirt accepts DTDs without loading them; we refuse them (SPEC §9): an
  // internal subset is where "billion laughs" and external entities live.
  const forbidden = /<!(DOCTYPE|ENTITY)\b/.exec(text);
  if (forbidden) {
    const { line, column } = lineColumnAt(text, forbidden.index);
    throw new ConfigError(
      'ERR_XML_FORBIDDEN',
      'XML error',
      `document type declarations and entity declarations are not allowed (<!${forbidden[1]}>)`,
      { file, line, column },
    );
  }
  let failure: { message: string } | undefined;
  const parser = new DOMParser({
    onError(level, message) {
      // xmldom reports recoverable problems as 'warning'; everything else is fatal for us.
      if (level === 'warning') return;
      failure ??= { message: String(message) };
      throw new Error(String(message));
    },
  });
  let doc: XmlDocument;
  try {
    doc = parser.parseFromString(text, 'text/xml');
  } catch (e) {
    const locator = (e as { locator?: { lineNumber?: number; columnNumber?: number } }).locator;
    const detail = failure?.message ?? (e instanceof Error ? e.message : String(e));
    const loc: { file: string; line?: number; column?: number } = { file };
    if (locator?.lineNumber) loc.line = locator.lineNumber;
    if (locator?.columnNumber) loc.column = locator.columnNumber;
    throw new ConfigError('ERR_XML_MALFORMED', 'XML error', `malformed XML: ${detail}`, loc);
  }
  if (!doc.documentElement) {
    throw new ConfigError('ERR_XML_MALFORMED', 'XML error', 'malformed XML: missing root element', { file });
  }
  return doc;
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
  return value
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

export function escapeText(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Serialise a node (and its subtree) the way libvirt writes XML: single-quoted attributes. */
export function serializeNode(node: XmlNode): string {
  const parts: string[] = [];
  writeNode(node, parts);
  return parts.join('');
}

function writeNode(node: XmlNode, out: string[]): void {
  switch (node.nodeType) {
    case NODE.DOCUMENT:
      for (let n = node.firstChild; n; n = n.nextSibling) writeNode(n, out);
      out.push('\n');
      return;
    case NODE.ELEMENT: {
      const el = node as XmlElement;
      out.push('<', el.tagName);
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
  if (node.raw !== undefined) return indent + node.raw + '\n';
  let s = indent + '<' + node.name;
  for (const [k, v] of node.attrs) {
    if (v === undefined) continue;
    s += ` ${k}='${escapeAttr(String(v))}'`;
  }
  if (node.text !== undefined) return `${s}>${escapeText(node.text)}</${node.name}>\n`;
  if (node.children.length === 0) return s + '/>\n';
  s += '>\n';
  for (const c of node.children) s += formatXmlOut(c, indent + step, step);
  return s + indent + '</' + node.name + '>\n';
}
