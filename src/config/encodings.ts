/**
 * Which `encoding=` names in an XML declaration libxml2 knows, for refusing the others as
 * libxml2 does (`Unsupported encoding NAME`).
 *
 * libxml2 (xmlFindCharEncodingHandler) looks a name up, case-insensitively, among its own
 * handlers and names, then asks iconv (glibc: the gconv-modules configuration), then ICU.
 * Here: libxml2's own names, the WHATWG Encoding Standard's labels (what Node's ICU
 * knows — a subset of ICU's and glibc's names), and glibc's gconv names when the host has the
 * configuration. A name only some other iconv knows is refused here.
 *
 * chardev reads every document as UTF-8, whatever the declaration says (decodeDocument); a
 * declaration of a wide encoding (UTF-16, UCS-4, …) on a document that is in fact 8-bit is
 * refused, as libxml2 refuses it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** libxml2's built-in handlers and xmlParseCharEncoding's names. */
const LIBXML2_NAMES = [
  'UTF-8',
  'UTF8',
  'UTF-16',
  'UTF16',
  'UTF-16LE',
  'UTF-16BE',
  'ISO-10646-UCS-2',
  'UCS-2',
  'UCS2',
  'ISO-10646-UCS-4',
  'UCS-4',
  'UCS4',
  'ISO-LATIN-1',
  'ISO LATIN 1',
  'ISO-LATIN-2',
  'ISO LATIN 2',
  'ISO-2022-JP',
  'SHIFT_JIS',
  'EUC-JP',
  'ASCII',
  'US-ASCII',
  'HTML',
  ...Array.from({ length: 16 }, (_, i) => `ISO-8859-${i + 1}`),
];

/** XML 1.0's EncName production. */
export const ENCODING_NAME = /^[A-Za-z][A-Za-z0-9._-]*$/;

/** Encodings whose code units are not single ASCII-compatible bytes: a UTF-8 document cannot be one. */
const WIDE = /^(?:UTF-?16|UTF-?32|UCS-?2|UCS-?4|ISO-10646-UCS-[24])(?:[LB]E)?$/i;

/** Where glibc keeps its gconv configuration on the common layouts. */
const GCONV_DIRS = [`/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/gconv`, '/usr/lib64/gconv', '/usr/lib/gconv'];

let gconvNames: ReadonlySet<string> | undefined;

/** Every alias and module name in glibc's gconv-modules files (upper case), or none. */
function gconv(): ReadonlySet<string> {
  if (gconvNames !== undefined) return gconvNames;
  const names = new Set<string>();
  const dirs = process.env['GCONV_PATH'] !== undefined ? [process.env['GCONV_PATH'], ...GCONV_DIRS] : GCONV_DIRS;
  for (const dir of dirs) {
    const files = [path.join(dir, 'gconv-modules')];
    try {
      for (const f of fs.readdirSync(path.join(dir, 'gconv-modules.d'))) if (f.endsWith('.conf')) files.push(path.join(dir, 'gconv-modules.d', f));
    } catch {
      // no drop-in directory
    }
    for (const file of files) {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n')) {
        const [kind, from, to] = line.trim().split(/\s+/);
        if (kind !== 'alias' && kind !== 'module') continue;
        for (const n of [from, to]) if (n !== undefined && n !== 'INTERNAL') names.add(n.replace(/\/+$/, '').toUpperCase());
      }
    }
    if (names.size > 0) break;
  }
  gconvNames = names;
  return names;
}

function whatwgKnows(name: string): boolean {
  try {
    new TextDecoder(name);
    return true;
  } catch {
    return false;
  }
}

/** What libxml2 says about an `encoding=` value of a document read as UTF-8, or undefined if it takes it. */
export function encodingProblem(name: string): string | undefined {
  if (!ENCODING_NAME.test(name)) return 'Invalid XML encoding name';
  if (WIDE.test(name)) return `Document labelled ${name.toUpperCase()} but has UTF-8 content`;
  const upper = name.toUpperCase();
  if (LIBXML2_NAMES.includes(upper) || whatwgKnows(name) || gconv().has(upper)) return undefined;
  return `Unsupported encoding ${name}`;
}
