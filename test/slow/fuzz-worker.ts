/**
 * The fuzzing loop of test/slow/fuzz.test.ts, in a worker thread so that the
 * test can stop it and name the input if it ever hangs. It publishes an
 * iteration counter and the input in hand through shared memory, and posts one
 * message at the end: the counts, or the first failure. Only types are
 * exported: importing this module runs the loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadDomain } from '../../src/config/domain.ts';
import { ConfigError } from '../../src/errors.ts';
import {
  CHANNEL_TARGET_TYPES,
  CHR_TYPES,
  CONSOLE_TARGET_TYPES,
  SERIAL_TARGET_MODELS,
  SERIAL_TARGET_TYPES,
  SOURCE_MODES,
  TCP_PROTOCOLS,
} from '../../src/config/types.ts';
import { TelnetDecoder } from '../../src/protocols/telnet.ts';
import { LIBVIRT_DATA, ROOT } from '../helpers/paths.ts';
import { prng } from '../helpers/prng.ts';

export interface FuzzJob {
  xmlMs: number;
  telnetMs: number;
  seed: number;
  /** [phase (1 XML, 2 telnet), iterations, input length]. */
  progress: SharedArrayBuffer;
  /** The input in hand: UTF-16 code units (XML) or bytes (telnet). */
  current: SharedArrayBuffer;
}

export type FuzzResult =
  | {
      type: 'done';
      xml: number;
      xmlAccepted: number;
      xmlCodes: Record<string, number>;
      telnet: number;
      telnetBytes: number;
      slowestXmlMs: number;
      slowestTelnetMs: number;
      seeds: number;
    }
  | { type: 'failure'; phase: 'xml' | 'telnet'; input: string; error: string };

const job = workerData as FuzzJob;
/** Longest input: what fits in shared memory (and so is reportable after a hang). */
const MAX_INPUT = job.current.byteLength / 2;
const progress = new Int32Array(job.progress);
const currentText = new Uint16Array(job.current);
const currentBytes = new Uint8Array(job.current);
const random = prng(job.seed);
const int = (n: number): number => Math.floor(random() * n);
function pick<T>(items: readonly T[]): T {
  return items[int(items.length)] as T;
}

// ---- XML ----------------------------------------------------------------------------

/** Documents to mutate: valid ones (libvirt's own, read in place, and a few of ours), and the small hostile ones. */
function seedDocuments(): { valid: string[]; all: string[] } {
  const out: string[] = [];
  const argv = join(LIBVIRT_DATA, 'qemuxml2argvdata');
  if (existsSync(argv)) {
    for (const f of readdirSync(argv).sort()) {
      if (f.endsWith('.xml') && !existsSync(join(argv, f.replace(/\.xml$/, '.err')))) out.push(readFileSync(join(argv, f), 'utf8'));
    }
  }
  out.push(
    "<domain type='kvm' xmlns:cd='urn:chardev:1'><name>f</name><os><type arch='x86_64' machine='q35'>hvm</type></os><devices>" +
      "<serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/><protocol type='telnet'/><target port='0'/><cd:history size='65536'/><cd:clients max='4' queue='65536' slow='drop'/></serial>" +
      "<console type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/><protocol type='telnet'/><target type='serial' port='0'/></console>" +
      "<channel type='unix'><source mode='connect' path='/run/c.sock'><reconnect enabled='yes' timeout='10'/></source><target type='virtio' name='org.qemu.guest_agent.0'/><address type='virtio-serial' controller='0' bus='0' port='2'/></channel>" +
      "<controller type='virtio-serial' index='0' ports='8'/><parallel type='file'><source path='/var/log/lpt' append='on'/><log file='/var/log/lpt.copy' append='off'/></parallel>" +
      "<serial type='vc'><cd:web listen='127.0.0.1' port='0'/><cd:tls dir='/etc/pki/x' verify='no'/></serial></devices></domain>",
    "<serial type='udp'><source mode='bind' host='0.0.0.0' service='9998'/><source mode='connect' host='192.0.2.1' service='9999'/></serial>",
    "<channel type='pipe'><source path='/tmp/fwd'/><target type='guestfwd' address='10.0.2.1' port='4600'/></channel>",
  );
  const valid = [...out];
  const hostile = join(ROOT, 'test', 'fixtures', 'hostile');
  if (existsSync(hostile)) {
    for (const f of readdirSync(hostile).sort()) {
      const p = join(hostile, f);
      if (f.endsWith('.xml') && statSync(p).size <= 4096) out.push(readFileSync(p, 'utf8'));
    }
  }
  return { valid, all: out };
}

const TOKENS = [
  '<',
  '>',
  '/>',
  '</',
  '=',
  "'",
  '"',
  ' ',
  '\n',
  '&',
  '&amp;',
  '&lt;',
  '&#10;',
  '&#0;',
  '&#x110000;',
  '&#xD800;',
  '&x;',
  '<!--',
  '-->',
  '<![CDATA[',
  ']]>',
  '<?xml version="1.0"?>',
  '<?pi x?>',
  '<!DOCTYPE d [<!ENTITY x "y">]>',
  '<!ENTITY',
  'xmlns:cd="urn:chardev:1"',
  'xmlns=""',
  '<serial>',
  '</serial>',
  '<console>',
  '<channel>',
  '<parallel>',
  '<source/>',
  '<target/>',
  '<devices>',
  '</devices>',
  '<domain>',
  '</domain>',
  "type='tcp'",
  "type='unix'",
  "type='virtio'",
  "type='guestfwd'",
  "type='virtio-serial'",
  "mode='bind'",
  "mode='connect'",
  "path='/p'",
  "host='h'",
  "service='1'",
  "port='",
  "index='",
  "ports='",
  "controller='",
  "timeout='",
  "enabled='yes'",
  "<reconnect enabled='yes' timeout='0'/>",
  "<cd:history size='",
  "<cd:clients max='",
  "<cd:web port='",
  "<address type='virtio-serial' port='",
  "<controller type='virtio-serial' index='",
  "<alias name='ua-x'/>",
  '<model/>',
  "<log file='/l'/>",
  "<protocol type='telnet'/>",
  '\u0000',
  '\ufeff',
  '\ud800',
  '\udc00',
  '\u202e',
  '\u2028',
  '\u0085',
  'é',
  '串',
  '😀',
  '\r',
  '\t',
];
const NUMBERS = [
  '0',
  '1',
  '-1',
  '3',
  '4',
  '31',
  '255',
  '256',
  '65535',
  '65536',
  '2147483647',
  '2147483648',
  '4294967295',
  '4294967296',
  '1e3',
  '0x10',
  '',
  ' 1',
  '+1',
  '99999999999999999999',
  'NaN',
  'Infinity',
];

/** Values the model knows, so that edits that keep the XML well-formed reach its checks. */
const VALUES = [
  ...CHR_TYPES,
  ...SOURCE_MODES,
  ...TCP_PROTOCOLS,
  ...SERIAL_TARGET_TYPES,
  ...SERIAL_TARGET_MODELS,
  ...CONSOLE_TARGET_TYPES,
  ...CHANNEL_TARGET_TYPES,
  'yes',
  'no',
  'on',
  'off',
  'pci',
  'isa',
  'usb',
  'virtio-serial',
  'spapr-vio',
  'ccw',
  'drop',
  'disconnect',
  'connected',
  'disconnected',
  '/abs/path',
  'relative',
  '10.0.2.1',
  '::1',
  'x86_64',
  'aarch64',
  's390x',
  'ppc64',
  'riscv64',
  'virt',
  'pseries',
  'hvm',
  'xen',
  'ua-x',
  'serial0',
];

/** An edit that keeps the document well-formed: a value, an attribute or an element changed, dropped or repeated. */
function structuralEdit(s: string): string {
  switch (int(5)) {
    case 0:
    case 1: {
      const values = [...s.matchAll(/='([^'<&]*)'/g)];
      const m = values.length > 0 ? pick(values) : undefined;
      if (m?.index === undefined) return s;
      const v = random() < 0.5 ? pick(VALUES) : pick(NUMBERS);
      return `${s.slice(0, m.index)}='${v}'${s.slice(m.index + m[0].length)}`;
    }
    case 2: {
      const attrs = [...s.matchAll(/ [\w:-]+='[^']*'/g)];
      const m = attrs.length > 0 ? pick(attrs) : undefined;
      return m?.index === undefined ? s : s.slice(0, m.index) + s.slice(m.index + m[0].length);
    }
    case 3: {
      // drop an empty element, or one with no element inside
      const els = [...s.matchAll(/<([\w:-]+)\b[^<>]*?(?:\/>|>[^<]*<\/\1>)/g)];
      const m = els.length > 0 ? pick(els) : undefined;
      return m?.index === undefined ? s : s.slice(0, m.index) + s.slice(m.index + m[0].length);
    }
    default: {
      // repeat a device element (or any element without nested same-named ones)
      const els = [
        ...s.matchAll(/<(serial|parallel|console|channel|controller|source|target|log|protocol|address|reconnect)\b[^<>]*?(?:\/>|>[\s\S]*?<\/\1>)/g),
      ];
      const m = els.length > 0 ? pick(els) : undefined;
      return m?.index === undefined ? s : s.slice(0, m.index) + m[0].repeat(2 + int(int(4) === 0 ? 40 : 3)) + s.slice(m.index + m[0].length);
    }
  }
}

function mutate(doc: string, seeds: readonly string[]): string {
  let s = doc;
  const edits = 1 + int(random() < 0.7 ? 3 : 8);
  for (let k = 0; k < edits; k++) {
    const at = int(s.length + 1);
    const len = int(Math.min(64, s.length - at) + 1);
    if (random() < 0.6) {
      s = structuralEdit(s);
      continue;
    }
    switch (int(9)) {
      case 0: // replace one character with a random code unit
        s = s.slice(0, at) + String.fromCharCode(int(0x10000)) + s.slice(at + 1);
        break;
      case 1: // insert a token
        s = s.slice(0, at) + pick(TOKENS) + s.slice(at);
        break;
      case 2: // delete a range
        s = s.slice(0, at) + s.slice(at + len);
        break;
      case 3: // duplicate a range
        s = s.slice(0, at + len) + s.slice(at, at + len) + s.slice(at + len);
        break;
      case 4: {
        // splice in a piece of another document
        const other = pick(seeds);
        const from = int(other.length + 1);
        s = s.slice(0, at) + other.slice(from, from + int(512)) + s.slice(at);
        break;
      }
      case 5: {
        // an attribute value replaced with an interesting number or token
        const re = /='[^']*'/g;
        const matches = [...s.matchAll(re)];
        const m = matches.length > 0 ? pick(matches) : undefined;
        if (m?.index !== undefined) s = `${s.slice(0, m.index)}='${random() < 0.7 ? pick(NUMBERS) : pick(TOKENS)}'${s.slice(m.index + m[0].length)}`;
        break;
      }
      case 6: // cut the document short
        s = s.slice(0, at);
        break;
      case 7: {
        // an element repeated (many devices, deeper nesting)
        const open = s.indexOf('<', at);
        const close = open < 0 ? -1 : s.indexOf('>', open);
        if (close > open) s = s.slice(0, open) + s.slice(open, close + 1).repeat(1 + int(50)) + s.slice(open);
        break;
      }
      default: // swap two ranges
        if (s.length > 2) {
          const b = int(s.length);
          const [x, y] = at < b ? [at, b] : [b, at];
          s = s.slice(0, x) + s.slice(y, y + len) + s.slice(x + len, y) + s.slice(x, x + len) + s.slice(y + len);
        }
    }
    if (s.length > MAX_INPUT) s = s.slice(0, MAX_INPUT);
  }
  return s;
}

function randomXml(seeds: readonly string[], valid: readonly string[]): string {
  const r = random();
  if (r < 0.65) return mutate(pick(valid), seeds);
  if (r < 0.75) return mutate(pick(seeds), seeds);
  if (r < 0.9) return Array.from({ length: int(80) }, () => pick(TOKENS)).join('');
  return Array.from({ length: int(400) }, () => String.fromCharCode(int(4) === 0 ? int(0x10000) : 0x20 + int(0x5f))).join('');
}

function publishText(s: string): void {
  const n = Math.min(s.length, currentText.length);
  for (let i = 0; i < n; i++) currentText[i] = s.charCodeAt(i);
  Atomics.store(progress, 2, n);
}

// ---- telnet ------------------------------------------------------------------------

/** Bytes with telnet's interesting values (IAC, SB, SE, WILL…DONT, BREAK) over-represented. */
function randomStream(): Buffer {
  const len = int(4) === 0 ? int(12_000) : int(600);
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) {
    const r = random();
    b[i] = r < 0.25 ? 0xff : r < 0.45 ? pick([0xf0, 0xf3, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xf1, 0x00, 0x0d]) : int(256);
  }
  return b;
}

function publishBytes(b: Buffer): void {
  const n = Math.min(b.length, currentBytes.length);
  currentBytes.set(b.subarray(0, n));
  Atomics.store(progress, 2, n);
}

interface Decoded {
  data: Buffer;
  breaks: number[];
}

/** Decode `stream` cut into random pieces; check the sink contract and that no feed outputs more than it got. */
function decodeInPieces(stream: Buffer, pieces: number): Decoded {
  const parts: Buffer[] = [];
  const breaks: number[] = [];
  let total = 0;
  let fromThisFeed = 0;
  const decoder = new TelnetDecoder({
    data: (chunk) => {
      if (chunk.length === 0) throw new Error('the decoder delivered an empty buffer');
      parts.push(Buffer.from(chunk));
      total += chunk.length;
      fromThisFeed += chunk.length;
    },
    break: () => breaks.push(total),
  });
  const cuts = Array.from({ length: pieces - 1 }, () => int(stream.length + 1)).sort((x, y) => x - y);
  let from = 0;
  for (const c of [...cuts, stream.length]) {
    fromThisFeed = 0;
    decoder.feed(stream.subarray(from, c));
    if (fromThisFeed > c - from) throw new Error(`one feed of ${c - from} bytes produced ${fromThisFeed}`);
    from = c;
  }
  return { data: Buffer.concat(parts), breaks };
}

// ---- the loop -------------------------------------------------------------------------

function run(): FuzzResult {
  const { valid, all: seeds } = seedDocuments();
  let xml = 0;
  let xmlAccepted = 0;
  const xmlCodes: Record<string, number> = {};
  let slowestXmlMs = 0;
  Atomics.store(progress, 0, 1);
  const xmlEnd = performance.now() + job.xmlMs;
  while (performance.now() < xmlEnd) {
    const input = randomXml(seeds, valid);
    publishText(input);
    const t0 = performance.now();
    try {
      loadDomain(input, { file: 'fuzz.xml' });
      xmlAccepted++;
    } catch (e) {
      if (!(e instanceof ConfigError)) {
        return { type: 'failure', phase: 'xml', input, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
      }
      xmlCodes[e.code] = (xmlCodes[e.code] ?? 0) + 1;
      if (e.message.includes('\n')) return { type: 'failure', phase: 'xml', input, error: `a message of more than one line: ${JSON.stringify(e.message)}` };
    }
    slowestXmlMs = Math.max(slowestXmlMs, performance.now() - t0);
    xml++;
    Atomics.add(progress, 1, 1);
  }

  let telnet = 0;
  let telnetBytes = 0;
  let slowestTelnetMs = 0;
  Atomics.store(progress, 0, 2);
  const telnetEnd = performance.now() + job.telnetMs;
  while (performance.now() < telnetEnd) {
    const stream = randomStream();
    publishBytes(stream);
    const t0 = performance.now();
    try {
      const whole = decodeInPieces(stream, 1);
      if (whole.data.length > stream.length) throw new Error(`${stream.length} bytes in, ${whole.data.length} out`);
      const pieces = decodeInPieces(stream, 2 + int(40));
      if (!pieces.data.equals(whole.data) || pieces.breaks.join() !== whole.breaks.join()) throw new Error('a chunking changed the decoded stream');
    } catch (e) {
      return { type: 'failure', phase: 'telnet', input: stream.toString('base64'), error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
    }
    slowestTelnetMs = Math.max(slowestTelnetMs, performance.now() - t0);
    telnet++;
    telnetBytes += stream.length;
    Atomics.add(progress, 1, 1);
  }
  return { type: 'done', xml, xmlAccepted, xmlCodes, telnet, telnetBytes, slowestXmlMs, slowestTelnetMs, seeds: seeds.length };
}

parentPort?.postMessage(run());
