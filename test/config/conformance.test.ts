/**
 * libvirt 9.0.0's own test data, read in place from ../shared: for each case
 * its expected -chardev (and frontend) arguments, the chardev elements and
 * virtio-serial controllers of its expected output XML, or its expected error;
 * and every formatted document must validate against libvirt's RelaxNG schema
 * (Debian's xmllint). Only what the data holds is compared: where libvirt
 * passes a descriptor for a path it generates, the descriptor is the
 * placeholder, and the generated path has its own test against strings
 * written by hand from libvirt's rule. A case with nothing to compare is
 * counted apart ("parsed only") and checked by hand below.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { DOMParser } from '@xmldom/xmldom';
import { loadDomain, type LoadedDomain, type LoadOptions } from '../../src/config/domain.ts';
import { formatDomain } from '../../src/config/format.ts';
import { hostDevices } from '../../src/config/names.ts';
import { buildQemuArgs, domainShortName, generatedChannelPath, type ArgSyntax } from '../../src/qemu/command.ts';
import { ConfigError } from '../../src/errors.ts';
import { childElements, serializeNode, NODE, type XmlNode } from '../../src/config/xml.ts';
import { LIBVIRT_DATA } from '../helpers/paths.ts';

const ARGV = join(LIBVIRT_DATA, 'qemuxml2argvdata');
const OUT = join(LIBVIRT_DATA, 'qemuxml2xmloutdata');
const SCHEMA = join(LIBVIRT_DATA, 'schema', 'domain.rng');

/** qemu.conf settings libvirt's qemuxml2argvtest.c had in force for each case. */
function driverFor(name: string): LoadOptions {
  const base: LoadOptions = { channelTargetDir: '/tmp/channel', tlsCertDir: '/etc/pki/libvirt-chardev', tlsVerify: false };
  switch (name) {
    case 'serial-tcp-tlsx509-chardev':
    case 'serial-tcp-tlsx509-chardev-notls':
      return { ...base, tlsDefault: true };
    case 'serial-tcp-tlsx509-chardev-verify':
      return { ...base, tlsDefault: true, tlsVerify: true };
    case 'serial-tcp-tlsx509-secret-chardev':
      return { ...base, tlsDefault: true, tlsSecretUuid: '6fd3f62d-9fe7-4a4e-a869-7acd6376d8ea' };
    default:
      return base;
  }
}

/** Chardev ids of devices outside <serial>/<parallel>/<console>/<channel> (monitor, redirdev, rng, smartcard). */
const FOREIGN_CHARDEV = /id=char(monitor|redir|rng|smartcard)/;
const FRONTEND_DRIVERS =
  /^'?\{?"?(driver"?:"?)?(isa-serial|isa-parallel|pci-serial|usb-serial|isa-debugcon|virtserialport|virtconsole|spapr-vty|sclpconsole|sclplmconsole)\b/;

/**
 * The classes of line the comparison leaves out, besides everything that is not a character
 * device at all (machine, memory, disks, …). Counted, so the README's list stays true.
 */
const DROPPED: ReadonlyArray<readonly [string, (opt: string, value: string) => boolean]> = [
  ['-chardev of other device classes (monitor, redirdev, rng, smartcard)', (opt, v) => opt === '-chardev' && FOREIGN_CHARDEV.test(v)],
  [
    "-device virtio-serial controllers (PCI addresses from libvirt's PCI allocator)",
    (opt, v) => opt === '-device' && /virtio-serial/.test(v) && !FRONTEND_DRIVERS.test(v),
  ],
  ["-object secret (libvirt's master key and TLS key passwords, encrypted per VM)", (opt, v) => opt === '-object' && /secret/.test(v)],
  ["-add-fd (descriptors libvirt opens; the chardev's /dev/fdset path is mapped back to the file)", (opt) => opt === '-add-fd'],
];
const droppedCounts = new Map<string, number>();

interface ArgLine {
  opt: string;
  value: string;
}

/** Parse an .args file into option/value pairs (values unquoted). */
function readArgs(file: string): ArgLine[] {
  const lines = readFileSync(file, 'utf8').split(' \\\n');
  const out: ArgLine[] = [];
  for (const raw of lines) {
    const line = raw.trim();
    const m = /^(-[\w-]+) (.*)$/.exec(line);
    if (!m) continue;
    let value = m[2]!;
    if (value.startsWith("'") && value.endsWith("'")) value = value.slice(1, -1);
    out.push({ opt: m[1]!, value });
  }
  return out;
}

/**
 * The chardev-related lines of libvirt's expected command line, with its
 * descriptor forms mapped back to the paths chardev prints.
 */
function expectedChardevArgs(file: string, loaded: LoadedDomain, placeholders: Set<string>): string[] {
  const byId = new Map(hostDevices(loaded.def).map((nd) => [`char${nd.alias}`, nd]));
  const out: string[] = [];
  for (const { opt, value } of readArgs(file)) {
    const dropped = DROPPED.find(([, matches]) => matches(opt, value));
    if (dropped) droppedCounts.set(dropped[0], (droppedCounts.get(dropped[0]) ?? 0) + 1);
    if (opt === '-chardev') {
      if (FOREIGN_CHARDEV.test(value)) continue;
      const id = /id=([^,]+)/.exec(value)?.[1] ?? '';
      const nd = byId.get(id);
      assert.ok(nd, `${file}: no device for ${id}`);
      const src = nd.dev.source;
      let v = value;
      if (src.type === 'file') {
        v = v.replace(/path=\/dev\/fdset\/\d+,append=on/, `path=${src.path}${src.append ? `,append=${src.append}` : ''}`);
      }
      if (src.log) {
        v = v.replace(/logfile=\/dev\/fdset\/\d+,logappend=on/, `logfile=${src.log.file}${src.log.append ? `,logappend=${src.log.append}` : ''}`);
      }
      if (src.type === 'unix' && /,fd=1729/.test(v)) {
        // The path in the XML is what the data holds; a path libvirt generates is only a
        // descriptor here, so the descriptor stays as the placeholder (see placeholderArgs).
        if (src.path !== undefined) v = v.replace(/,fd=1729/, `,path=${src.path}`);
        else placeholders.add(id);
      }
      out.push(`${opt} ${v}`);
    } else if (opt === '-device' && FRONTEND_DRIVERS.test(value)) {
      out.push(`${opt} ${value}`);
    } else if (opt === '-object' && value.includes('tls-creds-x509')) {
      out.push(`${opt} ${value}`);
    } else if (opt === '-netdev' && value.includes('guestfwd')) {
      out.push(`${opt} ${value}`);
    } else if (opt === '-serial' && value.startsWith('chardev:')) {
      out.push(`${opt} ${value}`);
    }
  }
  return out;
}

/** chardev's arguments with the path of each listed chardev id replaced by libvirt's descriptor placeholder. */
function placeholderArgs(args: string[], placeholders: ReadonlySet<string>): string[] {
  return args.map((a) => {
    const id = /^-chardev [^,]*,id=([^,]+)/.exec(a)?.[1];
    return id !== undefined && placeholders.has(id) ? a.replace(/,path=(?:[^,]|,,)*/, ',fd=1729') : a;
  });
}

/**
 * Chardev elements and virtio-serial controllers of a document, serialised without layout
 * whitespace. `unaddressed`: controller indexes the input gave no address; libvirt's PCI
 * allocator gives them one, which chardev does not model, so it is not compared.
 */
function chardevElements(xml: string, unaddressed: ReadonlySet<string> = new Set()): string[] {
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  const devices = doc.documentElement ? childElements(doc.documentElement, 'devices')[0] : undefined;
  if (!devices) return [];
  const strip = (n: XmlNode) => {
    for (let c = n.firstChild; c; ) {
      const next = c.nextSibling;
      if (c.nodeType === NODE.TEXT && /^\s*$/.test(c.nodeValue ?? '')) n.removeChild(c);
      else strip(c);
      c = next;
    }
  };
  return childElements(devices)
    .filter(
      (e) =>
        ['serial', 'parallel', 'console', 'channel'].includes(e.localName ?? '') ||
        (e.localName === 'controller' && e.getAttribute('type') === 'virtio-serial'),
    )
    .map((e) => {
      strip(e);
      if (e.localName === 'controller' && unaddressed.has(e.getAttribute('index') ?? '')) {
        for (const a of childElements(e, 'address')) if (a.getAttribute('type') === 'pci') e.removeChild(a);
      }
      return serializeNode(e);
    });
}

/** Indexes of the input's virtio-serial controllers that have no address, and of those libvirt adds. */
function unaddressedControllers(input: string, loaded: LoadedDomain): Set<string> {
  const doc = new DOMParser().parseFromString(input, 'text/xml');
  const devices = doc.documentElement ? childElements(doc.documentElement, 'devices')[0] : undefined;
  const addressed = new Set(
    (devices ? childElements(devices, 'controller') : [])
      .filter((c) => c.getAttribute('type') === 'virtio-serial' && childElements(c, 'address').length > 0)
      .map((c) => c.getAttribute('index') ?? ''),
  );
  return new Set(loaded.def.virtioSerialControllers.map((c) => String(c.index)).filter((i) => !addressed.has(i)));
}

interface CaseResult {
  name: string;
  checks: string[];
  skipped: string[];
  formatted?: string;
}

const cases = readdirSync(ARGV)
  .filter((f) => f.endsWith('.xml'))
  .map((f) => f.slice(0, -4))
  .sort();

const results: CaseResult[] = [];
const failures: string[] = [];

for (const name of cases) {
  test(`libvirt 9.0.0 case ${name}`, () => {
    const result: CaseResult = { name, checks: [], skipped: [] };
    results.push(result);
    try {
      runCase(name, result);
    } catch (e) {
      failures.push(name);
      throw e;
    }
  });
}

function runCase(name: string, result: CaseResult): void {
  const xmlFile = join(ARGV, `${name}.xml`);
  const text = readFileSync(xmlFile, 'utf8');
  const errFile = join(ARGV, `${name}.err`);
  if (existsSync(errFile)) {
    const expected = readFileSync(errFile, 'utf8').trim();
    assert.throws(
      () => loadDomain(text, { file: `${name}.xml`, ...driverFor(name) }),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
        assert.equal(e.libvirtMessage, expected);
        assert.match(e.message, new RegExp(`^${name}\\.xml:\\d+: <\\w+( type='[\\w-]+')?>( \\(\\w+\\))?: `));
        return true;
      },
    );
    result.checks.push('error');
    if (existsSync(join(ARGV, `${name}.x86_64-latest.err`))) {
      result.skipped.push(`${name}.x86_64-latest.err: QEMU binary capabilities for aarch64, not a host interface`);
    }
    return;
  }
  const loaded = loadDomain(text, { file: `${name}.xml`, ...driverFor(name) });
  for (const [suffix, syntax] of [
    ['.args', 'keyval'],
    ['.x86_64-latest.args', 'json'],
  ] as Array<[string, ArgSyntax]>) {
    const argsFile = join(ARGV, name + suffix);
    if (!existsSync(argsFile)) continue;
    const placeholders = new Set<string>();
    const expected = expectedChardevArgs(argsFile, loaded, placeholders);
    const actual = placeholderArgs(
      buildQemuArgs(loaded, { syntax }).map(([opt, v]) => `${opt} ${v}`),
      placeholders,
    );
    assert.deepEqual(actual, expected, `${name}${suffix}`);
    result.checks.push(suffix.slice(1));
    if (readFileSync(argsFile, 'utf8').includes('-object secret,id=charserial')) {
      result.skipped.push(`${name}${suffix}: the TLS key's -object secret is encrypted with libvirt's per-VM master key`);
    }
  }
  for (const outName of [`${name}.xml`, `${name}.x86_64-latest.xml`]) {
    const outFile = join(OUT, outName);
    if (!existsSync(outFile)) continue;
    const unaddressed = unaddressedControllers(text, loaded);
    const expected = chardevElements(readFileSync(outFile, 'utf8'), unaddressed);
    assert.deepEqual(chardevElements(formatDomain(loaded), unaddressed), expected, outName);
    // libvirt's qemuxml2xmltest also parses without the inactive flag and expects the same.
    const active = loadDomain(text, { file: `${name}.xml`, live: true, ...driverFor(name) });
    assert.deepEqual(chardevElements(formatDomain(active), unaddressed), expected, `${outName} (active parse)`);
    result.checks.push('xml');
  }
  result.formatted = formatDomain(loaded);
}

test('formatted output of every passing case validates against libvirt 9.0.0 domain.rng (xmllint)', (t) => {
  const ok = results.filter((r) => r.formatted !== undefined && !failures.includes(r.name));
  assert.ok(ok.length > 0, 'no formatted cases to validate');
  const dir = mkdtempSync(join(tmpdir(), 'chardev-rng-'));
  try {
    const files = ok.map((r) => {
      const f = join(dir, `${r.name}.xml`);
      writeFileSync(f, r.formatted ?? '');
      return f;
    });
    let output: string;
    try {
      output = execFileSync('xmllint', ['--noout', '--relaxng', SCHEMA, ...files], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stderr?: string; code?: string };
      if (err.code === 'ENOENT') assert.fail('xmllint is missing: install Debian package libxml2-utils (.ci/run does)');
      assert.fail(`schema validation failed:\n${err.stderr ?? String(e)}`);
    }
    t.diagnostic(`${files.length} formatted documents validate against domain.rng`);
    // The check can fail: a chardev element libvirt's schema does not allow is refused.
    const bogus = join(dir, 'bogus.xml');
    const withSerial = ok.find((r) => r.formatted?.includes('<serial type='));
    assert.ok(withSerial, 'no formatted case with a <serial>');
    writeFileSync(bogus, (withSerial.formatted ?? '').replace(/<serial type='(\w+)'>/, "<serial type='$1' bogus='1'>"));
    assert.throws(() => execFileSync('xmllint', ['--noout', '--relaxng', SCHEMA, bogus], { stdio: 'pipe' }));
    void output;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- what the data cannot check, checked against libvirt's rules written out by hand ----

test("generated channel socket paths follow libvirt's rule: channel dir, domain-ID-NAME (20 characters, ID -1 when not running), target name or vioser-CC-BB-PP.sock", () => {
  const xml = (name: string): string =>
    `<domain type='kvm'><name>${name}</name><os><type arch='x86_64'>hvm</type></os><devices>` +
    `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>` +
    `<channel type='unix'><target type='virtio'/></channel>` +
    `</devices></domain>`;
  const paths = (name: string): string[] => {
    const loaded = loadDomain(xml(name), { channelTargetDir: '/tmp/channel' });
    return loaded.def.channels.map((c) => generatedChannelPath(loaded.def, c, loaded.driver));
  };
  // The directory the .args of the same test data use for the same domain (HOME=/tmp/lib/domain--1-QEMUGuest1).
  assert.deepEqual(paths('QEMUGuest1'), ['/tmp/channel/domain--1-QEMUGuest1/org.qemu.guest_agent.0', '/tmp/channel/domain--1-QEMUGuest1/vioser-00-00-02.sock']);
  assert.deepEqual(paths('a-domain-name-of-thirty-chars'), [
    '/tmp/channel/domain--1-a-domain-name-of-thi/org.qemu.guest_agent.0',
    '/tmp/channel/domain--1-a-domain-name-of-thi/vioser-00-00-02.sock',
  ]);
  assert.equal(paths('ünïcödé-gäst-mit-langem-namen')[0], '/tmp/channel/domain--1-ünïcödé-gäst-mit-lan/org.qemu.guest_agent.0');
  assert.equal(domainShortName('QEMUGuest1', 7), '7-QEMUGuest1');
  // qemu-args prints them where libvirt passes a descriptor.
  const loaded = loadDomain(xml('QEMUGuest1'), { channelTargetDir: '/tmp/channel' });
  assert.match(
    buildQemuArgs(loaded, { syntax: 'keyval' })
      .map(([o, v]) => `${o} ${v}`)
      .join('\n'),
    /-chardev socket,id=charchannel0,path=\/tmp\/channel\/domain--1-QEMUGuest1\/org\.qemu\.guest_agent\.0,server=on,wait=off/,
  );
});

test('channel-unix-source-path (no expected output in the data): a path libvirt would generate is dropped, any other kept', () => {
  const text = readFileSync(join(ARGV, 'channel-unix-source-path.xml'), 'utf8');
  const loaded = loadDomain(text, { file: 'channel-unix-source-path.xml', ...driverFor('channel-unix-source-path') });
  // libvirt's qemuDomainChrDefDropDefaultPath regex, ^DIR/([^/]+\.)|(domain-[^/]+/)NAME$, by hand:
  // DIR/QEMUGuest1.NAME (old layout), DIR/domain-QEMUGuest1/NAME and DIR/domain-1-QEMUGuest1/NAME
  // are libvirt's own; DIR/QEMUGuest1/NAME is not.
  assert.deepEqual(chardevElements(formatDomain(loaded)), [
    // The controller libvirt adds for them (it also gives it a PCI address; chardev does not).
    "<controller type='virtio-serial' index='0'/>",
    "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/><address type='virtio-serial' controller='0' bus='0' port='1'/></channel>",
    "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.1'/><address type='virtio-serial' controller='0' bus='0' port='2'/></channel>",
    "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.2'/><address type='virtio-serial' controller='0' bus='0' port='3'/></channel>",
    "<channel type='unix'><source mode='bind' path='/tmp/channel/QEMUGuest1/org.qemu.guest_agent.3'/><target type='virtio' name='org.qemu.guest_agent.3'/><address type='virtio-serial' controller='0' bus='0' port='4'/></channel>",
  ]);
});

test('conformance summary', (t) => {
  const passed = results.filter((r) => !failures.includes(r.name));
  const compared = passed.filter((r) => r.checks.length > 0).length;
  const parsedOnly = passed.filter((r) => r.checks.length === 0).map((r) => r.name);
  const line = `conformance: ${compared}/${cases.length - parsedOnly.length} cases pass, ${parsedOnly.length} case${parsedOnly.length === 1 ? '' : 's'} parsed only`;
  t.diagnostic(line);
  process.stdout.write(`${line}\n`);
  for (const name of parsedOnly) process.stdout.write(`  parsed only: ${name} (libvirt's data has no expected output for it)\n`);
  for (const r of results) for (const s of r.skipped) process.stdout.write(`  skipped: ${s}\n`);
  for (const [what] of DROPPED) process.stdout.write(`  not compared: ${droppedCounts.get(what) ?? 0} × ${what}\n`);
  assert.equal(passed.length, cases.length, `failing: ${failures.join(', ')}`);
});
