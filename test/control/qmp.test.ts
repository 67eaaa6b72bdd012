/**
 * The QMP control socket against a real domain (pty serial with history, file serial, tcp
 * server), driven by Python QMP sessions that speak the wire protocol with nothing but
 * socket + json, as any QMP client would. Responses are checked as the exact text QEMU's
 * formatter would produce.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { open } from '../../src/index.ts';
import type { Domain } from '../../src/core/domain.ts';
import { startQmpServer, type QmpServer } from '../../src/control/qmp.ts';
import { ChardevError } from '../../src/errors.ts';
import { mode, q, tmpDir, waitFor } from '../core/helpers.ts';
import { NEGOTIATE, pyQmp } from '../helpers/qmp-py.ts';

const T = { timeout: 15000 };

/** Send each request on a negotiated session; returns each one's response text. */
async function session(socketPath: string, requests: string[]): Promise<string[]> {
  const res = await pyQmp(socketPath, [...NEGOTIATE, ...requests.map((r) => ({ conn: 'a', send: r }))]);
  assert.equal(res[1]?.lines[0], '{"return": {}}');
  return res.slice(2).map((r) => {
    assert.equal(r.lines.length, 1, `one response expected, got ${JSON.stringify(r)}`);
    return r.lines[0] as string;
  });
}

const exec = (command: string, args?: object, id?: unknown): string =>
  JSON.stringify({ execute: command, ...(args !== undefined ? { arguments: args } : {}), ...(id !== undefined ? { id } : {}) });
const err = (desc: string, cls = 'GenericError'): string => `{"error": {"class": "${cls}", "desc": ${JSON.stringify(desc)}}}`;
const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "chardev 0.1.0"}, "capabilities": []}}';

describe('QMP server', () => {
  let dir = '';
  let sock = '';
  let domain: Domain | undefined;
  let qmp: QmpServer | undefined;
  const breaks: string[] = [];
  const toGuest: Buffer[] = [];

  before(async () => {
    dir = tmpDir('qmp');
    sock = path.join(dir, 'qmp.sock');
    const xml = `<domain type='kvm' xmlns:cd='urn:chardev:1'>
  <name>qmpdom</name>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='pty'><target port='0'/><cd:history size='4096'/></serial>
    <serial type='file'><source path='${q(path.join(dir, 'serial1.log'))}'/><target port='1'/></serial>
    <serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/><target port='2'/><cd:clients max='4'/></serial>
  </devices>
</domain>`;
    domain = await open(xml, { ptyPollMs: 20 });
    for (const dev of domain.devices.values()) {
      dev.on('break', () => breaks.push(dev.id));
      dev.on('data', (b) => toGuest.push(b));
    }
    qmp = await startQmpServer(domain, { path: sock, liveXml: () => '<domain>live</domain>', inactiveXml: () => '<domain>inactive</domain>' });
  });

  after(async () => {
    await qmp?.close();
    await domain?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('greets as QEMU 9.2 does, CRLF-terminated, and creates the socket 0600', T, async () => {
    assert.equal(mode(sock), 0o600);
    const [greeting] = await pyQmp(sock, [{ connect: 'a' }]);
    assert.equal(greeting?.lines[0], GREETING);
    // The raw bytes too: exactly one CRLF-terminated line.
    const raw = await new Promise<string>((resolve, reject) => {
      const c = net.connect(sock);
      let got = '';
      c.on('data', (b) => {
        got += b.toString();
        if (got.endsWith('\r\n')) {
          c.destroy();
          resolve(got);
        }
      });
      c.on('error', reject);
      setTimeout(() => reject(new Error('no greeting')), 3000).unref();
    });
    assert.equal(raw, `${GREETING}\r\n`);
  });

  it('requires capabilities negotiation first, then refuses it a second time', T, async () => {
    const r = await pyQmp(sock, [
      { connect: 'a' },
      { conn: 'a', send: exec('query-version', undefined, 1) },
      { conn: 'a', send: exec('no-such-command') },
      { conn: 'a', send: exec('qmp_capabilities', { enable: ['oob'] }) },
      { conn: 'a', send: exec('qmp_capabilities', undefined, 'neg') },
      { conn: 'a', send: exec('qmp_capabilities') },
      { conn: 'a', send: exec('query-version', undefined, 2) },
    ]);
    assert.deepEqual(
      r.slice(1).map((s) => s.lines[0]),
      [
        `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": 1}`,
        err("Expecting capabilities negotiation with 'qmp_capabilities'", 'CommandNotFound'),
        err("Capability oob isn't available"),
        '{"return": {}, "id": "neg"}',
        err('Capabilities negotiation is already complete, command ignored', 'CommandNotFound'),
        '{"return": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "chardev 0.1.0"}, "id": 2}',
      ],
    );
  });

  it('answers malformed input with QEMU error classes and texts, echoing any id', T, async () => {
    const got = await session(sock, [
      '{"execute": "foo", "id": "x1"}',
      '{"execute": }',
      '{"execute" "query-version"}',
      '{"execute": "query-version",}',
      '{1: 2}',
      '[1, 2]',
      '42\n',
      '{"id": 5}',
      '{"execute": 1, "id": [1, {"k": null}]}',
      '{"execute": "query-version", "arguments": []}',
      '{"execute": "query-version", "foo": 1}',
      '{"execute": "query-version", "arguments": {"x": 1}}',
      '{"execute": "chardev-remove"}',
      '{"execute": "chardev-remove", "arguments": {"id": 5}}',
      '{"execute": "ringbuf-read", "arguments": {"device": "x", "size": 1.5}}',
      '{"execute": "ringbuf-read", "arguments": {"device": "x", "size": 4, "format": "hex"}}',
      '{"execute": "query-version", "id": {"a": [true, false, null, -1.5, "\\u00e9\\ud83d\\ude00"]}}',
      "{'execute': 'query-chardev-backends', 'id': 'single \"quotes\"'}",
      '{"execute": "query-version", "id": "a\\u0000b"}',
      'nonsense\n',
    ]);
    assert.deepEqual(got, [
      '{"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}, "id": "x1"}',
      err('JSON parse error, expecting value'),
      err('JSON parse error, missing : in object pair'),
      err('JSON parse error, expecting value'),
      err('JSON parse error, key is not a string in object'),
      err('QMP input must be a JSON object'),
      err('QMP input must be a JSON object'),
      `{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}, "id": 5}`,
      `{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}, "id": [1, {"k": null}]}`,
      err("QMP input member 'arguments' must be an object"),
      err("QMP input member 'foo' is unexpected"),
      err("Parameter 'x' is unexpected"),
      err("Parameter 'id' is missing"),
      err("Invalid parameter type for 'id', expected: string"),
      err("Invalid parameter type for 'size', expected: integer"),
      err("Parameter 'format' does not accept value 'hex'"),
      // QEMU's formatter: ASCII only, upper-case \u escapes, surrogate pairs for astral code points.
      '{"return": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "chardev 0.1.0"}, "id": {"a": [true, false, null, -1.5, "\\u00E9\\uD83D\\uDE00"]}}',
      '{"return": [{"name": "null"}, {"name": "socket"}, {"name": "udp"}, {"name": "file"}, {"name": "pipe"}, {"name": "pty"}, {"name": "serial"}, {"name": "parallel"}, {"name": "ringbuf"}, {"name": "memory"}], "id": "single \\"quotes\\""}',
      err('JSON parse error, \\u0000 is not supported'),
      err("JSON parse error, invalid keyword 'nonsense'"),
    ]);
  });

  it('splits a stream of objects that are not newline-separated, even across writes', T, async () => {
    const r = await pyQmp(sock, [
      ...NEGOTIATE,
      { conn: 'a', send: '{"execute":"query-version","id":1}{"execute":"query-chardev-backends","id":2}  \n{"execute"', read: 2 },
      { conn: 'a', send: ': "x-chardev-domain-xml", "arguments": {"live": false}, "id": "{[\\"}"}' },
    ]);
    assert.equal(r[2]?.lines.length, 2);
    assert.match(r[2]?.lines[0] ?? '', /^\{"return": \{"qemu": .*"id": 1\}$/);
    assert.match(r[2]?.lines[1] ?? '', /^\{"return": \[\{"name": "null"\}.*"id": 2\}$/);
    assert.equal(r[3]?.lines[0], '{"return": "<domain>inactive</domain>", "id": "{[\\"}"}');
  });

  it('x-chardev-resources: memory, open fds and active handles and timers of the process', T, async () => {
    const [r] = await session(sock, [exec('x-chardev-resources')]);
    const ret = (JSON.parse(r ?? '') as { return: { pid: number; rss: number; 'heap-used': number; fds: number; resources: Record<string, number> } }).return;
    assert.equal(ret.pid, process.pid);
    assert.ok(ret.rss > 0 && ret['heap-used'] > 0);
    assert.equal(typeof ret.fds, 'number');
    assert.ok(ret.fds > 3);
    assert.ok((ret.resources['PipeConnectWrap'] ?? 0) + (ret.resources['PipeWrap'] ?? 0) >= 1, JSON.stringify(ret.resources));
  });

  it('query-version, query-commands, query-chardev, query-chardev-backends, x-chardev-domain-xml', T, async () => {
    const [version, commands, chardevs, backends, live, inactive] = await session(sock, [
      exec('query-version'),
      exec('query-commands'),
      exec('query-chardev'),
      exec('query-chardev-backends'),
      exec('x-chardev-domain-xml'),
      exec('x-chardev-domain-xml', { live: false }),
    ]);
    assert.equal(version, '{"return": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "chardev 0.1.0"}}');
    const names = (JSON.parse(commands ?? '') as { return: Array<{ name: string }> }).return.map((c) => c.name);
    assert.deepEqual(names.sort(), [
      'chardev-add',
      'chardev-remove',
      'chardev-send-break',
      'qmp_capabilities',
      'query-chardev',
      'query-chardev-backends',
      'query-commands',
      'query-version',
      'ringbuf-read',
      'ringbuf-write',
      'x-chardev-clients',
      'x-chardev-counters',
      'x-chardev-domain-xml',
      'x-chardev-resources',
      'x-chardev-take-over',
    ]);
    const pty = domain?.device('serial0').ptyPath ?? '';
    const port = domain?.device('serial2').boundService ?? '';
    assert.match(pty, /^\/dev\/pts\/\d+$/);
    assert.match(port, /^\d+$/);
    assert.equal(
      chardevs,
      `{"return": [{"label": "charserial0", "filename": "pty:${pty}", "frontend-open": true}, {"label": "charserial1", "filename": "file", "frontend-open": true}, {"label": "charserial2", "filename": "disconnected:tcp:127.0.0.1:${port},server=on", "frontend-open": true}]}`,
    );
    assert.equal(
      backends,
      '{"return": [{"name": "null"}, {"name": "socket"}, {"name": "udp"}, {"name": "file"}, {"name": "pipe"}, {"name": "pty"}, {"name": "serial"}, {"name": "parallel"}, {"name": "ringbuf"}, {"name": "memory"}]}',
    );
    assert.equal(live, '{"return": "<domain>live</domain>"}');
    assert.equal(inactive, '{"return": "<domain>inactive</domain>"}');
  });

  it('chardev-add creates every supported backend; chardev-remove takes them away again', T, async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [`${fifo}.in`, `${fifo}.out`]);
    const unixPath = path.join(dir, 'added.sock');
    const outFile = path.join(dir, 'added.log');
    const add = (id: string, type: string, data: object): string => exec('chardev-add', { id, backend: { type, data } });
    const got = await session(sock, [
      add('n0', 'null', {}),
      add('charf0', 'file', { out: outFile, append: true, logfile: path.join(dir, 'f0.tee') }),
      add('p0', 'pty', {}),
      add('s0', 'socket', { addr: { type: 'inet', data: { host: '127.0.0.1', port: '0' } }, server: true, wait: false, telnet: true }),
      add('u0', 'socket', { addr: { type: 'unix', data: { path: unixPath } } }),
      add('d0', 'udp', { remote: { type: 'inet', data: { host: '127.0.0.1', port: '9' } }, local: { type: 'inet', data: { host: '127.0.0.1', port: '0' } } }),
      add('pipe0', 'pipe', { device: fifo }),
      add('tty0', 'serial', { device: '/dev/null' }),
      add('rb0', 'ringbuf', { size: 16 }),
      add('mem0', 'memory', {}),
      exec('query-chardev'),
    ]);
    const ptyAnswer = JSON.parse(got[2] ?? '') as { return: { pty: string } };
    assert.match(ptyAnswer.return.pty, /^\/dev\/pts\/\d+$/);
    assert.ok(fs.existsSync(ptyAnswer.return.pty));
    assert.deepEqual(got.slice(0, 10), [
      '{"return": {}}',
      '{"return": {}}',
      `{"return": {"pty": "${ptyAnswer.return.pty}"}}`,
      ...Array<string>(7).fill('{"return": {}}'),
    ]);
    const list = (JSON.parse(got[10] ?? '') as { return: Array<{ label: string; filename: string; 'frontend-open': boolean }> }).return;
    const s0 = domain?.device('s0').boundService ?? '';
    assert.deepEqual(list.slice(3), [
      { label: 'n0', filename: 'null', 'frontend-open': false },
      { label: 'charf0', filename: 'file', 'frontend-open': false },
      { label: 'p0', filename: `pty:${ptyAnswer.return.pty}`, 'frontend-open': false },
      { label: 's0', filename: `disconnected:telnet:127.0.0.1:${s0},server=on`, 'frontend-open': false },
      { label: 'u0', filename: `disconnected:unix:${unixPath},server=on`, 'frontend-open': false },
      { label: 'd0', filename: 'udp', 'frontend-open': false },
      { label: 'pipe0', filename: 'pipe', 'frontend-open': false },
      { label: 'tty0', filename: 'serial', 'frontend-open': false },
      { label: 'rb0', filename: 'ringbuf', 'frontend-open': false },
      { label: 'mem0', filename: 'memory', 'frontend-open': false },
    ]);
    // The devices are real: the alias is the id without 'char'; output reaches the file and its log tee.
    assert.equal(domain?.device('f0').id, 'charf0');
    domain?.device('charf0').write(Buffer.from('to the file\n'));
    assert.equal(fs.readFileSync(outFile, 'utf8'), 'to the file\n');
    assert.equal(fs.readFileSync(path.join(dir, 'f0.tee'), 'utf8'), 'to the file\n');
    assert.equal(mode(unixPath), 0o600);
    await new Promise<void>((resolve, reject) => {
      const c = net.connect(Number(s0), '127.0.0.1', () => {
        c.destroy();
        resolve();
      });
      c.on('error', reject);
    });

    const ids = ['n0', 'charf0', 'p0', 's0', 'u0', 'd0', 'pipe0', 'tty0', 'rb0', 'mem0'];
    const removed = await session(sock, [...ids.map((id) => exec('chardev-remove', { id })), exec('chardev-remove', { id: 'n0' }), exec('query-chardev')]);
    assert.deepEqual(removed.slice(0, ids.length + 1), [...ids.map(() => '{"return": {}}'), err("Chardev 'n0' not found")]);
    assert.deepEqual(
      (JSON.parse(removed[ids.length + 1] ?? '') as { return: Array<{ label: string }> }).return.map((d) => d.label),
      ['charserial0', 'charserial1', 'charserial2'],
    );
    assert.equal(fs.existsSync(unixPath), false, 'a removed unix server removes its socket');
    assert.equal(fs.existsSync(outFile), true, 'a removed file device keeps its file');
    assert.equal(domain?.devices.size, 3);
  });

  it('chardev-add refuses what QEMU refuses, with its texts (/char/invalid)', T, async () => {
    const add = (id: unknown, backend: unknown): string => exec('chardev-add', { id, backend });
    const got = await session(sock, [
      add('charserial0', { type: 'null', data: {} }),
      add('serial1', { type: 'null', data: {} }),
      add('r3', { type: 'ringbuf', data: { size: 3 } }),
      add('f1', { type: 'file', data: { out: path.join(dir, 'no', 'such', 'dir', 'x') } }),
      add('par0', { type: 'parallel', data: { device: '/dev/null' } }),
      add('pp', { type: 'pipe', data: { device: path.join(dir, 'missing-fifo') } }),
      add('st', { type: 'stdio', data: {} }),
      add('b', { type: 'bogus', data: {} }),
      add('nd', { type: 'null' }),
      add('fo', { type: 'file', data: {} }),
      add('fi', { type: 'file', data: { out: path.join(dir, 'fi'), in: path.join(dir, 'no-such-input') } }),
      add('sw', { type: 'socket', data: { addr: { type: 'inet', data: { host: '127.0.0.1', port: '0' } }, wait: true } }),
      add('sr', { type: 'socket', data: { addr: { type: 'inet', data: { host: '127.0.0.1', port: '0' } }, reconnect: 1 } }),
      add('sa', { type: 'socket', data: { addr: { type: 'inet', data: { host: '127.0.0.1' } } } }),
      add('sx', { type: 'socket', data: { addr: { type: 'inet', data: { host: '127.0.0.1', port: '0' } }, bogus: 1 } }),
      add('1bad', { type: 'null', data: {} }),
      add(7, { type: 'null', data: {} }),
      exec('chardev-add', { id: 'nb' }),
      exec('query-chardev'),
    ]);
    assert.deepEqual(got.slice(0, -1), [
      err("Chardev with id 'charserial0' already exists"),
      err("Chardev with id 'serial1' already exists"),
      err("Failed to add chardev 'r3': size of ringbuf chardev must be power of two"),
      err(
        `Failed to add chardev 'f1': file: Could not open '${path.join(dir, 'no', 'such', 'dir', 'x')}': directory '${path.join(dir, 'no', 'such', 'dir')}' does not exist`,
      ),
      got[4] ?? '',
      got[5] ?? '',
      err("Failed to add chardev 'st': backend type 'stdio' is not supported by chardev (query-chardev-backends lists what is)"),
      err("Parameter 'type' does not accept value 'bogus'"),
      err("Parameter 'backend.data' is missing"),
      err("Parameter 'backend.data.out' is missing"),
      err(`Failed to add chardev 'fi': file: Could not open '${path.join(dir, 'no-such-input')}': No such file or directory`),
      err("Failed to add chardev 'sw': 'wait' is not supported by chardev: a server never blocks for its first client"),
      err("Failed to add chardev 'sr': 'reconnect' option is incompatible with 'server' option"),
      err("Parameter 'backend.data.addr.data.port' is missing"),
      err("Parameter 'backend.data.bogus' is unexpected"),
      err("Parameter 'id' expects an identifier"),
      err("Invalid parameter type for 'id', expected: string"),
      err("Parameter 'backend' is missing"),
    ]);
    assert.match(got[4] ?? '', /^\{"error": \{"class": "GenericError", "desc": "Failed to add chardev 'par0': .*not a parallel port: /);
    assert.match(
      got[5] ?? '',
      /^\{"error": \{"class": "GenericError", "desc": "Failed to add chardev 'pp': pipe: Could not open '.*missing-fifo': No such file or directory"\}\}$/,
    );
    // Nothing half-made stays behind.
    assert.equal((JSON.parse(got.at(-1) ?? '') as { return: unknown[] }).return.length, 3);
    assert.equal(fs.existsSync(path.join(dir, 'fi')), false);
  });

  it(
    "a file chardev with a FIFO as input: BREAK only to the id that exists, the FIFO's bytes to the guest, CLOSED at its end (/char/file-fifo)",
    T,
    async () => {
      const fifo = path.join(dir, 'fifo-in');
      const out = path.join(dir, 'fifo-out');
      execFileSync('mkfifo', [fifo]);
      // Held read-write, as QEMU's test does, so the bytes wait in it before the chardev exists.
      const writer = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      fs.writeSync(writer, Buffer.from('fifo-in\0'));
      try {
        assert.deepEqual(await session(sock, [exec('chardev-add', { id: 'label-file', backend: { type: 'file', data: { out, in: fifo } } })]), [
          '{"return": {}}',
        ]);
        const dev = domain?.device('label-file') ?? assert.fail('no label-file device');
        const seen: string[] = [];
        const input: Buffer[] = [];
        dev.on('break', () => seen.push('break'));
        dev.on('open', () => seen.push('open'));
        dev.on('close', () => seen.push('close'));
        dev.on('data', (b) => input.push(b));
        const got = await session(sock, [exec('chardev-send-break', { id: 'label-foo' }), exec('chardev-send-break', { id: 'label-file' })]);
        assert.deepEqual(got, [err("Chardev 'label-foo' not found"), '{"return": {}}']);
        await waitFor(() => Buffer.concat(input).length >= 8, "the FIFO's 8 bytes at the guest");
        assert.deepEqual(Buffer.concat(input), Buffer.from('fifo-in\0'));
        assert.deepEqual(seen, ['open', 'break'], 'opened at creation (replayed), one BREAK');
        assert.equal(dev.write(Buffer.from('out')), 3);
        assert.equal(fs.readFileSync(out, 'utf8'), 'out');
        fs.closeSync(writer);
        await waitFor(() => seen.includes('close'), 'CLOSED at the end of the input');
        assert.equal(dev.write(Buffer.from(' still')), 6, 'output goes on after the input ended');
        assert.equal(fs.readFileSync(out, 'utf8'), 'out still');
        assert.deepEqual(await session(sock, [exec('chardev-remove', { id: 'label-file' })]), ['{"return": {}}']);
      } finally {
        try {
          fs.closeSync(writer);
        } catch {
          // closed above
        }
      }
    },
  );

  it('chardev-remove and chardev-send-break on devices of the document', T, async () => {
    breaks.length = 0;
    const got = await session(sock, [
      exec('chardev-remove', { id: 'charserial0' }),
      exec('chardev-remove', { id: 'serial0' }),
      exec('chardev-send-break', { id: 'charserial1' }),
      exec('chardev-send-break', { id: 'nope' }),
      // An id whose alias still starts with 'char' is found by its id, not mangled twice.
      exec('chardev-add', { id: 'charchar1', backend: { type: 'null', data: {} } }),
      exec('chardev-remove', { id: 'charchar1' }),
      exec('chardev-remove', { id: 'charchar1' }),
    ]);
    assert.deepEqual(got, [
      err("Chardev 'charserial0' is busy"),
      err("Chardev 'serial0' not found"),
      '{"return": {}}',
      err("Chardev 'nope' not found"),
      '{"return": {}}',
      '{"return": {}}',
      err("Chardev 'charchar1' not found"),
    ]);
    assert.deepEqual(breaks, ['charserial1']);
  });

  it('ringbuf-write / ringbuf-read with QEMU semantics; document history read without consuming', T, async () => {
    toGuest.length = 0;
    domain?.device('serial0').write(Buffer.from('boot: kernel\nboot: init\n'));
    assert.deepEqual(await session(sock, [exec('chardev-add', { id: 'rb', backend: { type: 'ringbuf', data: { size: 8 } } })]), ['{"return": {}}']);
    const rb = domain?.device('rb');
    rb?.on('data', (b) => toGuest.push(b));
    const got = await session(sock, [
      exec('ringbuf-write', { device: 'rb', data: 'abcdefghijkl' }),
      exec('ringbuf-read', { device: 'rb', size: 100 }),
      exec('ringbuf-read', { device: 'rb', size: 100 }),
      exec('ringbuf-write', { device: 'rb', data: 'AAECaGk=', format: 'base64' }),
      exec('ringbuf-read', { device: 'rb', size: 2, format: 'base64' }),
      exec('ringbuf-read', { device: 'rb', size: 10 }),
      exec('ringbuf-write', { device: 'rb', data: 'h\u00e9\u0001' }),
      exec('ringbuf-read', { device: 'rb', size: 10 }),
      exec('ringbuf-write', { device: 'rb', data: 'x', format: 'base64' }),
      exec('ringbuf-write', { device: 'rb', data: '!!', format: 'base64' }),
      exec('ringbuf-read', { device: 'rb', size: 0 }),
      exec('ringbuf-read', { device: 'nope', size: 1 }),
      exec('ringbuf-write', { device: 'nope', data: 'x' }),
      exec('ringbuf-read', { device: 'charserial1', size: 1 }),
      exec('ringbuf-write', { device: 'charserial0', data: 'x' }),
      exec('ringbuf-read', { device: 'charserial0', size: 11 }),
      exec('ringbuf-read', { device: 'charserial0', size: 11, format: 'base64' }),
    ]);
    assert.deepEqual(got, [
      '{"return": {}}',
      '{"return": "efghijkl"}',
      '{"return": ""}',
      '{"return": {}}',
      '{"return": "AAE="}',
      '{"return": "\\u0002hi"}',
      '{"return": {}}',
      '{"return": "h\\u00E9\\u0001"}',
      '{"return": {}}',
      err('Base64 data contains invalid characters'),
      err('size must be greater than zero'),
      err("Device 'nope' not found"),
      err("Device 'nope' not found"),
      err('charserial1 is not a ringbuf device'),
      err('charserial0 is not a ringbuf device'),
      '{"return": "boot: init\\n"}',
      `{"return": "${Buffer.from('boot: init\n').toString('base64')}"}`,
    ]);
    // ringbuf-write never reaches the guest; the guest's own output lands in the ring.
    assert.equal(Buffer.concat(toGuest).length, 0);
    rb?.write(Buffer.from('guest\0tail'));
    const more = await session(sock, [
      exec('ringbuf-read', { device: 'rb', size: 100 }),
      exec('ringbuf-read', { device: 'rb', size: 100 }),
      exec('chardev-remove', { id: 'rb' }),
    ]);
    // The guest's 10 bytes in an 8-byte ring: 'est\0tail', cut at the NUL (QEMU's C string) but consumed whole.
    assert.deepEqual(more, ['{"return": "est"}', '{"return": ""}', '{"return": {}}']);
  });

  it(
    "QEMU's ringbuf scenario: size 5 refused, size 2 keeps the last two bytes the guest wrote, a read consumes them; the memory alias (/char/ringbuf)",
    T,
    async () => {
      const add = (id: string, type: string, size: number): string => exec('chardev-add', { id, backend: { type, data: { size } } });
      const got = await session(sock, [add('ring5', 'ringbuf', 5), add('ring2', 'ringbuf', 2), add('mem2', 'memory', 2)]);
      assert.deepEqual(got, [err("Failed to add chardev 'ring5': size of ringbuf chardev must be power of two"), '{"return": {}}', '{"return": {}}']);
      assert.equal(domain?.device('ring2').write(Buffer.from('buff')), 4, 'the guest writes buff: 4 taken');
      const read = await session(sock, [
        exec('ringbuf-read', { device: 'ring2', size: 4 }),
        exec('ringbuf-read', { device: 'ring2', size: 4 }),
        exec('query-chardev'),
        exec('chardev-remove', { id: 'ring2' }),
        exec('chardev-remove', { id: 'mem2' }),
      ]);
      assert.deepEqual(read.slice(0, 2), ['{"return": "ff"}', '{"return": ""}']);
      assert.match(read[2] ?? '', /\{"label": "mem2", "filename": "memory", "frontend-open": false\}/);
      assert.deepEqual(read.slice(3), ['{"return": {}}', '{"return": {}}']);
    },
  );

  it('x-chardev-counters, x-chardev-clients, x-chardev-take-over, and client events to negotiated sessions', T, async () => {
    const pty = domain?.device('serial0').ptyPath ?? '';
    domain?.device('serial0').write(Buffer.from('before the reader came\n'));
    const r = await pyQmp(sock, [
      ...NEGOTIATE,
      { connect: 'b' }, // not negotiated: gets no events
      { conn: 'a', send: exec('chardev-add', { id: 'late', backend: { type: 'pty', data: {} } }) },
      { openPty: pty, as: 'p' },
      { conn: 'a', untilEvent: 'CHARDEV_CLIENT_ATTACHED' },
      { conn: 'a', send: exec('x-chardev-clients', { id: 'charserial0' }) },
      { conn: 'a', send: exec('x-chardev-take-over', { id: 'charserial0', client: 999 }) },
      { conn: 'a', send: exec('x-chardev-counters', { id: 'charserial1' }) },
      { conn: 'a', send: exec('x-chardev-counters', { id: 'nope' }) },
      { closeFd: 'p' },
      { conn: 'a', untilEvent: 'CHARDEV_CLIENT_DETACHED' },
      { conn: 'b', send: exec('qmp_capabilities') },
    ]);
    const late = (JSON.parse(r[3]?.lines[0] ?? '') as { return: { pty: string } }).return.pty;
    const attached = JSON.parse(r[5]?.lines[0] ?? '') as {
      event: string;
      data: { id: string; client: Record<string, unknown> };
      timestamp: { seconds: number; microseconds: number };
    };
    assert.deepEqual(Object.keys(attached), ['event', 'data', 'timestamp']);
    assert.equal(attached.event, 'CHARDEV_CLIENT_ATTACHED');
    assert.equal(attached.data.id, 'charserial0');
    const c = attached.data.client;
    assert.deepEqual(Object.keys(c), ['id', 'kind', 'label', 'role', 'readonly', 'since', 'bytes-sent', 'bytes-missed', 'released']);
    assert.deepEqual(
      { ...c, since: '', 'bytes-sent': 0 },
      { id: c['id'], kind: 'pty', label: pty, role: 'writer', readonly: false, since: '', 'bytes-sent': 0, 'bytes-missed': 0, released: false },
    );
    assert.equal(typeof c['id'], 'number');
    assert.ok((c['bytes-sent'] as number) > 0, 'the history was replayed to the reader');
    assert.match(r[5]?.lines[0] ?? '', /"timestamp": \{"seconds": \d+, "microseconds": \d+\}\}$/);
    assert.ok(Number.isInteger(attached.timestamp.seconds) && Math.abs(attached.timestamp.seconds - Date.now() / 1000) < 60);
    assert.ok(Number.isInteger(attached.timestamp.microseconds) && attached.timestamp.microseconds >= 0 && attached.timestamp.microseconds < 1e6);

    const clients = JSON.parse(r[6]?.lines[0] ?? '') as { return: Array<Record<string, unknown>> };
    assert.equal(clients.return.length, 1);
    assert.equal(clients.return[0]?.['id'], c['id']);
    assert.equal(clients.return[0]?.['label'], pty);
    assert.equal(r[7]?.lines[0], err("Chardev 'charserial0' has no client 999"));
    const counters = JSON.parse(r[8]?.lines[0] ?? '') as { return: Array<Record<string, unknown>> };
    assert.deepEqual(Object.keys(counters.return[0] ?? {}), ['label', 'bytes-from-guest', 'bytes-to-guest', 'dropped', 'clients']);
    assert.equal(counters.return[0]?.['label'], 'charserial1');
    assert.equal(r[9]?.lines[0], err("Chardev 'nope' not found"));
    const detached = JSON.parse(r[11]?.lines[0] ?? '') as { data: { id: string; client: { id: number } } };
    assert.equal(detached.data.id, 'charserial0');
    assert.equal(detached.data.client.id, c['id']);
    // The session that had not negotiated got nothing before its own answer.
    assert.deepEqual(r[12], { lines: ['{"return": {}}'], events: [], eof: false });

    // A device added later reports its clients too; then it goes away.
    const r2 = await pyQmp(sock, [
      ...NEGOTIATE,
      { openPty: late, as: 'l' },
      { conn: 'a', untilEvent: 'CHARDEV_CLIENT_ATTACHED' },
      { conn: 'a', send: exec('x-chardev-take-over', { id: 'late', client: 1 }) },
      { closeFd: 'l' },
      { conn: 'a', send: exec('chardev-remove', { id: 'late' }) },
    ]);
    const lateEvent = JSON.parse(r2[3]?.lines[0] ?? '') as { data: { id: string; client: { kind: string; label: string; id: number } } };
    assert.deepEqual([lateEvent.data.id, lateEvent.data.client.kind, lateEvent.data.client.label], ['late', 'pty', late]);
    assert.equal(r2[4]?.lines[0], '{"return": {}}', 'client 1 of a fresh device is the writer already: take-over is a no-op');
    assert.equal(r2[6]?.lines[0], '{"return": {}}');

    // Counters: guest output to the file device is counted.
    domain?.device('serial1').write(Buffer.from('12345'));
    const [all] = await session(sock, [exec('x-chardev-counters')]);
    const list = (JSON.parse(all ?? '') as { return: Array<Record<string, unknown>> }).return;
    assert.deepEqual(
      list.map((d) => d['label']),
      ['charserial0', 'charserial1', 'charserial2'],
    );
    assert.ok((list[1]?.['bytes-from-guest'] as number) >= 5);
    assert.deepEqual([list[1]?.['dropped'], list[1]?.['clients']], [0, 0]);
  });

  it('tcp peers: attach/detach/role events, x-chardev-clients and a real take-over', T, async () => {
    const port = Number(domain?.device('serial2').boundService);
    const r = await pyQmp(sock, [
      ...NEGOTIATE,
      { tcpConnect: port, as: 'A' },
      { conn: 'a', untilEvent: 'CHARDEV_CLIENT_ATTACHED' },
      { tcpConnect: port, as: 'B' },
      { conn: 'a', untilEvent: 'CHARDEV_CLIENT_ATTACHED' },
      { conn: 'a', send: exec('x-chardev-clients', { id: 'charserial2' }) },
      // Client ids are the hub's, 1 and 2 on this device's first two peers (checked below).
      { conn: 'a', send: exec('x-chardev-take-over', { id: 'charserial2', client: 2 }, 't') },
      { conn: 'a', send: exec('x-chardev-clients', { id: 'charserial2' }) },
      { closeSock: 'A' },
      { conn: 'a', untilEvent: 'CHARDEV_CLIENT_DETACHED' },
    ]);
    type Client = { id: number; kind: string; label: string; role: string; readonly: boolean; since: string; 'bytes-sent': number; 'bytes-missed': number };
    const ev = (raw: string | undefined): { event: string; data: { id: string; client: Client } } =>
      JSON.parse(raw ?? '') as { event: string; data: { id: string; client: Client } };
    const a = ev(r[3]?.lines[0]).data;
    const b = ev(r[5]?.lines[0]).data;
    assert.deepEqual(
      [a.id, a.client.kind, a.client.label, a.client.role, b.id, b.client.label, b.client.role],
      ['charserial2', 'tcp', `127.0.0.1:${r[2]?.local}`, 'writer', 'charserial2', `127.0.0.1:${r[4]?.local}`, 'viewer'],
    );
    const listed = (JSON.parse(r[6]?.lines[0] ?? '') as { return: Client[] }).return;
    assert.deepEqual(
      listed.map((c) => [c.id, c.kind, c.role, c.readonly, typeof c.since, c['bytes-missed']]),
      [
        [a.client.id, 'tcp', 'writer', false, 'string', 0],
        [b.client.id, 'tcp', 'viewer', false, 'string', 0],
      ],
    );
    // The viewer takes over: two role events (old writer first), then the answer.
    assert.deepEqual([a.client.id, b.client.id], [1, 2]);
    assert.equal(r[7]?.lines[0], '{"return": {}, "id": "t"}');
    assert.deepEqual(
      r[7]?.events.map((e) => {
        const x = ev(e);
        return [x.event, x.data.id, x.data.client.id, x.data.client.role];
      }),
      [
        ['CHARDEV_CLIENT_ROLE', 'charserial2', a.client.id, 'viewer'],
        ['CHARDEV_CLIENT_ROLE', 'charserial2', b.client.id, 'writer'],
      ],
    );
    assert.deepEqual(
      (JSON.parse(r[8]?.lines[0] ?? '') as { return: Client[] }).return.map((c) => c.role),
      ['viewer', 'writer'],
    );
    const gone = ev(r[10]?.lines[0]);
    assert.deepEqual([gone.event, gone.data.id, gone.data.client.id, gone.data.client.role], ['CHARDEV_CLIENT_DETACHED', 'charserial2', 1, 'viewer']);
    // B left when the Python process that held it exited.
    await waitFor(() => domain?.device('serial2').hub.size === 0, 'the tcp peers to be gone');
    const [counters] = await session(sock, [exec('x-chardev-counters', { id: 'charserial2' })]);
    assert.match(
      counters ?? '',
      /^\{"return": \[\{"label": "charserial2", "bytes-from-guest": \d+, "bytes-to-guest": \d+, "dropped": \d+, "clients": 0\}\]\}$/,
    );
  });

  it('serves several clients at once; garbage or a huge value on one never disturbs another', T, async () => {
    const r = await pyQmp(sock, [
      { connect: 'a' },
      { connect: 'b' },
      { connect: 'c' },
      { conn: 'a', send: exec('qmp_capabilities') },
      { conn: 'b', send: exec('qmp_capabilities') },
      { conn: 'c', send: exec('qmp_capabilities') },
      // Garbage is answered, and the session goes on.
      { conn: 'a', send: '}', read: 1 },
      { conn: 'a', send: exec('query-version', undefined, 'a-still-works') },
      // More than 1 MiB in one value ends that session with an error...
      { conn: 'a', sendRepeat: ['{"execute": "query-version", "id": "', 'x', 2 * 1024 * 1024], read: 0 },
      { conn: 'a', expectEof: true },
      // ...and so does nesting deeper than 1024 levels.
      { conn: 'c', sendRepeat: ['', '[', 2000], read: 0 },
      { conn: 'c', expectEof: true },
      { conn: 'b', send: exec('query-version', undefined, 'b') },
    ]);
    assert.equal(r[6]?.lines[0], err('JSON parse error, expecting value'));
    assert.match(r[7]?.lines[0] ?? '', /"id": "a-still-works"\}$/);
    assert.deepEqual(r[9], {
      lines: [err('JSON token size limit exceeded (a value may have at most 1048576 bytes); closing the connection')],
      events: [],
      eof: true,
    });
    assert.deepEqual(r[11], {
      lines: [err('JSON nesting depth limit exceeded (a value may have at most 1024 levels); closing the connection')],
      events: [],
      eof: true,
    });
    assert.equal(r[12]?.lines[0], '{"return": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "chardev 0.1.0"}, "id": "b"}');
  });

  it('replaces a stale socket, refuses a live one, and removes its socket on close', T, async () => {
    const path2 = path.join(dir, 'second.sock');
    // A socket file nobody listens on: what a killed process leaves behind.
    execFileSync('python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path2]);
    assert.ok(fs.lstatSync(path2).isSocket());
    const d = domain;
    assert.ok(d !== undefined);
    const second = await startQmpServer(d, { path: path2, liveXml: () => '', inactiveXml: () => '', version: '9.9.9' });
    try {
      assert.equal(mode(path2), 0o600);
      const [greeting] = await pyQmp(path2, [{ connect: 'a' }]);
      assert.equal(greeting?.lines[0], GREETING.replace('chardev 0.1.0', 'chardev 9.9.9'));
      await assert.rejects(
        startQmpServer(d, { path: path2, liveXml: () => '', inactiveXml: () => '' }),
        (e: unknown) => e instanceof ChardevError && e.code === 'ERR_BACKEND_BUSY' && /another process is listening/.test(e.message),
      );
      const notSocket = path.join(dir, 'regular');
      fs.writeFileSync(notSocket, 'x');
      await assert.rejects(
        startQmpServer(d, { path: notSocket, liveXml: () => '', inactiveXml: () => '' }),
        (e: unknown) => e instanceof ChardevError && e.code === 'ERR_BACKEND_OPEN',
      );
      assert.equal(fs.readFileSync(notSocket, 'utf8'), 'x');
      // A connected client is disconnected by close.
      const client = net.connect(path2);
      const closed = new Promise<void>((resolve) => client.on('close', () => resolve()));
      client.on('error', () => {});
      await new Promise<void>((resolve) => client.once('data', () => resolve()));
      await second.close();
      await closed;
      assert.equal(fs.existsSync(path2), false);
      await second.close(); // idempotent
    } finally {
      await second.close();
    }
    // The first server is untouched.
    const [v] = await session(sock, [exec('query-version')]);
    assert.match(v ?? '', /^\{"return": \{"qemu"/);
    await waitFor(() => fs.existsSync(sock), 'the main socket');
  });
});
