/**
 * JSON as QEMU's QMP speaks it (qobject/json-*.c, qobject/qjson.c):
 *
 * - JsonSplitter cuts a byte stream into top-level values the way QEMU's json-streamer
 *   does: an object or array ends when its brackets balance, whitespace between values is
 *   optional, and strings (double- or single-quoted) may hold any bracket. It bounds what
 *   one value may hold, so a client cannot make us buffer without limit.
 * - parseQmpJson parses one value with QEMU's extensions ('single-quoted' strings, `\'`)
 *   and refusals (`\u0000`, duplicate keys), with QEMU's error texts.
 * - qemuJson formats a value the way QEMU does: `{"a": 1, "b": [1, 2]}`, ASCII only, every
 *   other code point as an upper-case `\uXXXX` escape.
 */

export type Json = null | boolean | number | string | Json[] | JsonObject;
export interface JsonObject {
  [key: string]: Json;
}

/** One value may not exceed this many bytes (QEMU allows 64 MiB; a control socket needs far less). */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Brackets open at once (QEMU's MAX_NESTING). */
export const MAX_NESTING = 1024;

/** A value broke a limit; the stream cannot be resynchronised, so the connection ends. */
export class JsonLimitError extends Error {
  readonly limit: 'size' | 'nesting';
  constructor(limit: 'size' | 'nesting') {
    super(limit === 'size' ? 'JSON token size limit exceeded' : 'JSON nesting depth limit exceeded');
    this.limit = limit;
  }
}

/** Why one value could not be parsed; `message` is QEMU's text without its `JSON parse error, ` prefix. */
export class JsonSyntaxError extends Error {}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;

/** Between values; inside an object, array or string; inside a bare scalar (`42`, `true`, garbage). */
const Mode = { Idle: 0, Container: 1, Scalar: 2 } as const;
type Mode = (typeof Mode)[keyof typeof Mode];

export class JsonSplitter {
  readonly maxBytes: number;
  #parts: Buffer[] = [];
  #held = 0;
  #mode: Mode = Mode.Idle;
  #braces = 0;
  #brackets = 0;
  #quote = 0;
  #escape = false;

  constructor(maxBytes = MAX_MESSAGE_BYTES) {
    this.maxBytes = maxBytes;
  }

  /** Bytes of an unfinished value held for the next chunk. */
  get pendingBytes(): number {
    return this.#held;
  }

  /** The complete values in `chunk` (with what earlier chunks left), in order. Throws JsonLimitError. */
  feed(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let start = 0;
    const emit = (end: number): void => {
      const piece = chunk.subarray(start, end);
      const whole = this.#parts.length === 0 ? Buffer.from(piece) : Buffer.concat([...this.#parts, piece]);
      this.#parts = [];
      this.#held = 0;
      this.#mode = Mode.Idle;
      if (whole.length > this.maxBytes) throw new JsonLimitError('size');
      out.push(whole);
    };
    let i = 0;
    while (i < chunk.length) {
      const b = chunk[i] as number;
      switch (this.#mode) {
        case Mode.Idle:
          if (WS.has(b)) break;
          start = i;
          this.#braces = 0;
          this.#brackets = 0;
          this.#quote = 0;
          this.#escape = false;
          if (b === LBRACE || b === LBRACKET) {
            this.#mode = Mode.Container;
            if (b === LBRACE) this.#braces = 1;
            else this.#brackets = 1;
          } else if (b === DQUOTE || b === SQUOTE) {
            this.#mode = Mode.Container;
            this.#quote = b;
          } else if (b === RBRACE || b === RBRACKET || b === COMMA || b === COLON) {
            // A stray structural character is a value of its own (QEMU: "expecting value").
            emit(i + 1);
          } else {
            this.#mode = Mode.Scalar;
          }
          break;
        case Mode.Scalar:
          if (WS.has(b) || b === LBRACE || b === RBRACE || b === LBRACKET || b === RBRACKET || b === COMMA || b === COLON || b === DQUOTE || b === SQUOTE) {
            emit(i);
            continue; // the terminator starts what comes next
          }
          break;
        case Mode.Container:
          if (this.#quote !== 0) {
            if (this.#escape) this.#escape = false;
            else if (b === BACKSLASH) this.#escape = true;
            else if (b === this.#quote) {
              this.#quote = 0;
              if (this.#braces === 0 && this.#brackets === 0) emit(i + 1);
            }
            break;
          }
          if (b === DQUOTE || b === SQUOTE) this.#quote = b;
          else if (b === LBRACE) this.#braces++;
          else if (b === RBRACE) this.#braces--;
          else if (b === LBRACKET) this.#brackets++;
          else if (b === RBRACKET) this.#brackets--;
          else break;
          if (this.#braces + this.#brackets > MAX_NESTING) throw new JsonLimitError('nesting');
          if ((this.#braces <= 0 && this.#brackets <= 0) || this.#braces < 0 || this.#brackets < 0) emit(i + 1);
          break;
      }
      i++;
    }
    if (this.#mode !== Mode.Idle) {
      const rest = chunk.subarray(start);
      this.#held += rest.length;
      if (this.#held > this.maxBytes) throw new JsonLimitError('size');
      this.#parts.push(Buffer.from(rest));
    }
    return out;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parse one value from the splitter. Objects have no prototype, so no key is special. */
export function parseQmpJson(bytes: Buffer): Json {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new JsonSyntaxError('invalid UTF-8 sequence in string');
  }
  const p = new Parser(text);
  const v = p.value(0);
  p.end();
  return v;
}

const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const KEYWORD_RE = /[A-Za-z_][A-Za-z0-9_]*/y;

class Parser {
  readonly #s: string;
  #pos = 0;
  constructor(s: string) {
    this.#s = s;
  }

  #ws(): void {
    while (this.#pos < this.#s.length && ' \t\n\r'.includes(this.#s[this.#pos] as string)) this.#pos++;
  }
  #peek(): string | undefined {
    this.#ws();
    return this.#s[this.#pos];
  }

  end(): void {
    const c = this.#peek();
    if (c !== undefined) throw new JsonSyntaxError(`stray '${c}'`);
  }

  value(depth: number): Json {
    if (depth > MAX_NESTING) throw new JsonSyntaxError('nesting depth limit exceeded');
    const c = this.#peek();
    if (c === undefined) throw new JsonSyntaxError('premature EOI');
    if (c === '{') return this.#object(depth);
    if (c === '[') return this.#array(depth);
    if (c === '"' || c === "'") return this.#string();
    if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER_RE.lastIndex = this.#pos;
      const m = NUMBER_RE.exec(this.#s);
      if (m === null) throw new JsonSyntaxError(`stray '${c}'`);
      this.#pos += m[0].length;
      return Number(m[0]);
    }
    KEYWORD_RE.lastIndex = this.#pos;
    const k = KEYWORD_RE.exec(this.#s);
    if (k !== null) {
      this.#pos += k[0].length;
      if (k[0] === 'true') return true;
      if (k[0] === 'false') return false;
      if (k[0] === 'null') return null;
      throw new JsonSyntaxError(`invalid keyword '${k[0]}'`);
    }
    if ('}],:'.includes(c)) throw new JsonSyntaxError('expecting value');
    throw new JsonSyntaxError(`stray '${c}'`);
  }

  #object(depth: number): JsonObject {
    this.#pos++;
    const obj = Object.create(null) as JsonObject;
    if (this.#peek() === '}') {
      this.#pos++;
      return obj;
    }
    for (;;) {
      const k = this.#peek();
      if (k === undefined) throw new JsonSyntaxError('premature EOI');
      // QEMU parses the key as any value: `}` is "expecting value", `1` is not a string.
      const key = k === '"' || k === "'" ? this.#string() : this.value(depth + 1);
      if (typeof key !== 'string') throw new JsonSyntaxError('key is not a string in object');
      const colon = this.#peek();
      if (colon === undefined) throw new JsonSyntaxError('premature EOI');
      if (colon !== ':') throw new JsonSyntaxError('missing : in object pair');
      this.#pos++;
      const v = this.value(depth + 1);
      if (Object.hasOwn(obj, key)) throw new JsonSyntaxError('duplicate key');
      obj[key] = v;
      const sep = this.#peek();
      if (sep === undefined) throw new JsonSyntaxError('premature EOI');
      this.#pos++;
      if (sep === '}') return obj;
      if (sep !== ',') throw new JsonSyntaxError('expected separator in dict');
    }
  }

  #array(depth: number): Json[] {
    this.#pos++;
    const list: Json[] = [];
    if (this.#peek() === ']') {
      this.#pos++;
      return list;
    }
    for (;;) {
      list.push(this.value(depth + 1));
      const sep = this.#peek();
      if (sep === undefined) throw new JsonSyntaxError('premature EOI');
      this.#pos++;
      if (sep === ']') return list;
      if (sep !== ',') throw new JsonSyntaxError('expected separator in list');
    }
  }

  #hex4(): number {
    const h = this.#s.slice(this.#pos, this.#pos + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) throw new JsonSyntaxError('invalid hex escape sequence in string');
    this.#pos += 4;
    return parseInt(h, 16);
  }

  #string(): string {
    const s = this.#s;
    const quote = s[this.#pos];
    this.#pos++;
    let out = '';
    for (;;) {
      const c = s[this.#pos];
      if (c === undefined) throw new JsonSyntaxError('premature EOI');
      this.#pos++;
      if (c === quote) return out;
      if (c < ' ') throw new JsonSyntaxError('control character in string');
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = s[this.#pos];
      this.#pos++;
      switch (e) {
        case '"':
        case "'":
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const cp = this.#hex4();
          if (cp === 0) throw new JsonSyntaxError('\\u0000 is not supported');
          if (cp >= 0xdc00 && cp <= 0xdfff) throw new JsonSyntaxError('trailing surrogate without leading surrogate');
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (s.slice(this.#pos, this.#pos + 2) !== '\\u') throw new JsonSyntaxError('leading surrogate without trailing surrogate');
            this.#pos += 2;
            const lo = this.#hex4();
            if (lo < 0xdc00 || lo > 0xdfff) throw new JsonSyntaxError('leading surrogate without trailing surrogate');
            out += String.fromCharCode(cp, lo);
          } else {
            out += String.fromCharCode(cp);
          }
          break;
        }
        default:
          throw new JsonSyntaxError('invalid escape sequence in string');
      }
    }
  }
}

function quoted(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0) as number;
    switch (ch) {
      case '"':
        out += '\\"';
        break;
      case '\\':
        out += '\\\\';
        break;
      case '\b':
        out += '\\b';
        break;
      case '\f':
        out += '\\f';
        break;
      case '\n':
        out += '\\n';
        break;
      case '\r':
        out += '\\r';
        break;
      case '\t':
        out += '\\t';
        break;
      default: {
        // A lone surrogate has no UTF-8 form: QEMU would have replaced it.
        const c = cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp;
        if (c > 0xffff) {
          const hi = 0xd800 + ((c - 0x10000) >> 10);
          const lo = 0xdc00 + ((c - 0x10000) & 0x3ff);
          out += `\\u${hi.toString(16).toUpperCase()}\\u${lo.toString(16).toUpperCase()}`;
        } else if (c < 0x20 || c >= 0x7f) {
          out += `\\u${c.toString(16).toUpperCase().padStart(4, '0')}`;
        } else {
          out += ch;
        }
      }
    }
  }
  return `${out}"`;
}

/** QEMU's compact JSON: `", "` and `": "` separators, ASCII only. */
export function qemuJson(v: Json): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  if (typeof v === 'string') return quoted(v);
  if (Array.isArray(v)) return `[${v.map(qemuJson).join(', ')}]`;
  return `{${Object.keys(v)
    .map((k) => `${quoted(k)}: ${qemuJson(v[k] as Json)}`)
    .join(', ')}}`;
}
