/**
 * Telnet and TLS on the tcp backend, against clients and servers nobody here wrote: Python's
 * `socket` and `ssl` modules, inetutils' `telnet`, `openssl s_client` and `openssl s_server`.
 * Certificates come from test/helpers/pki.ts (made by the openssl CLI).
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { open, type Domain } from '../../src/index.ts';
import { ChardevError, ConfigError } from '../../src/errors.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { Proc } from '../helpers/proc.ts';
import { PyPeer, STREAM_PEER } from './python-peer.ts';
import { T, collect, domainXml, eventLog, q, tmpDir, waitFor } from '../core/helpers.ts';

/** QEMU's telnet greeting: IAC WILL ECHO, IAC WILL SGA, IAC WILL BINARY, IAC DO BINARY. */
const GREETING_HEX = 'fffb01fffb03fffb00fffd00';

// --- domains -----------------------------------------------------------------------------

/** A tcp serial device: `<source …attrs/>`, `<protocol type=…/>`, then `extra`. */
function tcpXml(sourceAttrs: string, protocol: string, extra = ''): string {
  return domainXml(`<serial type='tcp'><source ${sourceAttrs}/><protocol type='${protocol}'/>${extra}</serial>`);
}

const bindAttrs = (service: number | string = 0): string => `mode='bind' host='127.0.0.1' service='${service}'`;
const connectAttrs = (port: number, tls = ''): string => `mode='connect' host='127.0.0.1' service='${port}'${tls === '' ? '' : ` tls='${tls}'`}`;

function portOf(d: Domain): number {
  const s = d.liveState().boundServices?.get('serial0');
  assert.ok(s !== undefined, 'serial0 has a bound service');
  return Number(s);
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Resolves with the connect error code, or 'connected'. */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve('connected');
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** Consecutive data entries merged, so chunking on the wire does not matter. */
function merged(log: readonly string[]): string[] {
  const out: string[] = [];
  for (const e of log) {
    const last = out[out.length - 1];
    if (e.startsWith('data ') && last?.startsWith('data ')) out[out.length - 1] = last + e.slice(5);
    else out.push(e);
  }
  return out;
}

describe('telnet and TLS with real peers (python, telnet, openssl)', () => {
  let pki: Pki;
  let scratch = '';
  const procs = new Set<Proc | PyPeer>();
  const domains = new Set<Domain>();
  const track = <P extends Proc | PyPeer>(p: P): P => {
    procs.add(p);
    return p;
  };
  const started = async (...args: Parameters<typeof open>): Promise<Domain> => {
    const d = await open(...args);
    domains.add(d);
    return d;
  };
  const good = (f: string): string => path.join(pki.dir, f);
  const rogue = (f: string): string => path.join(pki.rogueDir, f);

  /** s_client with the good CA; `cert` picks the client certificate (none: no -cert). */
  const sClient = (port: number, cert: 'good' | 'rogue' | 'none'): Proc => {
    const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', good('ca-cert.pem'), '-quiet'];
    if (cert !== 'none') {
      const f = cert === 'good' ? good : rogue;
      args.push('-cert', f('client-cert.pem'), '-key', f('client-key.pem'));
    }
    return track(new Proc(`s_client(${cert})`, 'openssl', args));
  };
  /** Python's socket (and ssl, given the CA and client files) as the far end: test/backends/python-peer.ts. */
  const pyTcp = (...args: string[]): PyPeer => track(new PyPeer(STREAM_PEER, ['tcp', ...args]));
  const pyTls = (port: number): PyPeer => pyTcp('connect', String(port), good('ca-cert.pem'), good('client-cert.pem'), good('client-key.pem'));
  const pyPlain = (port: number): PyPeer => pyTcp('connect', String(port));

  before(() => {
    pki = makePki();
    scratch = tmpDir('telnet-tls');
  });
  afterEach(async () => {
    await Promise.all([...procs].map((p) => p.kill()));
    procs.clear();
    await Promise.all([...domains].map((d) => d.stop()));
    domains.clear();
  });
  after(() => {
    fs.rmSync(scratch, { recursive: true, force: true });
    pki.cleanup();
  });

  it('telnet server, byte-exact with python: greeting first, IAC stripped, FF FF, ordered BREAK, FF out un-doubled', T, async () => {
    const d = await started(tcpXml(bindAttrs(), 'telnet'));
    const dev = d.device('serial0');
    const port = portOf(d);
    assert.equal(dev.filename, `disconnected:telnet:127.0.0.1:${port},server=on`);
    assert.equal(dev.where, `charserial0: listening on telnet:127.0.0.1:${port}`);
    const log: string[] = [];
    dev.on('data', (b) => log.push(`data ${b.toString('hex')}`));
    dev.on('break', () => log.push('break'));
    dev.on('close', () => log.push('close'));
    // Output with nobody connected is dropped, never queued for the next client.
    assert.equal(dev.write(Buffer.from('early')), 5);
    dev.on('open', () => {
      log.push('open');
      dev.write(Buffer.from([0x67, 0xff, 0x68]));
    });

    const py = pyPlain(port);
    const local = (await py.line()).split(' ')[1];
    assert.equal(await py.cmd('recv 15 5'), `got ${GREETING_HEX}67ff68`, 'the 12 greeting bytes, then the guest bytes with FF not doubled');
    assert.equal(await py.cmd('quiet 0.2'), 'none', 'nothing else: no early bytes, no answers');
    assert.equal(dev.filename, `telnet:127.0.0.1:${port},server=on <-> 127.0.0.1:${local}`);

    assert.equal(await py.cmd('send 61fffd0162'), 'sent');
    await waitFor(() => merged(log).join('|') === 'open|data 6162', `guest input 'ab', log ${JSON.stringify(log)}`);
    assert.equal(await py.cmd('send ffff'), 'sent');
    await waitFor(() => merged(log).join('|') === 'open|data 6162ff', `guest input FF, log ${JSON.stringify(log)}`);
    assert.equal(await py.cmd('send 78fff379'), 'sent');
    await waitFor(() => log.includes('break') && merged(log).at(-1) === 'data 79', `break and 'y', log ${JSON.stringify(log)}`);
    assert.deepEqual(merged(log), ['open', 'data 6162ff78', 'break', 'data 79'], 'data before the BREAK is delivered first');

    assert.equal(await py.cmd('close'), 'closed');
    await waitFor(() => log.includes('close'), 'close after the client left');
    assert.equal(dev.filename, `disconnected:telnet:127.0.0.1:${port},server=on`);
  });

  it("inetutils telnet (/usr/bin/telnet) negotiates as QEMU's console expects; its replies never reach the guest", T, async () => {
    const d = await started(tcpXml(bindAttrs(), 'telnet'));
    const dev = d.device('serial0');
    const port = portOf(d);
    const events = eventLog(dev);
    const input = collect(dev);
    dev.on('open', () => dev.write(Buffer.from('guest says hi\r\n')));
    // telnet reads its commands from a pipe just as well as from a tty.
    const tel = track(new Proc('telnet', 'telnet', []));
    tel.child.stdin.write(`toggle options\nopen 127.0.0.1 ${port}\n`);
    await tel.until(() => tel.text.includes('guest says hi') && tel.text.includes('SENT WILL BINARY'), 'negotiation and guest output at telnet');
    assert.deepEqual(events, ['open']);
    // Every line telnet prints about the greeting, in the greeting's order, each answered.
    const negotiation = tel.text
      .split(/\r?\n/)
      .map((l) => l.replace(/\r$/, ''))
      .filter((l) => /^(RCVD|SENT) /.test(l));
    assert.deepEqual(negotiation.slice(0, 8), [
      'RCVD WILL ECHO',
      'SENT DO ECHO',
      'RCVD WILL SUPPRESS GO AHEAD',
      'SENT DO SUPPRESS GO AHEAD',
      'RCVD WILL BINARY',
      'SENT DO BINARY',
      'RCVD DO BINARY',
      'SENT WILL BINARY',
    ]);
    assert.match(tel.text, /Connected to 127\.0\.0\.1\./);

    // Its replies went out before the typed line (one TCP stream): if only the line arrives, they were stripped.
    tel.child.stdin.write('typed line\n');
    await waitFor(() => input.bytes().includes(0x0a), 'the typed line at the guest');
    const got = input.bytes();
    assert.equal(got.includes(0xff), false, `no telnet command bytes reach the guest: ${got.toString('hex')}`);
    assert.equal(got.toString('latin1').replace(/[\r\n\0]+$/, ''), 'typed line');

    tel.child.stdin.end();
    if (!(await tel.waitExit(3000))) await tel.kill();
    await waitFor(() => events.includes('close'), 'close once telnet is gone');
  });

  it('telnet client mode (python server): no negotiation sent, IAC bytes raw both ways, no BREAK', T, async () => {
    const py = pyTcp('listen', '0');
    const port = Number((await py.line()).split(' ')[1]);
    const d = await started(tcpXml(connectAttrs(port), 'telnet'));
    const dev = d.device('serial0');
    const breaks: number[] = [];
    dev.on('break', () => breaks.push(1));
    const input = collect(dev);
    const accepted = await py.cmd('accept 5');
    const local = accepted.split(' ')[1];
    assert.ok(dev.isOpen);
    assert.equal(dev.filename, `telnet:127.0.0.1:${local} <-> 127.0.0.1:${port}`);
    assert.equal(await py.cmd('quiet 0.3'), 'none', 'a telnet client sends no greeting');
    assert.equal(dev.write(Buffer.from('fffb01fffd0078', 'hex')), 7);
    assert.equal(await py.cmd('recv 7 5'), 'got fffb01fffd0078');
    assert.equal(await py.cmd('send 61fff362ffff63fffd01'), 'sent');
    await waitFor(() => input.bytes().length === 10, 'raw bytes at the guest');
    assert.equal(input.bytes().toString('hex'), '61fff362ffff63fffd01');
    assert.deepEqual(breaks, []);
  });

  it('TLS server with openssl s_client and the libvirt client files: open only after the handshake, bytes both ways', T, async () => {
    const errors: ChardevError[] = [];
    const d = await started(tcpXml(bindAttrs(), 'tls'), { load: { tlsCertDir: pki.dir }, onError: (e) => errors.push(e) });
    const dev = d.device('serial0');
    const port = portOf(d);
    const events = eventLog(dev);
    const input = collect(dev);
    assert.equal(dev.where, `charserial0: listening on tls:127.0.0.1:${port}`);

    // A TCP connection that never starts TLS does not open the device; leaving is not an error.
    const raw = net.connect({ host: '127.0.0.1', port });
    raw.on('error', () => {});
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    await sleep(300);
    assert.equal(events.length, 0, 'no open before the handshake');
    assert.equal(dev.filename, `disconnected:tcp:127.0.0.1:${port},server=on`);
    raw.destroy();

    const sc = sClient(port, 'good');
    await sc.until(() => events.includes('open'), 'open after the TLS handshake');
    assert.match(dev.filename, new RegExp(`^tcp:127\\.0\\.0\\.1:${port},server=on <-> 127\\.0\\.0\\.1:\\d+$`));
    assert.equal(dev.write(Buffer.from('hello over tls\n')), 15);
    await sc.until(() => sc.text.includes('hello over tls\n'), 'guest bytes at s_client');
    assert.equal(sc.text, 'hello over tls\n', 's_client -quiet prints only the data on stdout');
    sc.child.stdin.write('from s_client\n');
    await sc.until(() => input.bytes().toString() === 'from s_client\n', 's_client bytes at the guest');
    assert.match(sc.stderr, /depth=0 CN = localhost\nverify return:1/);
    await sc.kill();
    await waitFor(() => events.includes('close'), 'close after s_client left');
    assert.deepEqual(events, ['open', 'close']);
    assert.deepEqual(
      errors.map((e) => e.message),
      [],
      'a peer that leaves before TLS starts is not reported',
    );
  });

  it('TLS server refuses a client without a certificate and one from another CA, says why once each, keeps serving', T, async () => {
    const domainErrors: ChardevError[] = [];
    const d = await started(tcpXml(bindAttrs(), 'tls'), { load: { tlsCertDir: pki.dir }, onError: (e) => domainErrors.push(e) });
    const dev = d.device('serial0');
    const port = portOf(d);
    const events = eventLog(dev);
    const input = collect(dev);

    // No device 'error' listener yet: the report goes to the domain's onError.
    const nocert = sClient(port, 'none');
    nocert.child.stdin.write('let me in\n');
    await nocert.until(() => domainErrors.length === 1, 'the refusal reported through onError');
    if (!(await nocert.waitExit(3000))) await nocert.kill();
    const e1 = domainErrors[0]!;
    assert.ok(e1 instanceof ChardevError);
    assert.equal(e1.code, 'ERR_TLS_HANDSHAKE');
    assert.match(
      e1.message,
      /^charserial0: TLS handshake with 127\.0\.0\.1:\d+ failed: peer did not present a certificate \(ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE\)$/,
    );
    assert.match(nocert.stderr, /tlsv13 alert certificate required/, 's_client is told why');

    // With a listener on the device, the report goes there instead.
    const devErrors: ChardevError[] = [];
    dev.on('error', (e) => devErrors.push(e));
    const bad = sClient(port, 'rogue');
    bad.child.stdin.write('let me in\n');
    await bad.until(() => devErrors.length === 1, "the refusal reported through the device's 'error'");
    if (!(await bad.waitExit(3000))) await bad.kill();
    const e2 = devErrors[0]!;
    assert.equal(e2.code, 'ERR_TLS_HANDSHAKE');
    assert.match(
      e2.message,
      /^charserial0: TLS handshake with 127\.0\.0\.1:\d+ failed: certificate signed by unknown authority \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)$/,
    );

    await sleep(100);
    assert.equal(domainErrors.length, 1, 'each refusal reported once');
    assert.equal(devErrors.length, 1, 'each refusal reported once');
    assert.equal(events.length, 0, 'refused clients never open the device');
    assert.equal(input.bytes().length, 0, 'nothing a refused client sent reaches the guest');

    const ok = sClient(port, 'good');
    await ok.until(() => events.includes('open'), 'a good client right after is served');
    ok.child.stdin.write('ok\n');
    await ok.until(() => input.bytes().toString() === 'ok\n', 'its bytes at the guest');
    dev.write(Buffer.from('welcome\n'));
    await ok.until(() => ok.text === 'welcome\n', 'guest bytes at the good client');
  });

  it("verify='no' (per device, <cd:tls>) and tlsVerify:false (run-wide) take a client without a certificate", T, async () => {
    const missing = path.join(scratch, 'not-used');
    // The per-device directory wins over the run-wide one, which does not even exist.
    const perDevice = await started(tcpXml(bindAttrs(), 'tls', `<cd:tls dir='${q(pki.dir)}' verify='no'/>`), { load: { tlsCertDir: missing } });
    const runWide = await started(tcpXml(bindAttrs(), 'tls'), { load: { tlsCertDir: pki.dir, tlsVerify: false } });
    for (const [name, d] of [
      ['<cd:tls verify=no>', perDevice],
      ['tlsVerify:false', runWide],
    ] as const) {
      const dev = d.device('serial0');
      const events = eventLog(dev);
      const input = collect(dev);
      const sc = sClient(portOf(d), 'none');
      await sc.until(() => events.includes('open'), `${name}: open for a client without a certificate`);
      sc.child.stdin.write('anon\n');
      await sc.until(() => input.bytes().toString() === 'anon\n', `${name}: bytes at the guest`);
      dev.write(Buffer.from('hi anon\n'));
      await sc.until(() => sc.text === 'hi anon\n', `${name}: bytes at s_client`);
      await sc.kill();
    }
  });

  it('telnets server: the 12 greeting bytes arrive inside TLS (s_client, python ssl); IAC handling inside TLS', T, async () => {
    const d = await started(tcpXml(bindAttrs(), 'telnets'), { load: { tlsCertDir: pki.dir } });
    const dev = d.device('serial0');
    const port = portOf(d);
    assert.equal(dev.where, `charserial0: listening on telnets:127.0.0.1:${port}`);
    assert.equal(dev.filename, `disconnected:telnet:127.0.0.1:${port},server=on`);
    const log: string[] = [];
    dev.on('data', (b) => log.push(`data ${b.toString('hex')}`));
    dev.on('break', () => log.push('break'));
    dev.on('open', () => log.push('open'));
    dev.on('close', () => log.push('close'));

    const sc = sClient(port, 'good');
    await sc.until(() => sc.stdout.length >= 12, 'the greeting at s_client');
    await waitFor(() => log.includes('open'), 'open after TLS and the greeting');
    dev.write(Buffer.from('after'));
    await sc.until(() => sc.stdout.length >= 17, 'guest bytes after the greeting');
    assert.equal(sc.stdout.toString('hex'), `${GREETING_HEX}${Buffer.from('after').toString('hex')}`);
    await sc.kill();
    await waitFor(() => log.includes('close'), 'close after s_client left');

    const py = pyTls(port);
    const local = (await py.line()).split(' ')[1];
    assert.equal(await py.cmd('recv 12 5'), `got ${GREETING_HEX}`);
    await waitFor(() => log.filter((e) => e === 'open').length === 2, 'open for python');
    assert.equal(dev.filename, `telnet:127.0.0.1:${port},server=on <-> 127.0.0.1:${local}`);
    assert.equal(await py.cmd('send 61fffd0162ffff63fff364'), 'sent');
    await waitFor(() => merged(log).at(-1) === 'data 64', `input through TLS, log ${JSON.stringify(log)}`);
    assert.deepEqual(merged(log), ['open', 'close', 'open', 'data 6162ff63', 'break', 'data 64']);
  });

  it('TLS client mode against openssl s_server -Verify 1: connects at start, mutual TLS, bytes both ways', T, async () => {
    const ss = track(
      new Proc('s_server', 'openssl', [
        's_server',
        '-accept',
        '127.0.0.1:0',
        '-cert',
        good('server-cert.pem'),
        '-key',
        good('server-key.pem'),
        '-CAfile',
        good('ca-cert.pem'),
        '-Verify',
        '1',
        '-naccept',
        '1',
      ]),
    );
    await ss.until(() => /ACCEPT 127\.0\.0\.1:\d+/.test(ss.text), 's_server listening');
    const port = Number(/ACCEPT 127\.0\.0\.1:(\d+)/.exec(ss.text)![1]);
    const d = await started(tcpXml(connectAttrs(port, 'yes'), 'raw'), { load: { tlsCertDir: pki.dir } });
    const dev = d.device('serial0');
    const input = collect(dev);
    assert.ok(dev.isOpen, 'connected when open() resolved');
    assert.match(dev.filename, new RegExp(`^tcp:127\\.0\\.0\\.1:\\d+ <-> 127\\.0\\.0\\.1:${port}$`));
    assert.equal(dev.where, `charserial0: client of tls:127.0.0.1:${port}`);
    dev.write(Buffer.from('hello s_server\n'));
    await ss.until(() => ss.text.includes('hello s_server\n'), 'guest bytes at s_server');
    assert.match(ss.stderr, /depth=0 CN = chardev test client\nverify return:1/, 's_server verified our client certificate');
    ss.child.stdin.write('hi guest\n');
    await ss.until(() => input.bytes().toString() === 'hi guest\n', 's_server bytes at the guest');
  });

  it(
    "TLS client mode against an s_server with the rogue CA's certificate: start fails, naming the reason; verify='no' on a client is refused before connecting",
    T,
    async () => {
      /** s_server with the rogue server certificate, trusting (and requiring) our good client certificate. */
      const rogueServer = async (): Promise<{ ss: Proc; port: number }> => {
        const ss = track(
          new Proc('s_server', 'openssl', [
            's_server',
            '-accept',
            '127.0.0.1:0',
            '-cert',
            rogue('server-cert.pem'),
            '-key',
            rogue('server-key.pem'),
            '-CAfile',
            good('ca-cert.pem'),
            '-Verify',
            '1',
            '-naccept',
            '1',
          ]),
        );
        await ss.until(() => /ACCEPT 127\.0\.0\.1:\d+/.test(ss.text), 's_server listening');
        return { ss, port: Number(/ACCEPT 127\.0\.0\.1:(\d+)/.exec(ss.text)![1]) };
      };
      const first = await rogueServer();
      // tlsVerify (qemu.conf's chardev_tls_x509_verify) is about clients of our servers; it does not stop this check.
      await assert.rejects(started(tcpXml(connectAttrs(first.port), 'tls'), { load: { tlsCertDir: pki.dir, tlsVerify: false } }), (e: unknown) => {
        assert.ok(e instanceof ChardevError);
        assert.equal(e.code, 'ERR_CONNECT');
        assert.equal(
          e.message,
          `charserial0: TLS handshake with 127.0.0.1:${first.port} failed: certificate signed by unknown authority (UNABLE_TO_VERIFY_LEAF_SIGNATURE)`,
        );
        return true;
      });

      // QEMU's client endpoint always verifies, and so does chardev's: verify='no' on a client is a
      // configuration error, refused before anything connects.
      const second = await rogueServer();
      await assert.rejects(
        started(tcpXml(connectAttrs(second.port), 'tls', `<cd:tls dir='${q(pki.dir)}' verify='no'/>`), { load: { tlsVerify: false } }),
        (e: unknown) => {
          assert.ok(e instanceof ConfigError);
          assert.equal(e.code, 'ERR_CONFIG_UNSUPPORTED');
          assert.match(
            e.message,
            /^<string>:\d+: <serial type='tcp'> \(serial0\): verify='no' in <cd:tls> is for TLS servers only: a TLS client always verifies the server's certificate, as QEMU's does$/,
          );
          return true;
        },
      );
      await sleep(300);
      assert.equal(second.ss.exitCode, undefined, 's_server (-naccept 1) still waits: nobody connected');
      assert.doesNotMatch(second.ss.text + second.ss.stderr, /CONNECTION|ERROR|depth=/);
    },
  );

  it("a missing credentials directory fails the start with QEMU's words; nothing is left listening or connected", T, async () => {
    const missing = path.join(scratch, 'no-such-dir');
    const port = await freePort();
    await assert.rejects(started(tcpXml(bindAttrs(port), 'tls'), { load: { tlsCertDir: missing } }), (e: unknown) => {
      assert.ok(e instanceof ChardevError);
      assert.equal(e.code, 'ERR_TLS_CREDENTIALS');
      assert.equal(e.message, `charserial0: Unable to access credentials ${missing}/ca-cert.pem: No such file or directory`);
      return true;
    });
    assert.equal(await tryConnect(port), 'ECONNREFUSED');

    // A device started before the failing one is stopped again: its port is free.
    const plainPort = await freePort();
    const two = domainXml(
      `<serial type='tcp'><source ${bindAttrs(plainPort)}/><protocol type='raw'/></serial>\n` +
        `<serial type='tcp'><source ${bindAttrs(0)}/><protocol type='telnets'/><cd:tls dir='${q(missing)}'/></serial>`,
    );
    await assert.rejects(started(two, { load: { tlsCertDir: pki.dir } }), {
      code: 'ERR_TLS_CREDENTIALS',
      message: `charserial1: Unable to access credentials ${missing}/ca-cert.pem: No such file or directory`,
    });
    assert.equal(await tryConnect(plainPort), 'ECONNREFUSED');

    // A client fails before it dials.
    let dialled = 0;
    const listener = net.createServer((s) => {
      dialled++;
      s.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    try {
      const lport = (listener.address() as net.AddressInfo).port;
      await assert.rejects(started(tcpXml(connectAttrs(lport, 'yes'), 'raw'), { load: { tlsCertDir: missing } }), {
        code: 'ERR_TLS_CREDENTIALS',
        message: `charserial0: Unable to access credentials ${missing}/ca-cert.pem: No such file or directory`,
      });
      await sleep(50);
      assert.equal(dialled, 0);
    } finally {
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    }
  });

  it("tlsDefault (chardev's --tls): TLS without tls='yes'; plain clients get nothing; tls='no' opts out", T, async () => {
    const errors: ChardevError[] = [];
    const d = await started(tcpXml(bindAttrs(), 'telnet'), { load: { tlsCertDir: pki.dir, tlsDefault: true }, onError: (e) => errors.push(e) });
    const dev = d.device('serial0');
    const port = portOf(d);
    const events = eventLog(dev);
    assert.equal(dev.where, `charserial0: listening on telnets:127.0.0.1:${port}`);

    // Without TLS a telnet server would greet at once.
    const plain = pyPlain(port);
    await plain.line();
    assert.equal(await plain.cmd('quiet 0.4'), 'none', 'a plain client gets no greeting');
    assert.equal(await plain.cmd('close'), 'closed');
    // Plain text where a ClientHello belongs is refused and reported.
    const talker = pyPlain(port);
    await talker.line();
    assert.equal(await talker.cmd('send 68656c6c6f0d0a'), 'sent');
    await waitFor(() => errors.length === 1, 'plain text reported');
    assert.match(errors[0]!.message, /^charserial0: TLS handshake with 127\.0\.0\.1:\d+ failed: peer is not speaking TLS \(ERR_SSL_\w+\)$/);
    assert.equal(await talker.cmd('quiet 2'), 'got EOF', 'and dropped');

    const sc = sClient(port, 'good');
    await sc.until(() => sc.stdout.length >= 12, 'greeting inside TLS');
    assert.equal(sc.stdout.toString('hex'), GREETING_HEX);
    await waitFor(() => events.includes('open'), 'open for s_client');
    await sc.kill();
    assert.equal(errors.length, 1, 'a silent plain client that left was not reported');

    // tls='no' on the source overrides the run-wide default.
    const optOut = await started(tcpXml(`${bindAttrs()} tls='no'`, 'telnet'), { load: { tlsCertDir: pki.dir, tlsDefault: true } });
    assert.equal(optOut.device('serial0').where, `charserial0: listening on telnet:127.0.0.1:${portOf(optOut)}`);
    const py = pyPlain(portOf(optOut));
    await py.line();
    assert.equal(await py.cmd('recv 12 5'), `got ${GREETING_HEX}`);
  });
});
