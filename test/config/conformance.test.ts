/**
 * libvirt 9.0.0's own test data, read in place from ../shared: for each case
 * its expected -chardev (and frontend) arguments, the chardev elements of its
 * expected output XML, or its expected error; and every formatted document
 * must validate against libvirt's RelaxNG schema (Debian's xmllint).
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
import { buildQemuArgs, generatedChannelPath, type ArgSyntax } from '../../src/qemu/command.ts';
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
const FRONTEND_DRIVERS = /^'?\{?"?(driver"?:"?)?(isa-serial|isa-parallel|pci-serial|usb-serial|isa-debugcon|virtserialport|virtconsole|spapr-vty|sclpconsole|sclplmconsole)\b/;

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
function expectedChardevArgs(file: string, loaded: LoadedDomain): string[] {
  const byId = new Map(hostDevices(loaded.def).map((nd) => [`char${nd.alias}`, nd]));
  const out: string[] = [];
  for (const { opt, value } of readArgs(file)) {
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
        v = v.replace(/,fd=1729/, `,path=${src.path ?? generatedChannelPath(loaded.def, nd.dev, loaded.driver)}`);
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

/** Chardev elements of a document, serialised without layout whitespace. */
function chardevElements(xml: string): string[] {
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
    .filter((e) => ['serial', 'parallel', 'console', 'channel'].includes(e.localName ?? ''))
    .map((e) => {
      strip(e);
      return serializeNode(e);
    });
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
  for (const [suffix, syntax] of [['.args', 'keyval'], ['.x86_64-latest.args', 'json']] as Array<[string, ArgSyntax]>) {
    const argsFile = join(ARGV, name + suffix);
    if (!existsSync(argsFile)) continue;
    const expected = expectedChardevArgs(argsFile, loaded);
    const actual = buildQemuArgs(loaded, { syntax }).map(([opt, v]) => `${opt} ${v}`);
    assert.deepEqual(actual, expected, `${name}${suffix}`);
    result.checks.push(suffix.slice(1));
    if (readFileSync(argsFile, 'utf8').includes('-object secret,id=charserial')) {
      result.skipped.push(`${name}${suffix}: the TLS key's -object secret is encrypted with libvirt's per-VM master key`);
    }
  }
  for (const outName of [`${name}.xml`, `${name}.x86_64-latest.xml`]) {
    const outFile = join(OUT, outName);
    if (!existsSync(outFile)) continue;
    const expected = chardevElements(readFileSync(outFile, 'utf8'));
    assert.deepEqual(chardevElements(formatDomain(loaded)), expected, outName);
    // libvirt's qemuxml2xmltest also parses without the inactive flag and expects the same.
    const active = loadDomain(text, { file: `${name}.xml`, live: true, ...driverFor(name) });
    assert.deepEqual(chardevElements(formatDomain(active)), expected, `${outName} (active parse)`);
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

test('conformance summary', (t) => {
  const passed = results.filter((r) => !failures.includes(r.name)).length;
  const line = `conformance: ${passed}/${cases.length} cases pass`;
  t.diagnostic(line);
  process.stdout.write(`${line}\n`);
  for (const r of results) for (const s of r.skipped) process.stdout.write(`  skipped: ${s}\n`);
  assert.equal(passed, cases.length, `failing: ${failures.join(', ')}`);
});
