/** The CLI as a user runs it: `npx chardev …` from the repository root. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LIBVIRT_DATA, ROOT } from '../helpers/paths.ts';

const CASES = join(LIBVIRT_DATA, 'qemuxml2argvdata');

function chardev(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'chardev.js'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 30_000,
    ...(input !== undefined ? { input } : {}),
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function noStack(stderr: string): void {
  assert.ok(!/\n\s+at /.test(stderr), `stack trace on stderr:\n${stderr}`);
}

const dir = mkdtempSync(join(tmpdir(), 'chardev-cli-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('--help lists the commands, and each command has --help', () => {
  const r = chardev(['--help']);
  assert.equal(r.status, 0);
  for (const c of ['validate', 'dumpxml', 'qemu-args']) {
    assert.match(r.stdout, new RegExp(`\\b${c}\\b`));
    const sub = chardev([c, '--help']);
    assert.equal(sub.status, 0, c);
    assert.match(sub.stdout, new RegExp(`Usage: chardev ${c}`));
  }
});

test('validate: a good document exits 0 and lists its devices', () => {
  const r = chardev(['validate', join(CASES, 'serial-many-chardev.xml')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /valid \(2 character devices: serial0 pty, serial1 file\)/);
});

test('validate: a bad document gives one line FILE:LINE: <element> (alias): message and status 1', () => {
  const file = join(dir, 'bad.xml');
  writeFileSync(
    file,
    "<domain>\n  <name>x</name>\n  <devices>\n    <serial type='tcp'>\n      <source mode='bind' service='2445'/>\n    </serial>\n  </devices>\n</domain>\n",
  );
  const r = chardev(['validate', file]);
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, `${file}:4: <serial type='tcp'> (serial0): Missing source host attribute for char device\n`);
});

test('validate: errors the parser finds name the device too; an empty or blank file gets a line like every other error', () => {
  const file = join(dir, 'append.xml');
  writeFileSync(
    file,
    "<domain>\n  <name>x</name>\n  <devices>\n    <serial type='pty'/>\n    <serial type='file'>\n      <source path='/tmp/x' append='sometimes'/>\n    </serial>\n  </devices>\n</domain>\n",
  );
  const r = chardev(['validate', file]);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, `${file}:6: <serial type='file'> (serial1): Invalid value for attribute 'append' in element 'source': 'sometimes'.\n`);
  for (const [name, text, line] of [
    ['empty.xml', '', 1],
    ['blank.xml', '  \n\n', 3],
  ] as const) {
    const f = join(dir, name);
    writeFileSync(f, text);
    const e = chardev(['validate', f]);
    assert.equal(e.status, 1);
    assert.equal(e.stderr, `${f}:${line}: malformed XML: missing root element\n`);
  }
});

test('nmdm, which libvirt 9.0.0 accepts: validate and dumpxml take it, qemu-args refuses it in one line (QEMU has no such backend)', () => {
  const file = join(dir, 'nmdm.xml');
  writeFileSync(
    file,
    "<domain type='bhyve'>\n  <name>bsd</name>\n  <os><type arch='x86_64'>hvm</type></os>\n  <devices>\n    <serial type='nmdm'>\n      <source master='/dev/nmdm0A' slave='/dev/nmdm0B'/>\n    </serial>\n  </devices>\n</domain>\n",
  );
  const v = chardev(['validate', file]);
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stdout, /valid \(1 character device: serial0 nmdm\)/);
  const d = chardev(['dumpxml', file]);
  assert.equal(d.status, 0, d.stderr);
  assert.match(d.stdout, /<serial type='nmdm'>\n\s+<source master='\/dev\/nmdm0A' slave='\/dev\/nmdm0B'\/>/);
  const q = chardev(['qemu-args', file]);
  assert.equal(q.status, 1);
  assert.equal(q.stdout, '');
  assert.equal(q.stderr, `${file}:5: <serial type='nmdm'> (serial0): unsupported chardev 'nmdm'\n`);
});

test('validate --json reports validity for scripts', () => {
  const ok = chardev(['validate', '--json', join(CASES, 'serial-tcp-telnet-chardev.xml')]);
  assert.equal(ok.status, 0);
  const parsed = JSON.parse(ok.stdout) as { valid: boolean; devices: Array<{ alias: string; type: string }> };
  assert.equal(parsed.valid, true);
  assert.deepEqual(
    parsed.devices.map((d) => [d.alias, d.type]),
    [['serial0', 'tcp']],
  );
  const bad = chardev(['validate', '--json', join(CASES, 'chardev-reconnect-invalid-timeout.xml')]);
  assert.equal(bad.status, 1);
  const err = JSON.parse(bad.stdout) as { valid: boolean; error: { detail: string } };
  assert.equal(err.valid, false);
  assert.equal(err.error.detail, "chardev reconnect source timeout cannot be '0'");
});

test('malformed XML: the parser line and column, status 1, no stack', () => {
  const file = join(dir, 'broken.xml');
  writeFileSync(file, '<domain>\n  <devices>\n    <serial type="pty">\n  </devices>\n');
  const r = chardev(['dumpxml', file]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`^${file.replace(/[.]/g, '\\.')}:\\d+:\\d+: malformed XML: .+\\n$`));
  noStack(r.stderr);
});

test('missing file and unknown command fail cleanly', () => {
  const r = chardev(['qemu-args', join(dir, 'nope.xml')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /nope\.xml: cannot read: No such file or directory\n$/);
  const u = chardev(['frobnicate']);
  assert.equal(u.status, 2);
  assert.match(u.stderr, /unknown command 'frobnicate'/);
  noStack(u.stderr);
});

test('dumpxml prints inactive XML by default, live XML with --live (stdin works)', () => {
  const doc =
    "<domain><name>d</name><os><type arch='x86_64'>hvm</type></os><devices><serial type='pty'><source path='/dev/pts/5'/></serial></devices></domain>";
  const inactive = chardev(['dumpxml', '-'], doc);
  assert.equal(inactive.status, 0, inactive.stderr);
  assert.ok(!inactive.stdout.includes('/dev/pts/5'));
  assert.ok(inactive.stdout.includes("<console type='pty'>"));
  const live = chardev(['dumpxml', '--live', '-'], doc);
  assert.ok(live.stdout.includes("<console type='pty' tty='/dev/pts/5'>"), live.stdout);
  const both = chardev(['dumpxml', '--live', '--inactive', '-'], doc);
  assert.equal(both.status, 2, 'a usage error');
});

test('qemu-args prints the -chardev and -device lines, in both syntaxes', () => {
  const json = chardev(['qemu-args', join(CASES, 'serial-tcp-telnet-chardev.xml')]);
  assert.equal(json.status, 0, json.stderr);
  assert.equal(
    json.stdout,
    '-chardev socket,id=charserial0,host=127.0.0.1,port=9999,telnet=on,server=on,wait=off \\\n-device \'{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}\'\n',
  );
  const kv = chardev(['qemu-args', '--syntax', 'keyval', '--json', join(CASES, 'serial-file-log.xml')]);
  assert.deepEqual(JSON.parse(kv.stdout), [
    '-chardev',
    'file,id=charserial0,path=/tmp/serial.log,logfile=/var/lib/libvirt/qemu/demo-serial.log,logappend=off',
    '-device',
    'isa-serial,chardev=charserial0,id=serial0,index=0',
  ]);
  const tls = chardev(['qemu-args', '--tls', join(CASES, 'serial-tcp-chardev.xml')]);
  assert.match(
    tls.stdout,
    /-object '\{"qom-type":"tls-creds-x509","id":"objcharserial0_tls0","dir":"\/etc\/pki\/libvirt-chardev","endpoint":"client","verify-peer":true\}'/,
  );
});

test('a reader that closes the pipe early (`chardev … | true`) gets no EPIPE stack, from the sources or dist/', () => {
  const entries = [
    ['the sources through tsx', ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts')]],
    ['bin/chardev.js', [join(ROOT, 'bin', 'chardev.js')]],
  ] as const;
  for (const [name, argv] of entries) {
    // `true` exits without reading, so the help text meets a closed pipe.
    const r = spawnSync('sh', ['-c', '"$@" --help | true; exit $?', 'sh', process.execPath, ...argv], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, name);
    noStack(r.stderr);
    assert.doesNotMatch(r.stderr, /EPIPE/, name);
  }
});
