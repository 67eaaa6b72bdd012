/**
 * Writes test/fixtures/hostile/: documents chardev must refuse with one clear
 * line, never a crash, a hang or a read outside the document. Run with
 * `npm run corpus` (node --import tsx scripts/make-hostile-corpus.ts).
 *
 * The output is deterministic (a seeded PRNG, no timestamps, stable names), so
 * running it again changes nothing unless this script changed. Every document
 * is checked against the real loader before anything is written: one that is
 * accepted, or refused with anything but a ConfigError, stops the script.
 *
 * Categories:
 *   libvirt     libvirt 9.0.0's refusals (its .err cases and the messages the
 *               parser and validator reproduce), in documents written here
 *   mutation    valid devices with one thing broken: wrong types, missing and
 *               duplicate attributes, out-of-range ports, bad modes, protocols,
 *               reconnect values and chardev extensions
 *   truncated   valid documents cut short at many byte offsets
 *   huge        megabyte attributes, names and text; tens of thousands of
 *               attributes and devices
 *   deep        nesting past libxml2's 256 levels, up to 100,000
 *   entities    "billion laughs" and other entity expansion
 *   xxe         external entities, external DTDs, XInclude, stylesheets
 *   bytes       non-UTF-8, byte order marks, UTF-16/32, NUL and control
 *               characters, empty and blank files
 *   malformed   XML that is not well-formed in other ways, and wrong roots
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadDomain } from '../src/config/domain.ts';
import { decodeDocument } from '../src/config/xml.ts';
import { ConfigError } from '../src/errors.ts';
import { prng } from '../test/helpers/prng.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CORPUS_DIR = join(ROOT, 'test', 'fixtures', 'hostile');
const SEED = 0x63686172; // "char"

const random = prng(SEED);
const int = (n: number): number => Math.floor(random() * n);
function pick<T>(items: readonly T[]): T {
  const item = items[int(items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

/** One corpus document and what the test should expect of it. */
export interface CorpusEntry {
  file: string;
  category: string;
  what: string;
  bytes: number;
  /** A piece of text the one-line error must contain, when it is known in advance. */
  expect?: string;
}

interface Doc {
  category: string;
  slug: string;
  what: string;
  content: Buffer;
  expect?: string;
}

const docs: Doc[] = [];
const seen = new Set<string>();

function add(category: string, slug: string, what: string, content: string | Buffer, expect?: string): boolean {
  const buf = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
  const key = buf.toString('base64');
  if (seen.has(key)) return false;
  seen.add(key);
  docs.push({ category, slug, what, content: buf, ...(expect !== undefined ? { expect } : {}) });
  return true;
}

// ---------------------------------------------------------------------------
// Documents

interface DomainOptions {
  arch?: string;
  machine?: string;
  osType?: string;
  spice?: boolean;
  controllers?: string[];
  /** Inserted after <os>, e.g. <metadata>. */
  extra?: string;
}

function domain(devices: readonly string[], o: DomainOptions = {}): string {
  const arch = o.arch ?? 'x86_64';
  const machine = o.machine ?? 'pc';
  const lines = [
    "<domain type='kvm' xmlns:cd='urn:chardev:1'>",
    '  <name>hostile</name>',
    "  <memory unit='KiB'>1048576</memory>",
    '  <os>',
    `    <type arch='${arch}' machine='${machine}'>${o.osType ?? 'hvm'}</type>`,
    '  </os>',
    ...(o.extra !== undefined ? [o.extra] : []),
    '  <devices>',
    `    <emulator>/usr/bin/qemu-system-${arch}</emulator>`,
    ...(o.controllers ?? []).map((c) => `    ${c}`),
    ...devices.map((d) => d.replace(/^/gm, '    ')),
    ...(o.spice ? ["    <graphics type='spice' autoport='yes'/>"] : []),
    '  </devices>',
    '</domain>',
    '',
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// libvirt's refusals, in documents of our own

function libvirtCases(): void {
  const L = (slug: string, what: string, devices: string[], expect: string, o: DomainOptions = {}) => add('libvirt', slug, what, domain(devices, o), expect);

  // The three .err cases of qemuxml2argvdata, re-expressed.
  L(
    'reconnect-generated-path',
    'unix channel with a generated (bind) path asking to reconnect',
    [
      "<channel type='unix'>\n  <source mode='connect' path='/var/lib/libvirt/qemu/channel/target/domain-1-old/org.example.agent'>\n    <reconnect enabled='yes' timeout='5'/>\n  </source>\n  <target type='virtio' name='org.example.agent'/>\n</channel>",
    ],
    'chardev reconnect is possible only for connect mode',
    { arch: 'i686' },
  );
  L(
    'reconnect-timeout-zero-unix',
    'unix reconnect with timeout 0',
    ["<serial type='unix'>\n  <source mode='connect' path='/run/guest.sock'>\n    <reconnect enabled='yes' timeout='0'/>\n  </source>\n</serial>"],
    "chardev reconnect source timeout cannot be '0'",
  );
  L(
    'reconnect-timeout-zero-tcp',
    'tcp channel reconnect with timeout 0',
    [
      "<channel type='tcp'>\n  <source mode='connect' host='192.0.2.7' service='4555'>\n    <reconnect enabled='yes' timeout='0'/>\n  </source>\n  <target type='virtio' name='org.example.tcp'/>\n</channel>",
    ],
    "chardev reconnect source timeout cannot be '0'",
  );
  L(
    'unix-missing-source-serial',
    'unix serial with no <source>',
    ["<serial type='unix'>\n  <target type='system-serial'/>\n</serial>"],
    'Missing source path attribute for char device',
    { arch: 'aarch64', machine: 'virt' },
  );
  L('unix-missing-source-parallel', 'unix parallel with no <source>', ["<parallel type='unix'/>"], 'Missing source path attribute for char device');
  L(
    'unix-missing-source-console',
    'unix console with a <source> but no path',
    ["<console type='unix'>\n  <source mode='connect'/>\n  <target type='virtio'/>\n</console>"],
    'Missing source path attribute for char device',
  );

  // Generic source checks (virDomainChrSourceDefValidate).
  for (const t of ['file', 'dev', 'pipe']) {
    L(`${t}-no-path`, `${t} serial without a path`, [`<serial type='${t}'>\n  <source/>\n</serial>`], 'Missing source path attribute for char device');
  }
  L(
    'tcp-no-host',
    'tcp bind without host',
    ["<serial type='tcp'>\n  <source mode='bind' service='4555'/>\n</serial>"],
    'Missing source host attribute for char device',
  );
  L(
    'tcp-no-service',
    'tcp connect without service',
    ["<serial type='tcp'>\n  <source mode='connect' host='127.0.0.1'/>\n  <protocol type='telnet'/>\n</serial>"],
    'Missing source service attribute for char device',
  );
  L(
    'tcp-no-source',
    'tcp console without a source',
    ["<console type='tcp'>\n  <target type='serial'/>\n</console>"],
    'Missing source host attribute for char device',
  );
  L(
    'udp-bind-only',
    'udp with only a bind source',
    ["<serial type='udp'>\n  <source mode='bind' host='0.0.0.0' service='9998'/>\n</serial>"],
    'Missing source service attribute for char device',
  );
  L(
    'nmdm-no-slave',
    'nmdm without a slave',
    ["<serial type='nmdm'>\n  <source master='/dev/nmdm0A'/>\n</serial>"],
    'Should define both master and slave path attributes for nmdm device',
  );
  // (nmdm with both paths is valid: libvirt 9.0.0 accepts it; only qemu-args and a start refuse it.)
  L(
    'nmdm-no-master',
    'nmdm without a master',
    ["<serial type='nmdm'>\n  <source slave='/dev/nmdm0B'/>\n</serial>"],
    'Should define both master and slave path attributes for nmdm device',
  );
  L(
    'spiceport-no-channel',
    'spiceport without a channel',
    ["<serial type='spiceport'>\n  <source/>\n</serial>"],
    'Missing source channel attribute for char device',
    { spice: true },
  );
  L(
    'spiceport-bad-channel',
    'spiceport channel with a space',
    ["<serial type='spiceport'>\n  <source channel='org.qemu console'/>\n</serial>"],
    'Invalid character in source channel for char device',
    { spice: true },
  );
  L(
    'spiceport-no-graphics',
    'spiceport without spice graphics',
    ["<serial type='spiceport'>\n  <source channel='org.qemu.console.serial.0'/>\n</serial>"],
    "chardev 'spiceport' not supported without spice graphics",
  );
  L(
    'spicevmc-no-graphics',
    'spicevmc channel without spice graphics',
    ["<channel type='spicevmc'>\n  <target type='virtio' name='com.redhat.spice.0'/>\n</channel>"],
    "chardev 'spicevmc' not supported without spice graphics",
  );
  L('spicevmc-serial', 'spicevmc as a serial port', ["<serial type='spicevmc'/>"], 'spicevmc device type only supports virtio', { spice: true });
  L(
    'dbus-no-channel',
    'dbus channel without a channel name',
    ["<channel type='dbus'>\n  <target type='virtio' name='org.example.dbus'/>\n</channel>"],
    'Missing source channel attribute for char device',
  );
  L(
    'reconnect-bind-tcp',
    'tcp bind asking to reconnect',
    ["<serial type='tcp'>\n  <source mode='bind' host='127.0.0.1' service='4555'>\n    <reconnect enabled='no'/>\n  </source>\n</serial>"],
    'chardev reconnect is possible only for connect mode',
  );

  // Parse-time refusals.
  L('unknown-host-type', 'unknown host interface type', ["<serial type='socket'/>"], 'unknown type presented to host for character device: socket');
  L(
    'unknown-protocol',
    'unknown tcp protocol',
    ["<serial type='tcp'>\n  <source mode='connect' host='h' service='1'/>\n  <protocol type='ssh'/>\n</serial>"],
    "Unknown protocol 'ssh'",
  );
  L(
    'two-sources',
    'file with two sources',
    ["<serial type='file'>\n  <source path='/var/log/a.log'/>\n  <source path='/var/log/b.log'/>\n</serial>"],
    'only one source element is allowed for character device',
  );
  L(
    'three-udp-sources',
    'udp with three sources',
    ["<serial type='udp'>\n  <source mode='bind' service='1'/>\n  <source mode='connect' service='2'/>\n  <source mode='connect' service='3'/>\n</serial>"],
    'only two source elements are allowed for character device',
  );
  L(
    'two-logs',
    'two <log> elements',
    ["<serial type='pty'>\n  <log file='/var/log/a'/>\n  <log file='/var/log/b'/>\n</serial>"],
    'only one log element is allowed for character device',
  );
  L(
    'two-protocols',
    'two <protocol> elements',
    ["<serial type='tcp'>\n  <source host='h' service='1'/>\n  <protocol type='raw'/>\n  <protocol type='telnet'/>\n</serial>"],
    'only one protocol element is allowed for character device',
  );
  L('channel-no-target', 'channel without a target', ["<channel type='pty'/>"], 'target type must be specified for channel device');
  L(
    'channel-target-no-type',
    'channel target without a type',
    ["<channel type='pty'>\n  <target name='x'/>\n</channel>"],
    "unknown target type '(null)' specified for character device",
  );
  L(
    'channel-target-bad-type',
    'channel target of an unknown type',
    ["<channel type='pty'>\n  <target type='virtio-serial'/>\n</channel>"],
    "unknown target type 'virtio-serial' specified for character device",
  );
  L(
    'guestfwd-no-address',
    'guestfwd without an address',
    ["<channel type='pipe'>\n  <source path='/tmp/fwd'/>\n  <target type='guestfwd' port='4600'/>\n</channel>"],
    'guestfwd channel does not define a target address',
  );
  L(
    'guestfwd-ipv6',
    'guestfwd with an IPv6 address',
    ["<channel type='pipe'>\n  <source path='/tmp/fwd'/>\n  <target type='guestfwd' address='fe80::1' port='4600'/>\n</channel>"],
    'guestfwd channel only supports IPv4 addresses',
  );
  L(
    'guestfwd-hostname',
    'guestfwd with a host name',
    ["<channel type='pipe'>\n  <source path='/tmp/fwd'/>\n  <target type='guestfwd' address='gateway' port='4600'/>\n</channel>"],
    "Cannot parse socket address 'gateway'",
  );
  L(
    'guestfwd-octet',
    'guestfwd with an octet above 255',
    ["<channel type='pipe'>\n  <source path='/tmp/fwd'/>\n  <target type='guestfwd' address='10.0.2.256' port='4600'/>\n</channel>"],
    "Cannot parse socket address '10.0.2.256'",
  );
  L(
    'guestfwd-no-port',
    'guestfwd without a port',
    ["<channel type='pipe'>\n  <source path='/tmp/fwd'/>\n  <target type='guestfwd' address='10.0.2.1'/>\n</channel>"],
    "Missing required attribute 'port' in element 'target'",
  );
  L(
    'serial-target-type',
    'serial target of an unknown type',
    ["<serial type='pty'>\n  <target type='virtio-serial'/>\n</serial>"],
    "unknown target type 'virtio-serial' specified for character device",
  );
  L(
    'serial-target-model',
    'serial target of an unknown model',
    ["<serial type='pty'>\n  <target type='isa-serial'>\n    <model name='16450'/>\n  </target>\n</serial>"],
    "unknown target model '16450' specified for character device",
  );
  L(
    'console-target-type',
    'console target of an unknown type',
    ["<console type='pty'>\n  <target type='hvc'/>\n</console>"],
    "unknown target type 'hvc' specified for character device",
  );
  L(
    'usb-serial-pci-address',
    'usb-serial at a PCI address',
    ["<serial type='pty'>\n  <target type='usb-serial'/>\n  <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>\n</serial>"],
    'usb-serial requires address of usb type',
  );
  L(
    'address-no-type',
    '<address> without a type',
    ["<serial type='pty'>\n  <address bus='0'/>\n</serial>"],
    "Missing required attribute 'type' in element 'address'",
  );
  L(
    'acpi-index',
    'acpi index that is not a number',
    ["<serial type='pty'>\n  <acpi index='first'/>\n</serial>"],
    "Invalid value for attribute 'index' in element 'acpi': 'first'",
  );

  // Post-parse and QEMU driver checks.
  // libvirt counts ISA serials before defaults are applied: only an explicit target type counts.
  L(
    'isa-five',
    'five ISA serial ports',
    Array.from({ length: 5 }, () => "<serial type='pty'>\n  <target type='isa-serial'/>\n</serial>"),
    "Maximum supported number of ISA serial ports is '4'",
  );
  L(
    'isa-port-4',
    'ISA serial port 4',
    ["<serial type='pty'>\n  <target type='isa-serial' port='4'/>\n</serial>"],
    "Maximum supported number of ISA serial ports is '4'",
  );
  L(
    'isa-port-taken',
    'two ISA serials on port 1',
    ["<serial type='pty'>\n  <target type='isa-serial' port='1'/>\n</serial>", "<serial type='null'>\n  <target type='isa-serial' port='1'/>\n</serial>"],
    "target port '1' already allocated",
  );
  L(
    'isa-debug-arm',
    'isa-debug serial on aarch64',
    ["<serial type='pty'>\n  <target type='isa-debug'/>\n</serial>"],
    'isa-debug serial type only valid on x86 architecture',
    { arch: 'aarch64', machine: 'virt' },
  );
  L(
    'second-serial-console',
    'a second console of type serial',
    ["<serial type='pty'/>", "<console type='pty'/>", "<console type='pty'>\n  <target type='serial'/>\n</console>"],
    'Only the first console can be a serial port',
  );
  for (const t of ['xen', 'uml', 'lxc', 'openvz']) {
    L(`console-${t}`, `console target ${t} on QEMU`, [`<console type='pty'>\n  <target type='${t}'/>\n</console>`], `unsupported console target type ${t}`);
  }
  L('parallel-s390x', 'parallel port on s390x', ["<parallel type='pty'/>"], 'parallel ports are not supported', { arch: 's390x', machine: 's390-ccw-virtio' });
  L('parallel-ppc64', 'parallel port on ppc64', ["<parallel type='null'/>"], 'parallel ports are not supported', { arch: 'ppc64', machine: 'pseries' });
  L(
    'system-serial-address',
    'system-serial with an address',
    ["<serial type='pty'>\n  <target type='system-serial'/>\n  <address type='virtio-mmio'/>\n</serial>"],
    "Target type 'system-serial' cannot have an associated address",
    { arch: 'aarch64', machine: 'virt' },
  );
  L(
    'isa-serial-pci-address',
    'isa-serial at a PCI address',
    ["<serial type='pty'>\n  <target type='isa-serial'/>\n  <address type='pci' domain='0x0000' bus='0x00' slot='0x09' function='0x0'/>\n</serial>"],
    "Target type 'isa-serial' requires address type 'isa'",
  );
  L(
    'model-mismatch',
    'pci-serial target with the pl011 model',
    ["<serial type='pty'>\n  <target type='pci-serial'>\n    <model name='pl011'/>\n  </target>\n</serial>"],
    "Target model 'pl011' requires target type 'system-serial'",
  );
  L(
    'virtio-port-occupied',
    'two channels on virtio-serial port 3',
    [
      "<channel type='pty'>\n  <target type='virtio' name='a'/>\n  <address type='virtio-serial' controller='0' bus='0' port='3'/>\n</channel>",
      "<channel type='pty'>\n  <target type='virtio' name='b'/>\n  <address type='virtio-serial' controller='0' bus='0' port='3'/>\n</channel>",
    ],
    'virtio serial port 3 on controller 0 is already occupied',
  );
  L(
    'virtio-no-such-port',
    'virtio-serial port beyond the controller',
    ["<channel type='pty'>\n  <target type='virtio' name='a'/>\n  <address type='virtio-serial' controller='0' bus='0' port='9'/>\n</channel>"],
    'virtio serial controller 0 does not have port 9',
    { controllers: ["<controller type='virtio-serial' index='0' ports='4'/>"] },
  );
  L(
    'virtio-full',
    'no free port on a one-port controller',
    ["<channel type='pty'>\n  <target type='virtio' name='a'/>\n  <address type='virtio-serial' controller='0'/>\n</channel>"],
    'Unable to find a free port on virtio-serial controller 0',
    { controllers: ["<controller type='virtio-serial' index='0' ports='1'/>"] },
  );
  L(
    'virtio-address-port',
    'virtio-serial address port that is not a number',
    ["<channel type='pty'>\n  <target type='virtio' name='a'/>\n  <address type='virtio-serial' controller='0' bus='0' port='two'/>\n</channel>"],
    "Invalid value for attribute 'port' in element 'address': 'two'",
  );
  L(
    'controller-index',
    'virtio-serial controller index that is not a number',
    ["<channel type='pty'>\n  <target type='virtio' name='a'/>\n</channel>"],
    'Cannot parse controller index first',
    { controllers: ["<controller type='virtio-serial' index='first'/>"] },
  );
  add(
    'libvirt',
    'not-a-domain',
    'a document that is neither a domain nor a device',
    '<network>\n  <name>default</name>\n</network>\n',
    'expected a <domain> document',
  );

  // chardev's own extensions.
  const E = (slug: string, what: string, ext: string, expect: string) => L(`ext-${slug}`, what, [`<serial type='pty'>\n  ${ext}\n</serial>`], expect);
  E('history-zero', '<cd:history size=0>', "<cd:history size='0'/>", "Invalid value for attribute 'size' in element 'cd:history': '0'");
  E('history-missing', '<cd:history> without a size', '<cd:history/>', "missing attribute 'size' (bytes) in element 'cd:history'");
  E('history-huge', '<cd:history> of 64 MiB + 1', "<cd:history size='67108865'/>", 'Expected an integer from 1 to 67108864');
  E('clients-zero', '<cd:clients max=0>', "<cd:clients max='0'/>", "Invalid value for attribute 'max' in element 'cd:clients': '0'");
  E('clients-missing', '<cd:clients> without max', "<cd:clients queue='4096'/>", "missing attribute 'max' in element 'cd:clients'");
  E('clients-slow', '<cd:clients slow=block>', "<cd:clients max='4' slow='block'/>", "Expected 'drop' or 'disconnect'");
  E('tls-relative', '<cd:tls> with a relative directory', "<cd:tls dir='pki/chardev'/>", 'must be an absolute path');
  E('tls-verify', '<cd:tls verify=true>', "<cd:tls verify='true'/>", "Expected 'yes' or 'no'");
  E('web-port', '<cd:web port=65536>', "<cd:web port='65536'/>", 'Expected a port number');
  E('web-listen', '<cd:web listen> with a path', "<cd:web listen='/run/web.sock'/>", 'Expected an address');
  E('unknown', 'an unknown chardev extension', "<cd:ring size='4096'/>", "unknown chardev extension element 'cd:ring'");
  E('duplicate', 'two <cd:history> elements', "<cd:history size='1024'/>\n  <cd:history size='2048'/>", "element 'cd:history' may appear only once per device");
}

// ---------------------------------------------------------------------------
// Mutations of valid devices

/** Valid devices that never interfere with the broken one (no ISA serials, no serial consoles). */
const FILLERS = [
  "<parallel type='null'/>",
  "<parallel type='file'>\n  <source path='/var/log/lpt.log'/>\n</parallel>",
  "<channel type='unix'>\n  <target type='virtio' name='org.qemu.guest_agent.0'/>\n</channel>",
  "<channel type='pty'>\n  <target type='virtio' name='org.example.pty'/>\n</channel>",
  "<console type='pty'>\n  <target type='virtio'/>\n</console>",
  "<channel type='pipe'>\n  <source path='/tmp/guestfwd'/>\n  <target type='guestfwd' address='10.0.2.1' port='4600'/>\n</channel>",
];

const KINDS = ['serial', 'parallel', 'console', 'channel'] as const;
type Kind = (typeof KINDS)[number];

const HOSTS = ['127.0.0.1', '0.0.0.0', '::1', 'localhost', 'console.example.org', '192.0.2.44'];
const SERVICES = ['4555', '2445', '23', '0', '65535', 'telnet'];
const PATHS = ['/run/chardev/s0.sock', '/var/lib/libvirt/qemu/guest.sock', '/tmp/c d.sock', '/dev/ttyS9', '/var/log/guest/serial.log'];

/** The target a kind needs to be valid on x86 (channels need one). */
function targetFor(kind: Kind): string {
  switch (kind) {
    case 'serial':
      return pick(['', "\n  <target port='0'/>", "\n  <target type='isa-serial' port='0'>\n    <model name='isa-serial'/>\n  </target>"]);
    case 'parallel':
      return pick(['', "\n  <target port='0'/>"]);
    case 'console':
      return pick(["\n  <target type='virtio'/>", "\n  <target type='virtio' port='0'/>"]);
    case 'channel':
      return pick(["\n  <target type='virtio' name='org.example.ch'/>", "\n  <target type='virtio'/>"]);
  }
}

function device(kind: Kind, type: string, body: string): string {
  return `<${kind} type='${type}'>${body}${targetFor(kind)}\n</${kind}>`;
}

const tcpSource = (attrs: Record<string, string>, inner = ''): string => {
  const a = Object.entries(attrs)
    .map(([k, v]) => ` ${k}='${v}'`)
    .join('');
  return inner === '' ? `\n  <source${a}/>` : `\n  <source${a}>\n    ${inner}\n  </source>`;
};

/** A broken device: [slug, what, device XML, expected text]. */
type Mutation = () => [string, string, string, string | undefined];

const BAD_TYPES = ['tcpp', 'TCP', 'Pty', '', ' pty', 'pty ', 'socket', 'serial', 'unix:', '1', 'telnet', 'spice', 'file\t', 'nul', 'p\u00f1y'];
const BAD_MODES = ['listen', 'server', 'client', 'Bind', 'CONNECT', '', 'bind ', ' connect', 'accept', '0'];
const BAD_PROTOCOLS = ['ssh', 'TELNET', 'telnet ', 'rfc2217', 'websocket', '', 'raw,telnet', 'tls1.3', 'http'];
const BAD_PORTS = [
  '4294967296',
  '-4294967297',
  '99999999999999',
  'abc',
  '0x1',
  '1e3',
  '',
  ' ',
  '1.5',
  '+-1',
  '\u0663',
  '2 3',
  '99999999999999999999999999999999',
];
const BAD_UINTS = ['-1', '4294967296', 'x', '', '1.0', '0x10', '18446744073709551616', '-0'];
const BAD_YESNO = ['true', 'false', '1', '0', 'on', 'YES', '', 'yes '];
const BAD_ONOFF = ['yes', 'no', 'true', 'ON', '1', ''];
const BAD_HISTORY = ['0', '-1', '67108865', '1e6', 'abc', '', '0x100', ' 1', '1.5', '999999999999'];

const mutations: Record<string, Mutation> = {
  'wrong-type': () => {
    const kind = pick(KINDS);
    const t = pick(BAD_TYPES);
    return [`${kind}`, `${kind} of type '${t}'`, device(kind, t, ''), 'unknown type presented to host for character device'];
  },
  'missing-host': () => {
    const kind = pick(KINDS);
    return [
      kind,
      `tcp ${kind} without host`,
      device(kind, 'tcp', tcpSource({ mode: pick(['bind', 'connect']), service: pick(SERVICES) })),
      'Missing source host attribute',
    ];
  },
  'missing-service': () => {
    const kind = pick(KINDS);
    return [
      kind,
      `tcp ${kind} without service`,
      device(kind, 'tcp', tcpSource({ mode: pick(['bind', 'connect']), host: pick(HOSTS) })),
      'Missing source service attribute',
    ];
  },
  'missing-path': () => {
    const kind = pick(['serial', 'parallel', 'console'] as const);
    const t = pick(['file', 'dev', 'pipe', 'unix']);
    const src = pick(['', "\n  <source mode='connect'/>", "\n  <source append='on'/>", '\n  <source/>']);
    return [`${kind}-${t}`, `${t} ${kind} without path`, device(kind, t, t === 'file' || !src.includes('append') ? src : ''), 'Missing source path attribute'];
  },
  'missing-udp-service': () => {
    const kind = pick(KINDS);
    return [
      kind,
      `udp ${kind} without connect service`,
      device(kind, 'udp', tcpSource({ mode: 'connect', host: pick(HOSTS) })),
      'Missing source service attribute',
    ];
  },
  'missing-reconnect-timeout': () => {
    const kind = pick(KINDS);
    const t = pick(['tcp', 'unix']);
    const src = t === 'tcp' ? { mode: 'connect', host: pick(HOSTS), service: pick(SERVICES) } : { mode: 'connect', path: pick(PATHS) };
    return [
      `${kind}-${t}`,
      `${t} reconnect enabled without timeout`,
      device(kind, t, tcpSource(src, "<reconnect enabled='yes'/>")),
      "Missing required attribute 'timeout' in element 'reconnect'",
    ];
  },
  'missing-history-size': () => {
    const kind = pick(['serial', 'parallel'] as const);
    return [kind, '<cd:history> without size', device(kind, 'pty', pick(['\n  <cd:history/>', "\n  <cd:history bytes='4096'/>"])), "missing attribute 'size'"];
  },
  'missing-address-type': () => {
    const kind = pick(['serial', 'parallel'] as const);
    return [
      kind,
      '<address> without type',
      device(kind, 'null', pick(['\n  <address/>', "\n  <address bus='0' port='1'/>", "\n  <address iobase='0x3f8'/>"])),
      "Missing required attribute 'type'",
    ];
  },
  'duplicate-attribute': () => {
    const kind = pick(KINDS);
    const variants: Array<[string, string]> = [
      ['type', `<${kind} type='pty' type='tcp'>${targetFor(kind)}\n</${kind}>`],
      ['mode', `<${kind} type='tcp'>\n  <source mode='bind' host='${pick(HOSTS)}' mode='connect' service='1'/>${targetFor(kind)}\n</${kind}>`],
      ['host', `<${kind} type='tcp'>\n  <source host='a' host='b' service='1'/>${targetFor(kind)}\n</${kind}>`],
      ['path', `<${kind} type='file'>\n  <source path='${pick(PATHS)}' path='/dev/null'/>${targetFor(kind)}\n</${kind}>`],
      ['size', `<${kind} type='pty'>\n  <cd:history size='1' size='2'/>${targetFor(kind)}\n</${kind}>`],
    ];
    const [attr, xml] = pick(variants);
    return [`${kind}-${attr}`, `${kind} with '${attr}' twice`, xml, `Attribute ${attr} redefined`];
  },
  'target-port': () => {
    const kind = pick(['serial', 'parallel', 'console'] as const);
    const port = pick(BAD_PORTS);
    const tgt = kind === 'console' ? `<target type='virtio' port='${port}'/>` : `<target port='${port}'/>`;
    return [kind, `${kind} target port '${port}'`, `<${kind} type='pty'>\n  ${tgt}\n</${kind}>`, 'Invalid port number'];
  },
  'isa-port-range': () => {
    const port = pick(['4', '5', '31', '2147483647']);
    return [
      'serial',
      `ISA serial port ${port}`,
      `<serial type='pty'>\n  <target type='isa-serial' port='${port}'/>\n</serial>`,
      "Maximum supported number of ISA serial ports is '4'",
    ];
  },
  'guestfwd-port': () => {
    const port = pick(BAD_UINTS);
    return [
      'channel',
      `guestfwd port '${port}'`,
      `<channel type='pipe'>\n  <source path='/tmp/fwd'/>\n  <target type='guestfwd' address='10.0.2.${1 + int(254)}' port='${port}'/>\n</channel>`,
      "Invalid value for attribute 'port' in element 'target'",
    ];
  },
  'web-port': () => {
    const port = pick(['65536', '70000', '-1', 'http', '', '8080.5', '99999999999']);
    return [
      'serial',
      `<cd:web port='${port}'>`,
      `<serial type='vc'>\n  <cd:web port='${port}'/>\n</serial>`,
      "Invalid value for attribute 'port' in element 'cd:web'",
    ];
  },
  'address-port': () => {
    const [name, value] = pick([
      ['port', pick(BAD_UINTS)],
      ['controller', pick(BAD_UINTS)],
      ['bus', pick(BAD_UINTS)],
    ] as const);
    const attrs = { controller: '0', bus: '0', port: '1', [name]: value };
    return [
      name,
      `virtio-serial address ${name}='${value}'`,
      `<channel type='pty'>\n  <target type='virtio' name='org.example.a'/>\n  <address type='virtio-serial' controller='${attrs.controller}' bus='${attrs.bus}' port='${attrs.port}'/>\n</channel>`,
      `Invalid value for attribute '${name}' in element 'address'`,
    ];
  },
  'acpi-index': () => {
    const v = pick(BAD_UINTS);
    return ['serial', `acpi index '${v}'`, `<serial type='pty'>\n  <acpi index='${v}'/>\n</serial>`, "Invalid value for attribute 'index' in element 'acpi'"];
  },
  'bad-mode': () => {
    const kind = pick(KINDS);
    const t = pick(['tcp', 'unix', 'udp']);
    const mode = pick(BAD_MODES);
    const src = t === 'unix' ? { mode, path: pick(PATHS) } : { mode, host: pick(HOSTS), service: pick(SERVICES) };
    return [`${kind}-${t}`, `${t} source mode '${mode}'`, device(kind, t, tcpSource(src)), "Invalid value for attribute 'mode' in element 'source'"];
  },
  'bad-protocol': () => {
    const kind = pick(KINDS);
    const p = pick(BAD_PROTOCOLS);
    return [
      kind,
      `tcp protocol '${p}'`,
      device(kind, 'tcp', `${tcpSource({ mode: pick(['bind', 'connect']), host: pick(HOSTS), service: pick(SERVICES) })}\n  <protocol type='${p}'/>`),
      `Unknown protocol '${p}'`,
    ];
  },
  'bad-reconnect': () => {
    const kind = pick(KINDS);
    const t = pick(['tcp', 'unix']);
    const src = t === 'tcp' ? { mode: 'connect', host: pick(HOSTS), service: pick(SERVICES) } : { mode: 'connect', path: pick(PATHS) };
    const which = int(4);
    if (which === 0) {
      const v = pick(BAD_YESNO);
      return [
        `${kind}-enabled`,
        `reconnect enabled='${v}'`,
        device(kind, t, tcpSource(src, `<reconnect enabled='${v}' timeout='10'/>`)),
        "Invalid value for attribute 'enabled' in element 'reconnect'",
      ];
    }
    if (which === 1) {
      const v = pick(BAD_UINTS);
      return [
        `${kind}-timeout`,
        `reconnect timeout='${v}'`,
        device(kind, t, tcpSource(src, `<reconnect enabled='yes' timeout='${v}'/>`)),
        "Invalid value for attribute 'timeout' in element 'reconnect'",
      ];
    }
    if (which === 2) {
      return [
        `${kind}-zero`,
        'reconnect timeout 0',
        device(kind, t, tcpSource(src, "<reconnect enabled='yes' timeout='0'/>")),
        "chardev reconnect source timeout cannot be '0'",
      ];
    }
    const bind = t === 'tcp' ? { ...src, mode: 'bind' } : { ...src, mode: 'bind' };
    return [
      `${kind}-bind`,
      'reconnect in bind mode',
      device(kind, t, tcpSource(bind, `<reconnect enabled='${pick(['yes', 'no'])}' timeout='5'/>`)),
      'chardev reconnect is possible only for connect mode',
    ];
  },
  'bad-extension': () => {
    const kind = pick(['serial', 'parallel'] as const);
    const variants: Array<[string, string, string]> = [
      ['history', `<cd:history size='${pick(BAD_HISTORY)}'/>`, "Invalid value for attribute 'size' in element 'cd:history'"],
      ['clients-max', `<cd:clients max='${pick(['0', '65', 'x', '', '-1', '1e2'])}'/>`, "Invalid value for attribute 'max' in element 'cd:clients'"],
      [
        'clients-queue',
        `<cd:clients max='2' queue='${pick(['0', '67108865', 'big', '-4096'])}'/>`,
        "Invalid value for attribute 'queue' in element 'cd:clients'",
      ],
      ['clients-slow', `<cd:clients max='2' slow='${pick(['block', 'DROP', 'wait', ''])}'/>`, "Invalid value for attribute 'slow' in element 'cd:clients'"],
      ['tls-dir', `<cd:tls dir='${pick(['relative/dir', '~/pki', '', './pki', 'C:\\pki'])}'/>`, 'must be an absolute path'],
      ['tls-verify', `<cd:tls verify='${pick(BAD_YESNO)}'/>`, "Invalid value for attribute 'verify' in element 'cd:tls'"],
      ['web-listen', `<cd:web listen='${pick(['', 'a b', '/tmp/sock', 'host/24'])}'/>`, "Invalid value for attribute 'listen' in element 'cd:web'"],
      ['unknown', `<cd:${pick(['ring', 'History', 'log', 'tls2', 'clients-max', 'x'])}/>`, 'unknown chardev extension element'],
      ['duplicate', `<cd:clients max='1'/>\n  <cd:clients max='2'/>`, "element 'cd:clients' may appear only once per device"],
    ];
    const [slug, ext, expect] = pick(variants);
    return [`${kind}-${slug}`, `chardev extension: ${ext.split('\n')[0]}`, device(kind, 'pty', `\n  ${ext}`), expect];
  },
  'bad-enum': () => {
    const kind = pick(['serial', 'parallel'] as const);
    const variants: Array<[string, string, string]> = [
      ['append', `\n  <source path='${pick(PATHS)}' append='${pick(BAD_ONOFF)}'/>`, "Invalid value for attribute 'append' in element 'source'"],
      [
        'log-append',
        `\n  <source path='/var/log/s.log'/>\n  <log file='/var/log/s.copy' append='${pick(BAD_ONOFF)}'/>`,
        "Invalid value for attribute 'append' in element 'log'",
      ],
      ['tls', `\n  <source mode='connect' host='h' service='1' tls='${pick(BAD_YESNO)}'/>`, "Invalid value for attribute 'tls' in element 'source'"],
      [
        'relabel',
        `\n  <source path='/dev/ttyS0'>\n    <seclabel model='dac' relabel='${pick(BAD_YESNO)}'/>\n  </source>`,
        "Invalid value for attribute 'relabel' in element 'seclabel'",
      ],
    ];
    const [slug, body, expect] = pick(variants);
    const t = slug === 'tls' ? 'tcp' : slug === 'relabel' ? 'dev' : 'file';
    return [`${kind}-${slug}`, `bad ${slug} value`, device(kind, t, body), expect];
  },
  'bad-target': () => {
    const variants: Array<[string, string, string]> = [
      ['serial-type', `<serial type='pty'>\n  <target type='${pick(['isa', 'virtio', 'usb', 'ISA-serial', ''])}'/>\n</serial>`, 'unknown target type'],
      [
        'serial-model',
        `<serial type='pty'>\n  <target type='isa-serial'>\n    <model name='${pick(['16550', 'pl011x', '', 'virtio'])}'/>\n  </target>\n</serial>`,
        'unknown target model',
      ],
      ['console-type', `<console type='pty'>\n  <target type='${pick(['vt', 'tty', 'Serial', ''])}'/>\n</console>`, 'unknown target type'],
      ['channel-type', `<channel type='pty'>\n  <target type='${pick(['virtio-serial', 'guestfwd ', 'spice', ''])}'/>\n</channel>`, 'unknown target type'],
      [
        'guestfwd-address',
        `<channel type='pipe'>\n  <source path='/tmp/fwd'/>\n  <target type='guestfwd' address='${pick(['localhost', 'a.b.c.d', '300.1.1.1', '10.0.2.256', '', '10.0.2.1/24'])}' port='4600'/>\n</channel>`,
        'Cannot parse socket address',
      ],
    ];
    const [slug, xml, expect] = pick(variants);
    return [slug, `bad target (${slug})`, xml, expect];
  },
};

function mutationCases(perKind: Record<string, number>): void {
  for (const [name, count] of Object.entries(perKind)) {
    const make = mutations[name];
    if (!make) throw new Error(`no mutation ${name}`);
    let made = 0;
    for (let attempt = 0; made < count && attempt < count * 20; attempt++) {
      const [slug, what, bad, expect] = make();
      const before = Array.from({ length: int(3) }, () => pick(FILLERS));
      const after = Array.from({ length: int(3) }, () => pick(FILLERS));
      const arch = pick(['x86_64', 'i686']);
      const xml = domain([...before, bad, ...after], { arch, machine: pick(['pc', 'q35', 'pc-i440fx-7.2']) });
      if (add('mutation', `${name}-${slug}`, what, xml, expect)) made++;
    }
  }
}

// ---------------------------------------------------------------------------
// Truncations

const TRUNCATION_SEEDS = [
  domain([
    "<serial type='tcp'>\n  <source mode='bind' host='127.0.0.1' service='4555'/>\n  <protocol type='telnet'/>\n  <target port='0'/>\n  <cd:history size='65536'/>\n</serial>",
    "<console type='tcp'>\n  <source mode='bind' host='127.0.0.1' service='4555'/>\n  <protocol type='telnet'/>\n  <target type='serial' port='0'/>\n</console>",
    "<channel type='unix'>\n  <target type='virtio' name='org.qemu.guest_agent.0'/>\n</channel>",
  ]),
  // Non-ASCII text, so some cuts land inside a multi-byte character.
  domain([
    "<serial type='file'>\n  <source path='/var/log/gäste/ünïcødé-串口.log' append='on'/>\n  <log file='/var/log/gäste/kopie.log'/>\n</serial>",
    "<parallel type='unix'>\n  <source mode='connect' path='/run/drücker.sock'>\n    <reconnect enabled='yes' timeout='10'/>\n  </source>\n</parallel>",
  ]).replace('<name>hostile</name>', '<name>gäst-μ-虚拟机</name>'),
  "<?xml version='1.0' encoding='UTF-8'?>\n<!-- a lone device element -->\n<serial type='udp'>\n  <source mode='bind' host='0.0.0.0' service='9998'/>\n  <source mode='connect' host='192.0.2.1' service='9999'/>\n  <target port='0'/>\n</serial>\n",
];

function truncationCases(perSeed: number): void {
  TRUNCATION_SEEDS.forEach((seed, s) => {
    const bytes = Buffer.from(seed, 'utf8');
    // Never at or past the root's closing '>': whatever is left is incomplete.
    const end = bytes.lastIndexOf(0x3e);
    const offsets = new Set<number>();
    for (let i = 1; i <= perSeed / 2; i++) offsets.add(Math.max(1, Math.floor((end * i) / (perSeed / 2 + 1))));
    // Inside multi-byte characters, where there are some.
    const inside: number[] = [];
    for (let i = 1; i < end; i++) if ((bytes[i]! & 0xc0) === 0x80) inside.push(i);
    for (let k = 0; k < 4 && inside.length > 0; k++) offsets.add(pick(inside));
    while (offsets.size < perSeed) offsets.add(1 + int(end - 1));
    for (const at of [...offsets].sort((a, b) => a - b)) {
      add('truncated', `seed${s + 1}-at-${at}`, `seed document ${s + 1} (${bytes.length} bytes) cut after ${at} bytes`, bytes.subarray(0, at));
    }
  });
}

// ---------------------------------------------------------------------------
// Sizes

function hugeCases(): void {
  const MB = 1024 * 1024;
  add('huge', 'type-5mb', 'a 5 MB type attribute', domain([`<serial type='${'A'.repeat(5 * MB)}'/>`]), 'unknown type presented to host for character device');
  add(
    'huge',
    'path-256k-bad-append',
    'a 256 KB path next to a bad append value',
    domain([`<serial type='file'>\n  <source path='/${'p'.repeat(256 * 1024)}' append='maybe'/>\n</serial>`]),
    "Invalid value for attribute 'append'",
  );
  add('huge', 'root-name-256k', 'a root element with a 256 KB name', `<${'d'.repeat(256 * 1024)}/>\n`, 'Name too long (an element name of 262144 characters');
  add(
    'huge',
    'attribute-name-256k',
    'a 256 KB attribute name',
    domain([`<serial type='pty' ${'x'.repeat(256 * 1024)}='1'>\n  <target port='x'/>\n</serial>`]),
    'Name too long (an attribute name of 262144 characters',
  );
  add(
    'huge',
    'text-256k',
    'a 256 KB domain name before a bad device',
    domain(["<serial type='bogus'/>"]).replace('<name>hostile</name>', `<name>${'n'.repeat(256 * 1024)}</name>`),
    'unknown type presented',
  );
  add(
    'huge',
    'comment-256k',
    'a 256 KB comment before a bad device',
    domain([`<!-- ${'c'.repeat(256 * 1024)} -->`, "<serial type='bogus'/>"]),
    'unknown type presented',
  );
  add(
    'huge',
    'port-digits-10k',
    'a target port of 10,000 digits',
    domain([`<serial type='pty'>\n  <target port='${'9'.repeat(10000)}'/>\n</serial>`]),
    'Invalid port number',
  );
  add('huge', 'charref-digits-1k', 'a character reference of 1,000 digits', domain([`<serial type='&#${'9'.repeat(1000)};'/>`]), 'is not allowed in XML');
  add('huge', 'escapes-100k', '100,000 escaped characters in one attribute', domain([`<serial type='${'&lt;'.repeat(100000)}'/>`]), 'unknown type presented');
  const attrs = Array.from({ length: 20000 }, (_, i) => `a${i}='${i}'`).join(' ');
  add('huge', 'attributes-20k', '20,000 attributes on one device', domain([`<serial ${attrs} type='bogus'/>`]), 'unknown type presented');
  add(
    'huge',
    'parallels-10k',
    '10,000 parallel ports, then a tcp serial without host',
    domain([...Array.from({ length: 10000 }, () => "<parallel type='null'/>"), "<serial type='tcp'>\n  <source service='1'/>\n</serial>"]),
    'Missing source host attribute',
  );
  add(
    'huge',
    'serials-10k-aarch64',
    '10,000 serials numbered by post-parse on aarch64, one broken',
    domain([...Array.from({ length: 10000 }, () => "<serial type='null'/>"), "<serial type='file'/>"], { arch: 'aarch64', machine: 'sbsa-ref' }),
    'Missing source path attribute',
  );
  add(
    'huge',
    'channels-10k',
    '10,000 virtio channels needing 323 controllers, one broken',
    domain([
      ...Array.from({ length: 10000 }, () => "<channel type='null'>\n  <target type='virtio'/>\n</channel>"),
      "<channel type='tcp'>\n  <target type='virtio'/>\n</channel>",
    ]),
    'Missing source host attribute',
  );
  add(
    'huge',
    'consoles-10k',
    '10,000 virtio consoles, one broken',
    domain([
      ...Array.from({ length: 10000 }, () => "<console type='null'>\n  <target type='virtio'/>\n</console>"),
      "<console type='pipe'>\n  <target type='virtio'/>\n</console>",
    ]),
    'Missing source path attribute',
  );
  add(
    'huge',
    'controller-ports-4g',
    'a virtio-serial controller with 4,000,000,000 ports and a broken channel',
    domain(["<channel type='tcp'>\n  <target type='virtio' name='a'/>\n</channel>"], {
      controllers: ["<controller type='virtio-serial' index='0' ports='4000000000'/>"],
    }),
    'Missing source host attribute',
  );
}

function deepCases(): void {
  const nest = (n: number, inner = '', tag = 'a'): string => `<${tag}>`.repeat(n) + inner + `</${tag}>`.repeat(n);
  const withMetadata = (body: string): string => domain(["<serial type='pty'/>"], { extra: `  <metadata>${body}</metadata>` });
  add('deep', 'metadata-100k', '100,000 nested elements in <metadata>', withMetadata(nest(100000)), 'nested more than 256 deep');
  add('deep', 'unclosed-100k', '100,000 nested elements never closed', `<domain>\n${'<a>'.repeat(100000)}`, 'unclosed');
  add(
    'deep',
    'extension-1000',
    '1,000 nested elements inside <cd:history>',
    domain([`<serial type='pty'>\n  <cd:history size='1'>${nest(1000)}</cd:history>\n</serial>`]),
    'nested more than 256 deep',
  );
  add(
    'deep',
    'source-300',
    '300 nested elements inside a <source>',
    domain([`<serial type='file'>\n  <source path='/f'>${nest(300)}</source>\n</serial>`]),
    'nested more than 256 deep',
  );
  // domain, metadata and 255 more: 257 levels, one past the limit.
  add('deep', 'limit-plus-one', '257 levels, one past the limit', withMetadata(nest(255)), 'nested more than 256 deep');
  // 256 levels are allowed: this one is refused for its device instead.
  add(
    'deep',
    'limit-exactly',
    '256 levels (allowed) and a bad device',
    domain(["<serial type='bogus'/>"], { extra: `  <metadata>${nest(254)}</metadata>` }),
    'unknown type presented',
  );
  add(
    'deep',
    'prefixed-5000',
    '5,000 nested namespaced elements',
    withMetadata(`<m:x xmlns:m='urn:m'>${'<m:x>'.repeat(5000)}${'</m:x>'.repeat(5000)}</m:x>`),
    'nested more than 256 deep',
  );
  add('deep', 'devices-in-devices', 'devices nested 1,000 deep as <serial> elements', domain([nest(1000, '', 'serial')]), 'nested more than 256 deep');
}

// ---------------------------------------------------------------------------
// Entities, external entities and DTDs

const FORBIDDEN = 'document type declarations and entity declarations are not allowed';

function entityCases(): void {
  const lols = ['<!ENTITY lol "lol">', ...Array.from({ length: 9 }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i === 0 ? '' : i};`.repeat(10)}">`)].join('\n  ');
  add(
    'entities',
    'billion-laughs',
    'the classic: 10^9 lols in <name>',
    `<?xml version="1.0"?>\n<!DOCTYPE domain [\n  ${lols}\n]>\n<domain><name>&lol9;</name></domain>\n`,
    FORBIDDEN,
  );
  add('entities', 'billion-laughs-attribute', '10^9 lols in a type attribute', `<!DOCTYPE serial [\n  ${lols}\n]>\n<serial type='&lol9;'/>\n`, FORBIDDEN);
  add(
    'entities',
    'quadratic-blowup',
    'one 20 KB entity referenced 2,000 times',
    `<!DOCTYPE domain [<!ENTITY a "${'a'.repeat(20000)}">]>\n<domain><name>${'&a;'.repeat(2000)}</name></domain>\n`,
    FORBIDDEN,
  );
  add(
    'entities',
    'parameter-laughs',
    'parameter-entity expansion',
    `<!DOCTYPE domain [\n  <!ENTITY % a "aaaaaaaaaa">\n  <!ENTITY % b "%a;%a;%a;%a;%a;%a;%a;%a;%a;%a;">\n  <!ENTITY c "%b;%b;%b;%b;%b;%b;%b;%b;%b;%b;">\n]>\n<domain><name>&c;</name></domain>\n`,
    FORBIDDEN,
  );
  add('entities', 'entity-without-doctype', 'an ENTITY declaration with no DOCTYPE', `<!ENTITY lol "lol">\n<serial type='&lol;'/>\n`, FORBIDDEN);
  add('entities', 'doctype-mid-document', 'a DOCTYPE inside <devices>', domain(["<!DOCTYPE serial [<!ENTITY x 'pty'>]>", "<serial type='&x;'/>"]), FORBIDDEN);
  add(
    'entities',
    'doctype-in-cdata',
    'an ENTITY declaration inside CDATA (refused all the same)',
    domain(["<serial type='bogus'/>"]).replace('<name>hostile</name>', '<name><![CDATA[<!ENTITY x "y">]]></name>'),
    FORBIDDEN,
  );
  add('entities', 'doctype-lowercase', 'a lowercase <!doctype> (not XML)', `<!doctype serial>\n<serial type='pty'/>\n`, 'malformed XML');
  add('entities', 'undeclared-entity', 'a reference to an entity never declared', domain(["<serial type='&lol9;'/>"]), 'entity not found');
  add('entities', 'html-entity', 'an HTML entity XML does not have', domain(["<serial type='pty&nbsp;'/>"]), 'entity not found');
  add('entities', 'attlist-default', 'an ATTLIST default supplying type', `<!DOCTYPE serial [<!ATTLIST serial type CDATA "pty">]>\n<serial/>\n`, FORBIDDEN);
}

function xxeCases(): void {
  const X = (slug: string, what: string, text: string, expect = FORBIDDEN): boolean => add('xxe', slug, what, text, expect);
  X(
    'passwd-text',
    'SYSTEM entity for /etc/passwd in <name>',
    `<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<domain><name>&xxe;</name><devices><serial type='bogus'/></devices></domain>\n`,
  );
  X(
    'passwd-type',
    'SYSTEM entity for /etc/passwd in a type attribute',
    `<!DOCTYPE serial [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<serial type='&xxe;'/>\n`,
  );
  X(
    'passwd-path',
    'SYSTEM entity in a source path',
    `<!DOCTYPE serial [<!ENTITY p SYSTEM "/etc/passwd">]>\n<serial type='file'><source path='&p;'/><protocol type='x'/></serial>\n`,
  );
  X('shadow', 'SYSTEM entity for /etc/shadow', `<!DOCTYPE domain [<!ENTITY s SYSTEM "file:///etc/shadow">]>\n<domain><name>&s;</name></domain>\n`);
  X(
    'public-id',
    'PUBLIC entity with a file URL',
    `<!DOCTYPE domain [<!ENTITY p PUBLIC "-//X//Y" "file:///etc/hostname">]>\n<domain><name>&p;</name></domain>\n`,
  );
  X('parameter-http', 'external parameter entity over HTTP', `<!DOCTYPE domain [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/evil.dtd"> %ext;]>\n<domain/>\n`);
  X(
    'oob-exfiltration',
    'out-of-band exfiltration through nested parameter entities',
    `<!DOCTYPE domain [\n  <!ENTITY % file SYSTEM "file:///etc/passwd">\n  <!ENTITY % eval "<!ENTITY &#x25; exfil SYSTEM 'http://127.0.0.1:9/?x=%file;'>">\n  %eval;\n  %exfil;\n]>\n<domain/>\n`,
  );
  X(
    'external-dtd',
    'an external DTD',
    `<?xml version="1.0"?>\n<!DOCTYPE domain SYSTEM "file:///etc/passwd">\n<domain><devices><serial type='bogus'/></devices></domain>\n`,
  );
  X('external-dtd-http', 'an external DTD over HTTP', `<!DOCTYPE domain PUBLIC "-//libvirt//DTD domain//EN" "http://127.0.0.1:9/domain.dtd">\n<domain/>\n`);
  X(
    'dev-zero',
    'an entity reading /dev/zero (would never end)',
    `<!DOCTYPE domain [<!ENTITY z SYSTEM "file:///dev/zero">]>\n<domain><name>&z;</name></domain>\n`,
  );
  X('dev-random', 'an external DTD of /dev/random', `<!DOCTYPE domain SYSTEM "/dev/random">\n<domain/>\n`);
  X('proc-environ', 'an entity reading /proc/self/environ', `<!DOCTYPE domain [<!ENTITY e SYSTEM "/proc/self/environ">]>\n<domain><name>&e;</name></domain>\n`);
  for (const scheme of [
    'php://filter/read=convert.base64-encode/resource=/etc/passwd',
    'expect://id',
    'jar:file:///tmp/x.jar!/a',
    'netdoc:///etc/passwd',
    'gopher://127.0.0.1:9/_x',
    'ftp://127.0.0.1:9/x',
  ]) {
    const slug = scheme.split(':')[0] ?? 'scheme';
    X(`scheme-${slug}`, `a SYSTEM entity with the ${slug}: scheme`, `<!DOCTYPE domain [<!ENTITY x SYSTEM "${scheme}">]>\n<domain><name>&x;</name></domain>\n`);
  }
  X(
    'after-bom',
    'an XXE after a UTF-8 byte order mark',
    `\ufeff<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<domain><name>&xxe;</name></domain>\n`,
  );
  X(
    'after-comment',
    'an XXE after a comment and blank lines',
    `<!-- harmless -->\n\n\n<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<domain><name>&xxe;</name></domain>\n`,
  );
  X(
    'spaced',
    'a DOCTYPE spread over lines with odd spacing',
    `<!DOCTYPE\n  domain\n  [\n    <!ENTITY\n      xxe\n      SYSTEM\n      'file:///etc/passwd'\n    >\n  ]\n>\n<domain><name>&xxe;</name></domain>\n`,
  );
  // No DTD at all, but other ways of naming outside files: none of them is followed.
  X(
    'xinclude',
    'an XInclude of /etc/passwd (not processed), then a bad port',
    domain([
      "<serial type='pty' xmlns:xi='http://www.w3.org/2001/XInclude'>\n  <xi:include href='file:///etc/passwd' parse='text'/>\n  <target port='x'/>\n</serial>",
    ]),
    'Invalid port number: x',
  );
  X(
    'xinclude-root',
    'an XInclude as the root element',
    "<xi:include xmlns:xi='http://www.w3.org/2001/XInclude' href='/etc/passwd' parse='text'/>\n",
    'expected a <domain> document',
  );
  X(
    'stylesheet',
    'an xml-stylesheet pointing at /etc/passwd, then a bad device',
    `<?xml version='1.0'?>\n<?xml-stylesheet type='text/xsl' href='file:///etc/passwd'?>\n${domain(["<serial type='bogus'/>"])}`,
    'unknown type presented',
  );
  X(
    'schema-location',
    'xsi:schemaLocation naming /etc/passwd, then a bad device',
    domain(["<serial type='bogus'/>"]).replace(
      "<domain type='kvm'",
      "<domain type='kvm' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xsi:schemaLocation='urn:x file:///etc/passwd'",
    ),
    'unknown type presented',
  );
  const utf16 = Buffer.from(`<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<domain><name>&xxe;</name></domain>\n`, 'utf16le');
  add('xxe', 'utf16-xxe', 'an XXE document in UTF-16LE', Buffer.concat([Buffer.from([0xff, 0xfe]), utf16]), 'only UTF-8 is supported');
}

// ---------------------------------------------------------------------------
// Bytes

function bytesCases(): void {
  const B = (slug: string, what: string, content: Buffer | string, expect?: string) => add('bytes', slug, what, content, expect);
  const bad = domain(["<serial type='bogus'/>"]);
  const utf8 = (s: string) => Buffer.from(s, 'utf8');
  const splice = (s: string, marker: string, bytes: number[]): Buffer => {
    const at = Buffer.from(s, 'utf8').indexOf(marker);
    const b = Buffer.from(s, 'utf8');
    return Buffer.concat([b.subarray(0, at), Buffer.from(bytes), b.subarray(at + Buffer.byteLength(marker))]);
  };
  const good = domain(["<serial type='pty'/>"]);

  B('empty', 'an empty file', Buffer.alloc(0), 'missing root element');
  B('newline', 'a single newline', '\n', 'missing root element');
  B('blank', 'blank lines and spaces', '  \n\t\n   \r\n', 'missing root element');
  B('declaration-only', 'only an XML declaration', "<?xml version='1.0' encoding='UTF-8'?>\n", 'missing root element');
  B('comment-only', 'only a comment', '<!-- nothing here -->\n', 'missing root element');
  B('bom-only', 'only a UTF-8 byte order mark', Buffer.from([0xef, 0xbb, 0xbf]), 'missing root element');
  B('bom-bad-device', 'a UTF-8 BOM before a document with a bad device', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), utf8(bad)]), 'unknown type presented');
  B('bom-twice', 'two UTF-8 byte order marks', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]), utf8(good)]), 'malformed XML');
  B('bom-mid-document', 'a byte order mark in the middle of a type', utf8(domain(["<serial type='p\ufeffty'/>"])), '\\ufeff');
  B('utf16le', 'UTF-16LE with a byte order mark', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(good, 'utf16le')]), 'UTF-16');
  B('utf16be', 'UTF-16BE with a byte order mark', Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(good, 'utf16le').swap16()]), 'UTF-16');
  B('utf16le-no-bom', 'UTF-16LE without a byte order mark (NUL bytes)', Buffer.from(good, 'utf16le'), 'U+0000');
  B(
    'utf32le',
    'UTF-32LE with a byte order mark',
    Buffer.concat([Buffer.from([0xff, 0xfe, 0, 0]), Buffer.from([...good].flatMap((c) => [c.charCodeAt(0), 0, 0, 0]))]),
    'UTF-16 or UTF-32',
  );
  B(
    'utf32be',
    'UTF-32BE with a byte order mark',
    Buffer.concat([Buffer.from([0, 0, 0xfe, 0xff]), Buffer.from([...good].flatMap((c) => [0, 0, 0, c.charCodeAt(0)]))]),
    'UTF-16 or UTF-32',
  );
  B('latin1-name', 'Latin-1 text in <name>', splice(good, 'hostile', [0x67, 0xe4, 0x73, 0x74]), 'not proper UTF-8 (byte 0xE4)');
  B(
    'latin1-declared',
    'Latin-1 text, declared as ISO-8859-1',
    Buffer.concat([utf8("<?xml version='1.0' encoding='ISO-8859-1'?>\n"), splice(good, 'hostile', [0x63, 0xe9])]),
    'only UTF-8 is supported',
  );
  B('ff-in-type', 'byte 0xFF in a type', splice(good, "'pty'", [0x27, 0xff, 0xfe, 0x27]), 'byte 0xFF');
  B(
    'overlong-slash',
    'an overlong encoding of / in a path',
    splice(domain(["<serial type='file'><source path='/x'/></serial>"]), '/x', [0xc0, 0xaf, 0x78]),
    'byte 0xC0',
  );
  B('surrogate', 'an encoded UTF-16 surrogate', splice(good, 'hostile', [0xed, 0xa0, 0x80]), 'byte 0xED');
  B('beyond-unicode', 'a four-byte sequence beyond U+10FFFF', splice(good, 'hostile', [0xf4, 0x90, 0x80, 0x80]), 'byte 0xF4');
  B('f5-lead', 'a lead byte no UTF-8 uses (0xF5)', splice(good, 'hostile', [0xf5, 0x80, 0x80, 0x80]), 'byte 0xF5');
  B('lone-continuation', 'a lone continuation byte', splice(good, 'hostile', [0x80]), 'byte 0x80');
  B('cut-sequence', 'a multi-byte character cut at the end of the file', Buffer.concat([utf8(good.trimEnd()), Buffer.from([0xe2, 0x82])]), 'not proper UTF-8');
  B('cp1252-quotes', 'Windows-1252 curly quotes around a value', splice(good, "'pty'", [0x93, 0x70, 0x74, 0x79, 0x94]), 'not proper UTF-8');
  B('nul-first', 'a NUL byte first', Buffer.concat([Buffer.from([0]), utf8(good)]), 'U+0000');
  B('nul-in-type', 'a NUL byte inside a type', splice(good, "'pty'", [0x27, 0x70, 0x00, 0x74, 0x79, 0x27]), 'U+0000');
  B('nul-in-text', 'a NUL byte in <name>', splice(good, 'hostile', [0x68, 0x00]), 'U+0000');
  B('nul-after-root', 'NUL bytes after the root element', Buffer.concat([utf8(good), Buffer.alloc(16)]), 'U+0000');
  B('nuls-only', '4 KB of NUL bytes', Buffer.alloc(4096), 'U+0000');
  B('nul-charref', 'a NUL as a character reference', domain(["<serial type='pty&#0;'/>"]), 'U+0000');
  B('escape-raw', 'a raw ESC (terminal escape sequence) in a type', domain(["<serial type='\u001b[2J\u001b[31mpty'/>"]), 'U+001B');
  B('escape-charref', 'an ESC as a character reference', domain(["<serial type='&#27;[2Jpty'/>"]), 'U+001B');
  B('control-01', 'a raw U+0001', domain(["<serial type='p\u0001ty'/>"]), 'U+0001');
  B('del', 'a DEL (allowed in XML 1.0) in a type, printed escaped', domain(["<serial type='pty\u007f'/>"]), 'pty\\x7f');
  B('c1-csi', 'a C1 CSI (U+009B, allowed in XML) in a type, printed escaped', domain(["<serial type='&#x9b;2Jpty'/>"]), '\\x9b2Jpty');
  B(
    'newline-charref',
    'a newline as a character reference in a type, printed escaped',
    domain(["<serial type='pty&#10;serial0: valid'/>"]),
    'pty\\x0aserial0: valid',
  );
  B('cr-charref', 'a carriage return as a character reference in a type', domain(["<serial type='bogus&#13;ok'/>"]), 'bogus\\x0dok');
  B('line-separator', 'U+2028 LINE SEPARATOR in a type', domain(["<serial type='a&#x2028;b'/>"]), 'a\\u2028b');
  B('bidi-override', 'a right-to-left override in a type', domain(["<serial type='\u202eytp'/>"]), '\\u202eytp');
  B('fffe', 'U+FFFE, not a character', domain(["<serial type='\ufffe'/>"]), 'U+FFFE');
  B('surrogate-charref', 'a surrogate as a character reference', domain(["<serial type='&#xD800;'/>"]), 'U+D800');
  B('beyond-charref', 'a character reference beyond U+10FFFF', domain(["<serial type='&#x110000;'/>"]), 'beyond U+10FFFF');
  B('crlf', 'CRLF line endings with a bad device on line 12', good.replace(/\n/g, '\r\n').replace("type='pty'", "type='bogus'"), ':9: ');
  B('cr-only', 'old Mac CR line endings with a bad device', bad.replace(/\n/g, '\r'), 'unknown type presented');
}

// ---------------------------------------------------------------------------
// Not well-formed in other ways, and wrong roots

function malformedCases(): void {
  const M = (slug: string, what: string, text: string, expect = 'malformed XML') => add('malformed', slug, what, text, expect);
  const good = domain(["<serial type='pty'/>"]);
  M('two-roots', 'two root elements', "<serial type='pty'/>\n<serial type='pty'/>\n");
  M('text-after-root', 'text after the root element', `${good}trailing text\n`);
  M('text-before-root', 'text before the root element', `leading text\n${good}`);
  M('mismatched-end', 'mismatched end tag', good.replace('</devices>', '</device>'));
  M('unclosed-quote', 'an attribute value that never ends', domain(["<serial type='pty/>"]));
  M('lt-in-attribute', "'<' inside an attribute value", domain(["<serial type='p<ty'/>"]));
  M('bare-ampersand', "a bare '&'", domain(["<serial type='p&ty'/>"]));
  M(
    'undeclared-prefix',
    'a namespace prefix never declared',
    good.replace(" xmlns:cd='urn:chardev:1'", '').replace("<serial type='pty'/>", "<serial type='pty'><cd:history size='1'/></serial>"),
  );
  M('cdata-outside', 'CDATA outside the root element', `<![CDATA[x]]>\n${good}`);
  M('declaration-twice', 'two XML declarations', `<?xml version='1.0'?>\n<?xml version='1.0'?>\n${good}`);
  M('declaration-late', 'an XML declaration after a blank line', `\n<?xml version='1.0'?>\n${good}`);
  M('unterminated-comment', 'a comment that never ends', `${good}<!-- open`);
  M('double-hyphen', "'--' inside a comment", `<!-- a -- b -->\n${good}`);
  M('unquoted-attribute', 'an unquoted attribute value', domain(['<serial type=pty/>']), 'AttValue');
  M('valueless-attribute', 'an attribute without a value', domain(['<serial type/>']), 'Specification mandates value for attribute type');
  M(
    'no-space-between-attributes',
    'attributes without a space between them',
    domain(["<serial type='file'><source path='/a'append='on'/></serial>"]),
    'attributes construct error',
  );
  M('duplicate-root-attribute', 'a duplicated attribute on the root', good.replace("type='kvm'", "type='kvm' type='qemu'"), 'Attribute type redefined');
  M('digit-element', 'an element name starting with a digit', domain(["<1serial type='pty'/>"]), "invalid element name '1serial'");
  M('digit-attribute', 'an attribute name starting with a digit', domain(["<serial 1type='pty'/>"]), "invalid attribute name '1type'");
  M('empty-end-tag', 'an empty end tag', domain(["<serial type='pty'></>"]));
  M('lt-in-text', "a bare '<' in text", good.replace('<name>hostile</name>', '<name>a < b</name>'));
  M('eof-in-tag', 'the file ends inside a start tag', "<domain type='kvm'");
  M('eof-in-declaration', 'the file ends inside the XML declaration', "<?xml version='1.0");
  M('eof-in-cdata', 'the file ends inside CDATA', '<domain><name><![CDATA[abc');
  M('eof-in-pi', 'the file ends inside a processing instruction', '<domain><?target data');
  M(
    'root-namespaced',
    'a <domain> in some other namespace',
    good.replace("<domain type='kvm'", "<domain xmlns='urn:not-libvirt' type='kvm'"),
    'expected a <domain> document',
  );
  M(
    'root-prefixed-device',
    'a device element in the chardev namespace as the root',
    "<cd:serial xmlns:cd='urn:chardev:1' type='pty'/>\n",
    'expected a <domain> document',
  );
  M('root-devices', '<devices> as the root', "<devices>\n  <serial type='pty'/>\n</devices>\n", 'expected a <domain> document');
  M('root-html', 'an HTML page', '<html><head><title>x</title></head><body><p>serial</p></body></html>\n', 'expected a <domain> document');
  M('root-svg', 'an SVG image with a script', "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>\n", 'expected a <domain> document');
  M('json', 'a JSON document', '{"domain": {"devices": {"serial": {"type": "pty"}}}}\n');
  M('yaml', 'a YAML document', 'domain:\n  devices:\n    - serial: {type: pty}\n');
  M('shell', 'a shell script', '#!/bin/sh\ncat /etc/passwd\n');
}

// ---------------------------------------------------------------------------

function check(): string[] {
  const problems: string[] = [];
  for (const d of docs) {
    const name = `${d.category}/${d.slug}`;
    let caught: unknown;
    try {
      loadDomain(decodeDocument(d.content, name), { file: name });
    } catch (e) {
      caught = e;
    }
    if (caught === undefined) problems.push(`${name}: accepted`);
    else if (!(caught instanceof ConfigError)) problems.push(`${name}: not a ConfigError: ${String(caught)}`);
    else if (d.expect !== undefined && !caught.message.includes(d.expect)) problems.push(`${name}: expected '${d.expect}' in: ${caught.message.slice(0, 300)}`);
  }
  return problems;
}

function main(): void {
  libvirtCases();
  mutationCases({
    'wrong-type': 12,
    'missing-host': 4,
    'missing-service': 4,
    'missing-path': 5,
    'missing-udp-service': 3,
    'missing-reconnect-timeout': 4,
    'missing-history-size': 2,
    'missing-address-type': 3,
    'duplicate-attribute': 8,
    'target-port': 10,
    'isa-port-range': 3,
    'guestfwd-port': 4,
    'web-port': 4,
    'address-port': 5,
    'acpi-index': 3,
    'bad-mode': 8,
    'bad-protocol': 6,
    'bad-reconnect': 10,
    'bad-extension': 12,
    'bad-enum': 6,
    'bad-target': 8,
  });
  truncationCases(16);
  hugeCases();
  deepCases();
  entityCases();
  xxeCases();
  bytesCases();
  malformedCases();

  const problems = check();
  if (problems.length > 0) {
    process.stderr.write(`make-hostile-corpus: ${problems.length} document(s) are not refused as intended:\n${problems.map((p) => `  ${p}`).join('\n')}\n`);
    process.exitCode = 1;
    return;
  }

  rmSync(CORPUS_DIR, { recursive: true, force: true });
  mkdirSync(CORPUS_DIR, { recursive: true });
  const counters = new Map<string, number>();
  const index: CorpusEntry[] = [];
  for (const d of docs) {
    const n = (counters.get(d.category) ?? 0) + 1;
    counters.set(d.category, n);
    const slug = d.slug
      .replace(/[^A-Za-z0-9.-]+/g, '-')
      .replace(/^-|-$/g, '')
      .slice(0, 60);
    const file = `${d.category}-${String(n).padStart(3, '0')}-${slug}.xml`;
    writeFileSync(join(CORPUS_DIR, file), d.content);
    index.push({ file, category: d.category, what: d.what, bytes: d.content.length, ...(d.expect !== undefined ? { expect: d.expect } : {}) });
  }
  writeFileSync(join(CORPUS_DIR, 'index.json'), `${JSON.stringify(index, null, 1)}\n`);
  const total = index.reduce((s, e) => s + e.bytes, 0);
  const summary = [...counters].map(([c, n]) => `${c} ${n}`).join(', ');
  writeFileSync(join(CORPUS_DIR, 'README.md'), readme(index.length, summary, total));
  const written = readdirSync(CORPUS_DIR).filter((f) => f.endsWith('.xml')).length;
  process.stdout.write(`hostile corpus: ${written} documents (${summary}), ${(total / 1024 / 1024).toFixed(1)} MiB, in ${CORPUS_DIR}\n`);
}

function readme(count: number, summary: string, total: number): string {
  return `# Hostile documents

${count} documents chardev must refuse, each with one line on stderr and exit
status 1: no crash, no stack trace, no hang, nothing read from outside the
document. \`test/config/hostile.test.ts\` runs every one through
\`chardev validate\`.

Generated by \`npm run corpus\` (\`scripts/make-hostile-corpus.ts\`); do not edit
by hand. The script uses a seeded PRNG and no clock, so running it again gives
the same bytes; it checks every document against the loader before writing
and refuses to write a corpus with a document that is accepted.

By category: ${summary}; ${(total / 1024 / 1024).toFixed(1)} MiB in all.
\`index.json\` lists each file with its category, what it is, and (where known)
text its error line must contain.

The libvirt cases are written here, modelled on libvirt 9.0.0's
\`qemuxml2argvdata/*.err\` cases and the messages its parser and validator give;
none is a copy of libvirt's test data.
`;
}

main();
