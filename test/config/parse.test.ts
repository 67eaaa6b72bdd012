/** Parsing, defaults and validation: libvirt's messages, with file, line, element and alias. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadDomain } from '../../src/config/domain.ts';
import { ConfigError } from '../../src/errors.ts';
import { hostDevices, namedDevices } from '../../src/config/names.ts';
import { aliasAtParse } from '../../src/config/parse.ts';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LIBVIRT_DATA } from '../helpers/paths.ts';
import { decodeDocument } from '../../src/config/xml.ts';
import { performance } from 'node:perf_hooks';

function domain(devices: string, os = "<os><type arch='x86_64' machine='pc'>hvm</type></os>"): string {
  return `<domain type='qemu'>\n  <name>t</name>\n  ${os}\n  <devices>\n${devices}\n  </devices>\n</domain>\n`;
}

function refuse(xml: string, libvirtMessage: string, message?: string | RegExp): ConfigError {
  let caught: unknown;
  try {
    loadDomain(xml, { file: 'dom.xml' });
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  assert.equal(caught.libvirtMessage, libvirtMessage);
  if (typeof message === 'string') assert.equal(caught.message, message);
  else if (message) assert.match(caught.message, message);
  return caught;
}

test('missing tcp host: libvirt message with file, line, element and alias', () => {
  const e = refuse(
    domain("    <serial type='pty'/>\n    <serial type='tcp'>\n      <source mode='bind' service='9'/>\n    </serial>"),
    'internal error: Missing source host attribute for char device',
    "dom.xml:6: <serial type='tcp'> (serial1): Missing source host attribute for char device",
  );
  assert.equal(e.code, 'ERR_CONFIG_MISSING');
});

const refusals: Array<[string, string, string]> = [
  ['unknown host type', "<serial type='bogus'/>", 'unsupported configuration: unknown type presented to host for character device: bogus'],
  ['tcp without service', "<serial type='tcp'><source host='h'/></serial>", 'internal error: Missing source service attribute for char device'],
  ['file without path', "<serial type='file'/>", 'internal error: Missing source path attribute for char device'],
  ['pipe without path', "<parallel type='pipe'/>", 'internal error: Missing source path attribute for char device'],
  [
    'udp with only a bind source',
    "<serial type='udp'><source mode='bind' host='h' service='1'/></serial>",
    'internal error: Missing source service attribute for char device',
  ],
  [
    'reconnect in bind mode',
    "<serial type='tcp'><source mode='bind' host='h' service='1'><reconnect enabled='no'/></source></serial>",
    'internal error: chardev reconnect is possible only for connect mode',
  ],
  [
    'reconnect timeout 0',
    "<serial type='tcp'><source host='h' service='1'><reconnect enabled='yes' timeout='0'/></source></serial>",
    "invalid argument: chardev reconnect source timeout cannot be '0'",
  ],
  [
    'reconnect without timeout',
    "<serial type='unix'><source path='/s'><reconnect enabled='yes'/></source></serial>",
    "XML error: Missing required attribute 'timeout' in element 'reconnect'",
  ],
  [
    'bad mode',
    "<serial type='tcp'><source mode='listen' host='h' service='1'/></serial>",
    "XML error: Invalid value for attribute 'mode' in element 'source': 'listen'.",
  ],
  [
    'bad append',
    "<serial type='file'><source path='/f' append='yes'/></serial>",
    "XML error: Invalid value for attribute 'append' in element 'source': 'yes'.",
  ],
  ['unknown protocol', "<serial type='tcp'><source host='h' service='1'/><protocol type='ssh'/></serial>", "unsupported configuration: Unknown protocol 'ssh'"],
  ['two sources', "<serial type='file'><source path='/a'/><source path='/b'/></serial>", 'XML error: only one source element is allowed for character device'],
  [
    'three udp sources',
    "<serial type='udp'><source service='1'/><source service='2'/><source service='3'/></serial>",
    'XML error: only two source elements are allowed for character device',
  ],
  ['two logs', "<serial type='null'><log file='/a'/><log file='/b'/></serial>", 'XML error: only one log element is allowed for character device'],
  ['bad target port', "<serial type='null'><target port='x'/></serial>", 'XML error: Invalid port number: x'],
  ['channel without target', "<channel type='pty'/>", 'XML error: target type must be specified for channel device'],
  [
    'channel target without type',
    "<channel type='pty'><target/></channel>",
    "unsupported configuration: unknown target type '(null)' specified for character device",
  ],
  [
    'guestfwd without address',
    "<channel type='pipe'><source path='/p'/><target type='guestfwd' port='1'/></channel>",
    'XML error: guestfwd channel does not define a target address',
  ],
  [
    'guestfwd IPv6',
    "<channel type='pipe'><source path='/p'/><target type='guestfwd' address='::1' port='1'/></channel>",
    'unsupported configuration: guestfwd channel only supports IPv4 addresses',
  ],
  [
    'second serial console',
    "<serial type='pty'/><console type='pty'/><console type='pty'><target type='serial'/></console>",
    'unsupported configuration: Only the first console can be a serial port',
  ],
  [
    'spiceport bad channel',
    "<serial type='spiceport'><source channel='a b'/></serial><graphics type='spice'/>",
    'invalid argument: Invalid character in source channel for char device',
  ],
  [
    'spiceport without spice graphics',
    "<serial type='spiceport'><source channel='org.qemu.x'/></serial>",
    "unsupported configuration: chardev 'spiceport' not supported without spice graphics",
  ],
  [
    'dbus without channel',
    "<channel type='dbus'><target type='virtio'/></channel>",
    'unsupported configuration: Missing source channel attribute for char device',
  ],
  [
    'nmdm with only master',
    "<serial type='nmdm'><source master='/dev/nmdm0A'/></serial>",
    'internal error: Should define both master and slave path attributes for nmdm device',
  ],
  ['spicevmc on a serial', "<serial type='spicevmc'/>", 'unsupported configuration: spicevmc device type only supports virtio'],
  [
    'five isa serials',
    "<serial type='null'><target type='isa-serial' port='4'/></serial>",
    "internal error: Maximum supported number of ISA serial ports is '4'",
  ],
  [
    'isa-serial with a pci address',
    "<serial type='null'><target type='isa-serial'/><address type='pci' domain='0' bus='0' slot='3' function='0'/></serial>",
    "unsupported configuration: Target type 'isa-serial' requires address type 'isa'",
  ],
  ['xen console target under QEMU', "<console type='pty'><target type='xen'/></console>", 'unsupported configuration: unsupported console target type xen'],
];

for (const [what, xml, expected] of refusals) {
  test(`refuses ${what}`, () => {
    refuse(domain(`    ${xml}`), expected, /^dom\.xml:\d+: <\w+( type='[\w-]+')?>( \(\w+\))?: /);
  });
}

test('defaults: type pty, mode connect, protocol raw; aliases and ids', () => {
  const loaded = loadDomain(
    domain(
      "    <serial/>\n    <serial type='tcp'><source host='h' service='1'/></serial>\n    <parallel type='null'/>\n    <channel type='pty'><target type='virtio' name='x'/></channel>\n    <console type='pty'><target type='virtio'/></console>",
    ),
  );
  const [s0, s1] = loaded.def.serials;
  assert.equal(s0?.source.type, 'pty');
  assert.ok(s1?.source.type === 'tcp');
  assert.equal(s1.source.mode, 'connect');
  assert.equal(s1.source.protocol, 'raw');
  assert.deepEqual(
    hostDevices(loaded.def).map((d) => d.alias),
    ['serial0', 'serial1', 'parallel0', 'channel0', 'console1'],
  );
});

test('console compatibility: a lone serial console becomes serial 0', () => {
  const loaded = loadDomain(domain("    <console type='file'><source path='/tmp/c.log'/><target port='0'/></console>"));
  assert.equal(loaded.def.serials.length, 1);
  const s = loaded.def.serials[0];
  assert.ok(s?.source.type === 'file');
  assert.equal(s.source.path, '/tmp/c.log');
  assert.equal(s.target.type, 'isa-serial');
  assert.equal(loaded.def.consoles[0]?.aliasOfSerial, 0);
});

test('non-HVM guests get no console compatibility', () => {
  const loaded = loadDomain(domain("    <console type='pty'><target type='serial'/></console>", '<os><type>xen</type></os>'));
  assert.equal(loaded.def.serials.length, 0);
  assert.equal(loaded.def.consoles[0]?.aliasOfSerial, undefined);
});

test('serial ports are numbered max+1 in document order', () => {
  const loaded = loadDomain(
    domain(
      "    <serial type='null'/>\n    <serial type='null'><target port='5'/></serial>\n    <serial type='null'/>",
      "<os><type arch='aarch64' machine='virt'>hvm</type></os>",
    ),
  );
  assert.deepEqual(
    loaded.def.serials.map((s) => s.target.port),
    [6, 5, 7],
  );
  assert.deepEqual(
    loaded.def.serials.map((s) => s.target.model),
    ['pl011', 'pl011', 'pl011'],
  );
});

test('a single device element is accepted on its own', () => {
  const loaded = loadDomain("<serial type='tcp'>\n  <source mode='bind' host='127.0.0.1' service='2445'/>\n  <protocol type='telnet'/>\n</serial>", {
    file: 'dev.xml',
  });
  assert.equal(loaded.standalone, true);
  const s = loaded.def.serials[0];
  assert.ok(s?.source.type === 'tcp');
  assert.equal(s.source.protocol, 'telnet');
});

test('malformed XML gives the parser line and column', () => {
  assert.throws(
    () => loadDomain('<domain>\n  <devices>\n    <serial type="pty">\n  </devices>\n</domain>', { file: 'm.xml' }),
    (e: unknown) =>
      e instanceof ConfigError && e.code === 'ERR_XML_MALFORMED' && /^m\.xml:[34]:\d+: malformed XML: Opening and ending tag mismatch/.test(e.message),
  );
});

test('DTDs and entity declarations are refused before parsing', () => {
  const xxe = '<?xml version="1.0"?>\n<!DOCTYPE domain [\n <!ENTITY x SYSTEM "file:///etc/passwd">\n]>\n<domain><name>&x;</name></domain>';
  assert.throws(
    () => loadDomain(xxe, { file: 'x.xml' }),
    (e: unknown) => e instanceof ConfigError && e.code === 'ERR_XML_FORBIDDEN' && e.message.startsWith('x.xml:2:1: ') && !e.message.includes('root:'),
  );
});

test('a document that is neither a domain nor a device is refused', () => {
  assert.throws(
    () => loadDomain('<network/>', { file: 'n.xml' }),
    (e: unknown) => e instanceof ConfigError && e.code === 'ERR_XML_NOT_DOMAIN',
  );
});

// ---- found by the hostile corpus and the fuzzer ----

test('a UTF-8 byte order mark is skipped; UTF-16 and bytes that are not UTF-8 are refused, not replaced', () => {
  const doc = Buffer.from("<serial type='pty'/>");
  assert.equal(loadDomain(decodeDocument(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), doc]), 'b.xml')).def.serials.length, 1);
  assert.throws(
    () => decodeDocument(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from("<serial type='pty'/>", 'utf16le')]), 'u.xml'),
    /^ConfigError: u\.xml:1: malformed XML: the document is UTF-16/,
  );
  assert.throws(
    () => decodeDocument(Buffer.from("<serial type='pty'>\n<source path='/tmp/\xe9'/></serial>", 'latin1'), 'l.xml'),
    /l\.xml:2:20: malformed XML: input is not proper UTF-8 \(byte 0xE9\)/,
  );
});

test('characters XML does not allow are refused; values are printed escaped and cut short', () => {
  assert.throws(() => loadDomain("<serial type='p\u0000ty'/>", { file: 'n.xml' }), /n\.xml:1:16: malformed XML: character U\+0000 is not allowed in XML/);
  assert.throws(() => loadDomain("<serial type='pty&#27;[2J'/>", { file: 'e.xml' }), /character U\+001B/);
  // &#10; is allowed in a value, but a message is one line.
  assert.throws(
    () => loadDomain("<serial type='a&#10;b'/>", { file: 'l.xml' }),
    (e: unknown) =>
      e instanceof ConfigError && e.message === "l.xml:1: <serial type='a\\x0ab'> (serial0): unknown type presented to host for character device: a\\x0ab",
  );
  assert.throws(
    () => loadDomain(`<serial type='${'A'.repeat(100_000)}'/>`, { file: 'h.xml' }),
    (e: unknown) => e instanceof ConfigError && e.message.length < 1000 && e.message.includes('more characters)') && e.detail.length > 100_000,
  );
});

test('what xmldom would repair is refused, as libxml2 refuses it', () => {
  refuse(domain('    <serial type=pty/>'), `XML error: malformed XML: AttValue: " or ' expected (attribute value pty is not quoted)`);
  refuse(domain('    <serial type/>'), 'XML error: malformed XML: Specification mandates value for attribute type');
  refuse(domain("    <1serial type='pty'/>"), "XML error: malformed XML: invalid element name '1serial'");
});

test('nesting deeper than 256 levels is refused; 256 levels are not', () => {
  const nest = (n: number) => `<metadata>${'<a>'.repeat(n)}${'</a>'.repeat(n)}</metadata>`;
  assert.equal(loadDomain(`<domain>${nest(254)}<devices><serial type='pty'/></devices></domain>`).def.serials.length, 1);
  refuse(`<domain>${nest(255)}</domain>`, 'XML error: malformed XML: elements nested more than 256 deep');
});

test('virtio-serial controllers: a missing index is the lowest unused one, a bad one is refused, any number of ports', () => {
  const channel = "<channel type='pty'><target type='virtio'/></channel>";
  const loaded = loadDomain(domain(`<controller type='virtio-serial' index='0' ports='1'/><controller type='virtio-serial' ports='4'/>${channel}`));
  assert.deepEqual(
    loaded.def.virtioSerialControllers.map((c) => c.index),
    [0, 1],
  );
  assert.deepEqual(loaded.def.channels[0]?.info.address?.attrs, [
    ['controller', '1'],
    ['bus', '0'],
    ['port', '1'],
  ]);
  refuse(domain(`<controller type='virtio-serial' index='first'/>${channel}`), 'internal error: Cannot parse controller index first');
  const many = loadDomain(domain(`<controller type='virtio-serial' index='0' ports='4000000000'/>${channel}`));
  assert.deepEqual(many.def.channels[0]?.info.address?.attrs, [
    ['controller', '0'],
    ['bus', '0'],
    ['port', '1'],
  ]);
});

test('thousands of devices load in linear time', () => {
  const t0 = performance.now();
  const loaded = loadDomain(domain("<parallel type='null'/>".repeat(20_000) + "<channel type='null'><target type='virtio'/></channel>".repeat(5_000)));
  assert.equal(loaded.def.parallels.at(-1)?.target.port, 19_999);
  assert.deepEqual(loaded.def.channels.at(-1)?.info.address?.attrs, [
    ['controller', '166'],
    ['bus', '0'],
    ['port', '20'],
  ]);
  assert.ok(performance.now() - t0 < 5_000, `${Math.round(performance.now() - t0)} ms`);
});

test('a guestfwd address with an octet above 255 is refused', () => {
  refuse(
    domain("<channel type='pipe'><source path='/p'/><target type='guestfwd' address='10.0.2.256' port='1'/></channel>"),
    "XML error: Cannot parse socket address '10.0.2.256'",
  );
});

// ---- every device error names its device ----

test('errors found while parsing name the alias libvirt gives the device, like every later check', () => {
  const cases: Array<[string, string, string]> = [
    [
      "    <serial type='pty'/>\n    <serial type='file'>\n      <source path='/tmp/x' append='maybe'/>\n    </serial>",
      "XML error: Invalid value for attribute 'append' in element 'source': 'maybe'.",
      "dom.xml:7: <serial type='file'> (serial1): Invalid value for attribute 'append' in element 'source': 'maybe'.",
    ],
    [
      "    <parallel type='pty'/>\n    <parallel type='wire'/>",
      'unsupported configuration: unknown type presented to host for character device: wire',
      "dom.xml:6: <parallel type='wire'> (parallel1): unknown type presented to host for character device: wire",
    ],
    [
      "    <channel type='pty'><target type='virtio'/></channel>\n    <channel type='pty'><target type='virtio'/><protocol type='raw'/><protocol type='raw'/></channel>",
      'XML error: only one protocol element is allowed for character device',
      "dom.xml:6: <channel type='pty'> (channel1): only one protocol element is allowed for character device",
    ],
    [
      // A user alias is the device's name in libvirt too.
      "    <serial type='tcp'><source mode='mash' host='h' service='1'/><alias name='ua-modem'/></serial>",
      "XML error: Invalid value for attribute 'mode' in element 'source': 'mash'.",
      "dom.xml:5: <serial type='tcp'> (ua-modem): Invalid value for attribute 'mode' in element 'source': 'mash'.",
    ],
    [
      // The first console of an HVM guest is serial 0 (console compatibility).
      "    <console type='tcp'><source mode='bind' host='h' service='1'><reconnect enabled='maybe'/></source></console>",
      "XML error: Invalid value for attribute 'enabled' in element 'reconnect': 'maybe'.",
      "dom.xml:5: <console type='tcp'> (serial0): Invalid value for attribute 'enabled' in element 'reconnect': 'maybe'.",
    ],
    [
      // A stub console for serial 0 goes first, so the virtio console is console1.
      "    <serial type='pty'/>\n    <console type='pty'><target type='virtio' port='x'/></console>",
      'XML error: Invalid port number: x',
      "dom.xml:6: <console type='pty'> (console1): Invalid port number: x",
    ],
    [
      // chardev's own extensions: its words, the same place and name.
      "    <serial type='pty'/>\n    <serial type='pty'><cd:history xmlns:cd='urn:chardev:1' size='lots'/></serial>",
      "XML error: Invalid value for attribute 'size' in element 'cd:history': 'lots'. Expected an integer from 1 to 67108864",
      "dom.xml:6: <serial type='pty'> (serial1): Invalid value for attribute 'size' in element 'cd:history': 'lots'. Expected an integer from 1 to 67108864",
    ],
    [
      // Post-parse: libvirt's serial port numbering.
      "    <serial type='pty'><target type='isa-serial' port='1'/></serial>\n    <serial type='pty'><target type='isa-serial' port='1'/></serial>",
      "internal error: target port '1' already allocated",
      "dom.xml:6: <serial type='pty'> (serial1): target port '1' already allocated",
    ],
    [
      // virtio-serial addresses.
      "    <controller type='virtio-serial' index='0' ports='2'/>\n    <channel type='pty'><target type='virtio'/><address type='virtio-serial' controller='0' bus='0' port='5'/></channel>",
      'XML error: virtio serial controller 0 does not have port 5',
      "dom.xml:6: <channel type='pty'> (channel0): virtio serial controller 0 does not have port 5",
    ],
  ];
  for (const [devices, libvirtMessage, message] of cases) refuse(domain(devices), libvirtMessage, message);
  // A device element on its own is device 0 of its kind.
  assert.throws(() => loadDomain("<parallel type='file'>\n  <source path='/x' append='1'/>\n</parallel>", { file: 'p.xml' }), {
    message: "p.xml:2: <parallel type='file'> (parallel0): Invalid value for attribute 'append' in element 'source': '1'.",
  });
});

test("the alias a device is named with at parse time is the one libvirt gives it, over all of libvirt 9.0.0's test documents", () => {
  const dir = path.join(LIBVIRT_DATA, 'qemuxml2argvdata');
  let devices = 0;
  for (const name of fs.readdirSync(dir).filter((f) => f.endsWith('.xml'))) {
    let loaded;
    try {
      loaded = loadDomain(fs.readFileSync(path.join(dir, name), 'utf8'), { file: name });
    } catch {
      continue; // libvirt refuses it too (an .err case)
    }
    for (const nd of namedDevices(loaded.def)) {
      const atParse = aliasAtParse(nd.dev);
      if (atParse === undefined) continue; // a stub console libvirt made, not an element
      assert.equal(atParse, nd.alias, `${name}: ${nd.dev.kind} named ${atParse} while parsing, ${nd.alias} after`);
      devices++;
    }
  }
  assert.ok(devices > 100, `checked ${devices} devices`);
});

test('a document with no element: one line with the line where libxml2 gives up, like every other error', () => {
  for (const [text, line] of [
    ['', 1],
    ['\n\n   \n', 4],
    ['<!-- nothing -->\n', 2],
    ["<?xml version='1.0'?>\n\n", 3],
  ] as const) {
    assert.throws(
      () => loadDomain(text, { file: 'e.xml' }),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.code, 'ERR_XML_MALFORMED');
        assert.equal(e.message, `e.xml:${line}: malformed XML: missing root element`);
        return true;
      },
    );
  }
});

// ---- what libxml2 refuses ----

test("an encoding= libxml2 does not know is refused in libxml2's words; the ones it knows are read (as UTF-8)", () => {
  const decl = (enc: string): string => `<?xml version='1.0' encoding='${enc}'?>\n<serial type='pty'/>\n`;
  for (const enc of ['UTF-8', 'utf8', 'ISO-8859-1', 'latin1', 'ISO-8859-15', 'US-ASCII', 'windows-1252', 'KOI8-R', 'Shift_JIS']) {
    assert.equal(loadDomain(decl(enc), { file: 'e.xml' }).def.serials.length, 1, enc);
  }
  const refused: Array<[string, string]> = [
    ['bogus', 'Unsupported encoding bogus'],
    ['UTF-9', 'Unsupported encoding UTF-9'],
    ['', 'Invalid XML encoding name'],
    ['1252', 'Invalid XML encoding name'],
    ['UTF-16', 'Document labelled UTF-16 but has UTF-8 content'],
    ['ucs-4', 'Document labelled UCS-4 but has UTF-8 content'],
  ];
  for (const [enc, words] of refused) {
    assert.throws(
      () => loadDomain(decl(enc), { file: 'e.xml' }),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError, enc);
        assert.equal(e.code, 'ERR_XML_MALFORMED');
        assert.equal(e.message, `e.xml:1:31: malformed XML: ${words}`);
        return true;
      },
    );
  }
});

test("element and attribute names longer than libxml2's 50,000 characters are refused; 50,000 are not", () => {
  const name = (n: number): string => 'n'.repeat(n);
  assert.equal(loadDomain(domain(`    <${name(50_000)} ${name(50_000)}='1'/>\n    <serial type='pty'/>`)).def.serials.length, 1);
  const cases: Array<[string, string]> = [
    [`    <${name(50_001)}/>`, 'an element name of 50001 characters'],
    [`    <x:${name(50_001)} xmlns:x='urn:x'/>`, 'an element name of 50003 characters'],
    [`    <serial type='pty' ${name(50_001)}='1'/>`, 'an attribute name of 50001 characters'],
  ];
  for (const [devices, what] of cases) {
    refuse(domain(devices), `XML error: malformed XML: Name too long (${what}; libxml2 allows 50000)`, /^dom\.xml:5:5: malformed XML: Name too long/);
  }
});
