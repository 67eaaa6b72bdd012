/**
 * Properties of the XML model, over generated device definitions: serial,
 * parallel, console and channel elements with every host type and plausible
 * attribute values, alone or in a domain.
 *
 *  - format → parse → format is stable (inactive and live XML);
 *  - the generated definitions are valid (nmdm too: libvirt accepts it; qemu-args refuses it);
 *  - loadDomain throws nothing but ConfigError, whatever it is given.
 *
 * The telnet decoder's chunking property lives in test/protocols/telnet.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadDomain } from '../../src/config/domain.ts';
import { formatDomain } from '../../src/config/format.ts';
import { buildQemuArgs } from '../../src/qemu/command.ts';
import { CHR_TYPES, type ChrType } from '../../src/config/types.ts';
import { ConfigError } from '../../src/errors.ts';

// ---- values -------------------------------------------------------------------

const pathChars = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_.'.split(''), 'ä', '串', ' ', '&', "'", '<', '"');
const segment = fc.string({ unit: pathChars, minLength: 1, maxLength: 10 }).filter((s) => s !== '.' && s !== '..');
const absPath = fc.array(segment, { minLength: 1, maxLength: 4 }).map((parts) => `/${parts.join('/')}`);
const host = fc.oneof(fc.constantFrom('127.0.0.1', '0.0.0.0', '::1', '::', 'localhost', 'console.example.org'), fc.ipV4(), fc.domain());
const service = fc.oneof(fc.integer({ min: 0, max: 65535 }).map(String), fc.constantFrom('telnet', 'ssh', 'http'));
const yesNo = fc.constantFrom('yes', 'no');
const onOff = fc.constantFrom('on', 'off');
const channelName = fc.stringMatching(/^[A-Za-z0-9_.-]{1,24}$/);
const virtioName = fc.oneof(fc.constantFrom('org.qemu.guest_agent.0', 'com.redhat.spice.0', 'org.libguestfs.channel.0'), channelName);

/** XML-escape for attribute values written with single quotes. */
const q = (v: string): string => v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');
const attrs = (pairs: ReadonlyArray<readonly [string, string | undefined]>): string =>
  pairs
    .filter((p): p is readonly [string, string] => p[1] !== undefined)
    .map(([k, v]) => ` ${k}='${q(v)}'`)
    .join('');
const optional = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(arb, { nil: undefined });

// ---- sources --------------------------------------------------------------------

type Kind = 'serial' | 'parallel' | 'console' | 'channel';

/** A host type's <source>/<protocol>/<log> children, valid for that type (connect mode may reconnect). */
function sourceXml(type: ChrType, generatedPath: boolean): fc.Arbitrary<string> {
  const reconnect = fc.oneof(
    fc.constant("<reconnect enabled='no'/>"),
    fc.integer({ min: 1, max: 3600 }).map((t) => `<reconnect enabled='yes' timeout='${t}'/>`),
  );
  const seclabel = fc
    .record({
      model: fc.constantFrom('dac', 'selinux'),
      relabel: optional(yesNo),
      label: optional(fc.constantFrom('system_u:object_r:virt_chardev_t:s0', '107:107')),
    })
    .map(
      (s) =>
        `<seclabel${attrs([
          ['model', s.model],
          ['relabel', s.relabel],
        ])}>${s.label === undefined ? '' : `<label>${s.label}</label>`}</seclabel>`,
    );
  switch (type) {
    case 'null':
    case 'vc':
    case 'stdio':
    case 'spicevmc':
    case 'pty':
      return fc.constant('');
    case 'dev':
    case 'pipe':
      return fc.tuple(absPath, optional(seclabel)).map(([p, s]) => (s === undefined ? `<source path='${q(p)}'/>` : `<source path='${q(p)}'>${s}</source>`));
    case 'file':
      return fc.tuple(absPath, optional(onOff)).map(
        ([p, a]) =>
          `<source${attrs([
            ['path', p],
            ['append', a],
          ])}/>`,
      );
    case 'udp':
      return fc
        .record({ connectHost: optional(host), connectService: service, bind: optional(fc.tuple(optional(host), optional(service))) })
        .map(({ connectHost, connectService, bind }) =>
          [
            bind === undefined || (bind[0] === undefined && bind[1] === undefined)
              ? ''
              : `<source${attrs([
                  ['mode', 'bind'],
                  ['host', bind[0]],
                  ['service', bind[1]],
                ])}/>`,
            `<source${attrs([
              ['mode', 'connect'],
              ['host', connectHost],
              ['service', connectService],
            ])}/>`,
          ].join(''),
        );
    case 'tcp':
      return fc
        .record({
          mode: fc.constantFrom('connect', 'bind'),
          host,
          service,
          tls: optional(yesNo),
          reconnect: optional(reconnect),
          protocol: optional(fc.constantFrom('raw', 'telnet', 'telnets', 'tls')),
        })
        .map((s) => {
          const inner = s.mode === 'connect' && s.reconnect !== undefined ? s.reconnect : '';
          const open = `<source${attrs([
            ['mode', s.mode],
            ['host', s.host],
            ['service', s.service],
            ['tls', s.tls],
          ])}`;
          return `${inner === '' ? `${open}/>` : `${open}>${inner}</source>`}${s.protocol === undefined ? '' : `<protocol type='${s.protocol}'/>`}`;
        });
    case 'unix': {
      // A virtio channel may leave the path to libvirt (a generated server socket).
      const path = generatedPath ? optional(absPath) : absPath.map((p): string | undefined => p);
      return fc.record({ mode: optional(fc.constantFrom('connect', 'bind')), path, reconnect: optional(reconnect) }).map((s) => {
        if (s.path === undefined) return '';
        const inner = s.mode !== 'bind' && s.reconnect !== undefined ? s.reconnect : '';
        const open = `<source${attrs([
          ['mode', s.mode],
          ['path', s.path],
        ])}`;
        return inner === '' ? `${open}/>` : `${open}>${inner}</source>`;
      });
    }
    case 'spiceport':
    case 'dbus':
      return channelName.map((c) => `<source channel='${c}'/>`);
    case 'nmdm':
      return fc.tuple(absPath, absPath).map(([m, s]) => `<source master='${q(m)}' slave='${q(s)}'/>`);
    case 'qemu-vdagent':
      return fc
        .record({ copypaste: optional(yesNo), mouse: optional(fc.constantFrom('client', 'server')) })
        .map(({ copypaste, mouse }) =>
          copypaste === undefined && mouse === undefined
            ? ''
            : `<source>${copypaste === undefined ? '' : `<clipboard copypaste='${copypaste}'/>`}${mouse === undefined ? '' : `<mouse mode='${mouse}'/>`}</source>`,
        );
  }
}

const logXml = optional(
  fc.tuple(absPath, optional(onOff)).map(
    ([f, a]) =>
      `<log${attrs([
        ['file', f],
        ['append', a],
      ])}/>`,
  ),
).map((l) => l ?? '');

/** chardev's own extension elements, each at most once. */
const extensionsXml = fc
  .record({
    history: optional(fc.integer({ min: 1, max: 64 * 1024 * 1024 })),
    clients: optional(
      fc.record({
        max: fc.integer({ min: 1, max: 64 }),
        queue: optional(fc.integer({ min: 1, max: 64 * 1024 * 1024 })),
        slow: optional(fc.constantFrom('drop', 'disconnect')),
      }),
    ),
    tls: optional(fc.record({ dir: optional(absPath), verify: optional(yesNo) })),
    web: optional(
      fc.record({ listen: optional(fc.constantFrom('127.0.0.1', '::1', '0.0.0.0', 'localhost')), port: optional(fc.integer({ min: 0, max: 65535 })) }),
    ),
  })
  .map((e) =>
    [
      e.history === undefined ? '' : `<cd:history size='${e.history}'/>`,
      e.clients === undefined
        ? ''
        : `<cd:clients${attrs([
            ['max', String(e.clients.max)],
            ['queue', e.clients.queue?.toString()],
            ['slow', e.clients.slow],
          ])}/>`,
      e.tls === undefined
        ? ''
        : `<cd:tls${attrs([
            ['dir', e.tls.dir],
            ['verify', e.tls.verify],
          ])}/>`,
      e.web === undefined
        ? ''
        : `<cd:web${attrs([
            ['listen', e.web.listen],
            ['port', e.web.port?.toString()],
          ])}/>`,
    ].join(''),
  );

// ---- devices ----------------------------------------------------------------------

/** Host types each kind may use on QEMU (spicevmc is for virtio channels only). */
const TYPES_FOR: Record<Kind, readonly ChrType[]> = {
  serial: CHR_TYPES.filter((t) => t !== 'spicevmc'),
  parallel: CHR_TYPES.filter((t) => t !== 'spicevmc'),
  console: CHR_TYPES.filter((t) => t !== 'spicevmc'),
  channel: CHR_TYPES,
};

function targetXml(kind: Kind, type: ChrType, index: number, o: DeviceOptions): fc.Arbitrary<string> {
  switch (kind) {
    case 'serial':
      return o.explicitPorts
        ? fc.constantFrom(`<target type='isa-serial' port='${index}'/>`, `<target type='isa-serial' port='${index}'><model name='isa-serial'/></target>`)
        : fc.constantFrom('', "<target type='pci-serial'><model name='pci-serial'/></target>", "<target type='usb-serial'/>", "<target type='isa-serial'/>");
    case 'parallel':
      return fc.constantFrom('', `<target port='${index}'/>`);
    case 'console':
      return o.firstConsole ? fc.constantFrom('', "<target type='serial'/>", "<target type='serial' port='0'/>") : fc.constant("<target type='virtio'/>");
    case 'channel':
      if (type === 'spicevmc') return fc.constant("<target type='virtio' name='com.redhat.spice.0'/>");
      return fc.oneof(
        optional(virtioName).map((n) => `<target type='virtio'${attrs([['name', n]])}/>`),
        fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([a, p]) => `<target type='guestfwd' address='${a}' port='${p}'/>`),
      );
  }
}

interface DeviceOptions {
  /** The first console, which may be serial-typed (console compatibility). */
  firstConsole?: boolean;
  /** Serials with explicit ISA ports (all or none of a domain's: libvirt numbers the rest past the highest). */
  explicitPorts?: boolean;
  types?: readonly ChrType[];
}

function deviceXml(kind: Kind, index: number, o: DeviceOptions = {}): fc.Arbitrary<string> {
  return fc.constantFrom(...(o.types ?? TYPES_FOR[kind])).chain((type) => {
    const typeAttr = type === 'pty' ? fc.constantFrom(" type='pty'", '') : fc.constant(` type='${type}'`);
    return targetXml(kind, type, index, o).chain((target) =>
      fc
        .tuple(
          typeAttr,
          sourceXml(type, kind === 'channel' && target.startsWith("<target type='virtio'")),
          logXml,
          optional(fc.constant(`<alias name='ua-${kind}${index}'/>`)),
          extensionsXml,
          fc.boolean(),
        )
        .map(([t, source, log, alias, ext, localNs]) => {
          // The extensions' namespace declared on the root, or on the device element itself.
          const ns = localNs ? " xmlns:ch='urn:chardev:1'" : '';
          // A TLS client always verifies the server: verify='no' is for servers (a config error
          // otherwise). A console's extensions apply to serial 0 when it is serial 0 seen again.
          const server = type === 'tcp' && /mode='bind'/.test(source) && kind !== 'console';
          const checked = server ? ext : ext.replace(/(<cd:tls[^>]*) verify='no'/, '$1');
          const extXml = localNs ? checked.replace(/<cd:/g, '<ch:') : checked;
          return `<${kind}${t}${ns}>${source}${log}${target}${alias ?? ''}${extXml}</${kind}>`;
        }),
    );
  });
}

/** A domain with up to 4 serials, 3 parallels, 3 consoles (the first maybe serial-typed) and 4 channels. */
const domainXml = fc
  .record({
    serials: fc.integer({ min: 0, max: 4 }),
    parallels: fc.integer({ min: 0, max: 3 }),
    consoles: fc.integer({ min: 0, max: 3 }),
    channels: fc.integer({ min: 0, max: 4 }),
    machine: fc.constantFrom('pc', 'q35'),
    explicitPorts: fc.boolean(),
    indent: fc.constantFrom('', '\n    '),
  })
  .chain((n) =>
    fc
      .tuple(
        fc.tuple(...Array.from({ length: n.serials }, (_, i) => deviceXml('serial', i, { explicitPorts: n.explicitPorts }))),
        fc.tuple(...Array.from({ length: n.parallels }, (_, i) => deviceXml('parallel', i))),
        fc.tuple(...Array.from({ length: n.consoles }, (_, i) => deviceXml('console', i, { firstConsole: i === 0 }))),
        fc.tuple(...Array.from({ length: n.channels }, (_, i) => deviceXml('channel', i))),
      )
      .map(
        ([serials, parallels, consoles, channels]) =>
          `<domain type='kvm' xmlns:cd='urn:chardev:1'>\n  <name>prop</name>\n  <os>\n    <type arch='x86_64' machine='${n.machine}'>hvm</type>\n  </os>\n  <devices>${[...serials, ...parallels, ...consoles, ...channels].map((d) => n.indent + d).join('')}\n    <graphics type='spice'/>\n  </devices>\n</domain>\n`,
      ),
  );

/** A lone device element (no graphics, so no spice types). */
const standaloneXml = fc
  .constantFrom<Kind>('serial', 'parallel', 'console', 'channel')
  .chain((kind) =>
    deviceXml(kind, 0, { firstConsole: true, types: TYPES_FOR[kind].filter((t) => t !== 'spicevmc' && t !== 'spiceport') }).map((xml) =>
      xml.replace(`<${kind}`, `<${kind} xmlns:cd='urn:chardev:1'`),
    ),
  );

function roundTrip(xml: string, live: boolean): void {
  const first = formatDomain(loadDomain(xml, { live }), { live });
  const second = formatDomain(loadDomain(first, { live }), { live });
  assert.equal(second, first);
}

describe('generated device definitions', () => {
  it('domains: format → parse → format is stable (inactive XML)', () => {
    fc.assert(
      fc.property(domainXml, (xml) => roundTrip(xml, false)),
      { numRuns: 300 },
    );
  });

  it('domains: format → parse → format is stable (live XML)', () => {
    fc.assert(
      fc.property(domainXml, (xml) => roundTrip(xml, true)),
      { numRuns: 150 },
    );
  });

  it('lone device elements: format → parse → format is stable', () => {
    fc.assert(
      fc.property(standaloneXml, (xml) => roundTrip(xml, false)),
      { numRuns: 300 },
    );
  });

  it('formatting keeps what the definition said: the host type of every device', () => {
    fc.assert(
      fc.property(domainXml, (xml) => {
        const loaded = loadDomain(xml);
        const again = loadDomain(formatDomain(loaded));
        const types = (d: typeof loaded.def) => [...d.serials, ...d.parallels, ...d.channels].map((x) => `${x.kind}:${x.source.type}`);
        assert.deepEqual(types(again.def), types(loaded.def));
      }),
      { numRuns: 100 },
    );
  });

  it('nmdm, which libvirt 9.0.0 accepts and QEMU has no backend for: valid and formatted; qemu-args refuses it with one ConfigError', () => {
    fc.assert(
      fc.property(fc.constantFrom<Kind>('serial', 'parallel', 'console', 'channel'), (kind) => {
        const xml = fc.sample(deviceXml(kind, 0, { types: ['nmdm'] }), 1)[0] ?? '';
        const loaded = loadDomain(xml.replace(`<${kind}`, `<${kind} xmlns:cd='urn:chardev:1'`), { file: 'n.xml' });
        assert.match(formatDomain(loaded), /type='nmdm'/);
        assert.throws(
          () => buildQemuArgs(loaded),
          (e: unknown) =>
            e instanceof ConfigError &&
            e.code === 'ERR_CONFIG_UNSUPPORTED' &&
            /^n\.xml:1: <\w+ type='nmdm'> \([\w-]+0\): unsupported chardev 'nmdm'$/.test(e.message),
        );
      }),
      { numRuns: 10 },
    );
  });
});

// ---- garbage ------------------------------------------------------------------------

/** Only a ConfigError may escape; returns whether the document was accepted. */
function loadsOrRefuses(text: string): boolean {
  try {
    loadDomain(text, { file: 'garbage.xml' });
    return true;
  } catch (e) {
    if (e instanceof ConfigError) return false;
    throw e;
  }
}

const FRAGMENTS = [
  '<',
  '>',
  '/>',
  '</',
  '<domain>',
  '</domain>',
  '<devices>',
  '</devices>',
  "<serial type='",
  "<channel type='",
  '<console',
  '<parallel',
  "'",
  '"',
  '=',
  ' ',
  '\n',
  '&',
  '&amp;',
  '&#10;',
  '&#0;',
  '&#x110000;',
  '&lol;',
  '<!--',
  '-->',
  '<![CDATA[',
  ']]>',
  '<?xml',
  '?>',
  '<!DOCTYPE',
  '<!ENTITY',
  'SYSTEM',
  '"file:///etc/passwd"',
  'tcp',
  'unix',
  'pty',
  'udp',
  'file',
  'spicevmc',
  "<source mode='",
  "host='h' ",
  "service='1' ",
  "path='/p' ",
  "<target type='",
  "port='",
  "'virtio'",
  "'guestfwd'",
  "<reconnect enabled='yes' timeout='",
  '0',
  '-1',
  '4294967296',
  "<protocol type='",
  'telnet',
  "<address type='virtio-serial' ",
  "controller='",
  "<cd:history xmlns:cd='urn:chardev:1' size='",
  "<controller type='virtio-serial' index='",
  "ports='",
  '\u0000',
  '\ufeff',
  '\ud800',
  '\u202e',
  'é',
  '串',
];

const tokenSoup = fc.array(fc.constantFrom(...FRAGMENTS), { maxLength: 60 }).map((parts) => parts.join(''));

/** A valid document with random edits: cut, insert, duplicate, replace. */
const mutatedDomain = fc
  .tuple(
    domainXml,
    fc.array(fc.tuple(fc.nat(), fc.nat({ max: 40 }), fc.constantFrom('cut', 'insert', 'dup', 'replace'), fc.constantFrom(...FRAGMENTS)), {
      minLength: 1,
      maxLength: 6,
    }),
  )
  .map(([xml, edits]) => {
    let s = xml;
    for (const [pos, len, op, frag] of edits) {
      const at = pos % (s.length + 1);
      if (op === 'cut') s = s.slice(0, at) + s.slice(at + len);
      else if (op === 'insert') s = s.slice(0, at) + frag + s.slice(at);
      else if (op === 'dup') s = s.slice(0, at + len) + s.slice(at, at + len) + s.slice(at + len);
      else s = s.slice(0, at) + frag + s.slice(at + frag.length);
    }
    return s;
  });

describe('loadDomain on garbage throws nothing but ConfigError', () => {
  it('arbitrary strings (all of Unicode, lone surrogates included)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => void loadsOrRefuses(s)),
      { numRuns: 1000 },
    );
  });

  it('XML token soup', () => {
    fc.assert(
      fc.property(tokenSoup, (s) => void loadsOrRefuses(s)),
      { numRuns: 1000 },
    );
  });

  it('generated valid domains with random edits', () => {
    let accepted = 0;
    fc.assert(
      fc.property(mutatedDomain, (s) => {
        if (loadsOrRefuses(s)) accepted++;
      }),
      { numRuns: 500 },
    );
    // Some edits keep a document valid (inside a value, say); most break it.
    assert.ok(accepted < 500, 'every edited document was accepted: the edits do nothing');
  });
});
