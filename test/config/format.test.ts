/** Formatting: inactive and live XML, and everything outside the chardevs kept as it was. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadDomain } from '../../src/config/domain.ts';
import { formatDomain } from '../../src/config/format.ts';

const DOC = `<?xml version='1.0'?>
<!-- kept -->
<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' xmlns:cd='urn:chardev:1'>
  <name>demo</name>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'>
      <source path='/dev/pts/99'/>
      <target port='0'/>
      <cd:history size='65536'/>
    </serial>
    <console type='pty'/>
    <serial type='tcp'>
      <source mode='bind' host='127.0.0.1' service='0'/>
      <protocol type='telnet'/>
    </serial>
    <input type='keyboard' bus='ps2'/>
    <!-- a comment between devices -->
  </devices>
  <qemu:commandline>
    <qemu:arg value='-S'/>
  </qemu:commandline>
</domain>
`;

test('inactive XML drops the pty path and fills libvirt defaults; the rest is unchanged', () => {
  const out = formatDomain(loadDomain(DOC));
  assert.ok(!out.includes('/dev/pts/99'), 'inactive XML carries no pty path');
  assert.ok(out.includes("<target type='isa-serial' port='0'>\n        <model name='isa-serial'/>\n      </target>"));
  assert.ok(out.includes("    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>"));
  assert.ok(out.includes("<source mode='bind' host='127.0.0.1' service='0'/>\n      <protocol type='telnet'/>"));
  // Outside the chardev elements: byte for byte.
  for (const kept of [
    "<?xml version='1.0'?>\n<!-- kept -->\n<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' xmlns:cd='urn:chardev:1'>",
    "    <input type='keyboard' bus='ps2'/>\n    <!-- a comment between devices -->\n  </devices>",
    "  <qemu:commandline>\n    <qemu:arg value='-S'/>\n  </qemu:commandline>\n</domain>\n",
  ]) {
    assert.ok(out.includes(kept), `missing: ${kept}`);
  }
  // chardev's own extension elements survive.
  assert.ok(out.includes("<cd:history size='65536'/>"));
  // Formatting what we formatted changes nothing.
  assert.equal(formatDomain(loadDomain(out)), out);
});

test('live XML: pty paths from runtime state, tty= on console 0, aliases, bound ports', () => {
  const loaded = loadDomain(DOC);
  const out = formatDomain(loaded, {
    live: true,
    state: { ptyPaths: new Map([['serial0', '/dev/pts/7']]), boundServices: new Map([['serial1', '40123']]) },
  });
  assert.ok(out.includes("<serial type='pty'>\n      <source path='/dev/pts/7'/>"));
  assert.ok(
    out.includes(
      "<console type='pty' tty='/dev/pts/7'>\n      <source path='/dev/pts/7'/>\n      <target type='serial' port='0'/>\n      <alias name='serial0'/>",
    ),
  );
  assert.ok(out.includes("<source mode='bind' host='127.0.0.1' service='40123'/>"));
  assert.ok(out.includes("<alias name='serial1'/>"));
});

test('live XML parsed from a live document keeps the pty path it carried', () => {
  const out = formatDomain(loadDomain(DOC, { live: true }), { live: true });
  assert.ok(out.includes("<console type='pty' tty='/dev/pts/99'>"));
});

test('a lone device element formats as that element', () => {
  const out = formatDomain(loadDomain("<serial type='udp'><source mode='connect' service='9'/><source mode='bind' service='8'/></serial>"));
  assert.equal(
    out,
    "<serial type='udp'>\n  <source mode='bind' service='8'/>\n  <source mode='connect' service='9'/>\n  <target type='isa-serial' port='0'>\n    <model name='isa-serial'/>\n  </target>\n</serial>\n",
  );
});

test('a domain with no chardev elements is written back unchanged', () => {
  const doc = "<domain><name>d</name><os><type>hvm</type></os><devices>\n    <disk type='file'/>\n    <input type='mouse'/>\n  </devices></domain>";
  const loaded = loadDomain(doc);
  assert.equal(loaded.def.serials.length, 0);
  assert.equal(formatDomain(loaded), `${doc}\n`);
});
