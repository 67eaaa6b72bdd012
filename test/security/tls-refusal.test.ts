/**
 * TLS refusals as a user sees them: a real `chardev run` serving TLS, and real clients
 * (openssl s_client, Python's ssl) with no certificate, one from another CA, an expired
 * one, one not yet valid, a revoked one and a server certificate used as a client's. Each
 * is refused, the reason is one line on chardev's stderr, nothing reaches the guest, and
 * the device serves a good client right after. The other way round, chardev as a TLS
 * client refuses openssl s_server with an expired or foreign certificate, naming why.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeDatedPki, makePki, type DatedPki, type Pki } from '../helpers/pki.ts';
import { q } from '../core/helpers.ts';
import { ChardevRun, runDir, scratchDir, secDomain, Tally } from './helpers.ts';

const T = { timeout: 60000 };
const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim() || 'python3';

/** Python's ssl as a client: verifies the server with CA, presents CERT/KEY unless '-', sends TEXT, reports what came back. */
const PY_TLS_CLIENT = String.raw`
import json, socket, ssl, sys
port, ca, cert, key, text = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
if cert != '-':
    ctx.load_cert_chain(cert, key)
s = socket.create_connection(('127.0.0.1', port), timeout=5)
out = {}
try:
    t = ctx.wrap_socket(s, server_hostname='127.0.0.1')
    out['handshake'] = t.version()
    t.sendall(text.encode())
    got = b''
    while text.encode() not in got:
        c = t.recv(4096)
        if not c:
            out['eof'] = True
            break
        got += c
    out['got'] = got.decode('latin1')
except (ssl.SSLError, OSError) as e:
    out['error'] = getattr(e, 'reason', None) or str(e)
print(json.dumps(out), flush=True)
`;

interface PyResult {
  readonly handshake?: string;
  readonly got?: string;
  readonly eof?: boolean;
  readonly error?: string;
}

function pyTlsClient(port: number, ca: string, cert: string | undefined, key: string | undefined, text: string): Promise<PyResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ['-c', PY_TLS_CLIENT, String(port), ca, cert ?? '-', key ?? '-', text], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
    child.once('close', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out) as PyResult);
      } catch {
        reject(new Error(`python ssl client: no result (stdout ${JSON.stringify(out)}, stderr ${JSON.stringify(err)})`));
      }
    });
  });
}

interface SClientResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** openssl s_client sending `text`, until it has seen `text` echoed or `ms` passed. */
function sClient(port: number, ca: string, cert: string | undefined, key: string | undefined, text: string, ms = 4000): Promise<SClientResult> {
  return new Promise((resolve) => {
    const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', ca, '-verify_return_error', '-quiet'];
    if (cert !== undefined && key !== undefined) args.push('-cert', cert, '-key', key);
    const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdin.on('error', () => {});
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString('latin1');
      if (stdout.includes(text)) child.kill('SIGTERM');
    });
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdin.write(text);
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('close', () => {
      clearTimeout(timer);
      resolve({ stdout, stderr });
    });
  });
}

describe('security: TLS clients with bad certificates are refused with the reason logged (chardev run)', () => {
  let pki: Pki;
  let dated: DatedPki;
  let dir = '';
  let rundir = '';
  const runs: ChardevRun[] = [];

  before(() => {
    pki = makePki();
    dated = makeDatedPki(pki);
    dir = scratchDir('tls');
    rundir = runDir(dir);
  });
  after(async () => {
    await Promise.all(runs.map((r) => r.stop()));
    pki.cleanup();
  });

  const start = (name: string, devices: string, args: readonly string[] = []): ChardevRun => {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(file, secDomain(name, devices));
    const r = new ChardevRun(['--run-dir', rundir, '--log-dir', path.join(dir, 'logs'), ...args, file, '--', 'cat']);
    runs.push(r);
    return r;
  };

  it('TLS server: 12 bad clients refused (s_client and python ssl), each reason one stderr line; good clients served after', T, async (t) => {
    const tally = new Tally();
    const good = (f: string): string => path.join(pki.dir, f);
    // serial0 verifies against the good CA; serial1 also has the CRL revoking crlDir's client certificate.
    const r = start(
      'tlssrv',
      `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='tls'/><cd:tls dir='${q(pki.dir)}'/></serial>
<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='tls'/><cd:tls dir='${q(pki.crlDir)}'/></serial>`,
      ['--attach', 'serial0', '--attach', 'serial1'],
    );
    const port = Number((await r.match(/charserial0: listening on tls:127\.0\.0\.1:(\d+)/, 'serial0 listening'))[1]);
    const crlPort = Number((await r.match(/charserial1: listening on tls:127\.0\.0\.1:(\d+)/, 'serial1 listening'))[1]);
    await r.match(/guest is cat/, 'the guest to start');

    interface Bad {
      readonly what: string;
      readonly port: number;
      readonly cert?: string;
      readonly key?: string;
      readonly reason: string;
    }
    const bad: Bad[] = [
      { what: 'no certificate', port, reason: 'peer did not present a certificate (ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE)' },
      {
        what: 'certificate from another CA',
        port,
        cert: path.join(pki.rogueDir, 'client-cert.pem'),
        key: path.join(pki.rogueDir, 'client-key.pem'),
        reason: 'certificate signed by unknown authority (UNABLE_TO_VERIFY_LEAF_SIGNATURE)',
      },
      {
        what: 'expired certificate',
        port,
        cert: path.join(dated.expiredDir, 'client-cert.pem'),
        key: path.join(dated.expiredDir, 'client-key.pem'),
        reason: 'certificate has expired (CERT_HAS_EXPIRED)',
      },
      {
        what: 'not yet valid certificate',
        port,
        cert: path.join(dated.futureDir, 'client-cert.pem'),
        key: path.join(dated.futureDir, 'client-key.pem'),
        reason: 'certificate is not yet valid (CERT_NOT_YET_VALID)',
      },
      {
        what: 'server certificate used by a client',
        port,
        cert: good('server-cert.pem'),
        key: good('server-key.pem'),
        reason: 'certificate is not allowed for this use (extendedKeyUsage) (INVALID_PURPOSE)',
      },
      {
        what: 'revoked certificate',
        port: crlPort,
        cert: path.join(pki.crlDir, 'client-cert.pem'),
        key: path.join(pki.crlDir, 'client-key.pem'),
        reason: 'certificate has been revoked (CERT_REVOKED)',
      },
    ];
    const refusalLines = (): string[] =>
      r
        .stderr()
        .split('\n')
        .filter((l) => /TLS handshake with/.test(l));
    let expected = 0;
    for (const b of bad) {
      const id = b.port === port ? 'charserial0' : 'charserial1';
      const line = new RegExp(`^${id}: TLS handshake with 127\\.0\\.0\\.1:\\d+ failed: ${b.reason.replace(/[()]/g, '\\$&')}$`);

      const sc = await sClient(b.port, pki.caCert, b.cert, b.key, `s_client ${b.what}\n`);
      expected++;
      await r.until(() => refusalLines().length === expected, `the refusal of s_client (${b.what}) on stderr`);
      assert.match(refusalLines().at(-1)!, line, `s_client with ${b.what}`);
      assert.equal(sc.stdout, '', `s_client with ${b.what} gets nothing from the guest`);
      assert.match(sc.stderr, /alert|error|errno=/i, `s_client with ${b.what} is told: ${sc.stderr}`);
      tally.add('refused (openssl s_client)');

      const py = await pyTlsClient(b.port, pki.caCert, b.cert, b.key, `python ${b.what}\n`);
      expected++;
      await r.until(() => refusalLines().length === expected, `the refusal of python ssl (${b.what}) on stderr`);
      assert.match(refusalLines().at(-1)!, line, `python ssl with ${b.what}`);
      assert.equal(py.got ?? '', '', `python ssl with ${b.what} gets nothing: ${JSON.stringify(py)}`);
      assert.ok(py.error !== undefined || py.eof === true, `python ssl with ${b.what} sees the refusal: ${JSON.stringify(py)}`);
      tally.add('refused (python ssl)');
      tally.add('reason checked on stderr', 2);
    }
    assert.equal(refusalLines().length, 2 * bad.length, `each refusal reported exactly once:\n${r.stderr()}`);
    // Every stderr line so far is a refusal: nothing else went wrong (no stack trace, no noise).
    assert.deepEqual(
      r
        .stderr()
        .split('\n')
        .filter((l) => l !== '' && !/TLS handshake with/.test(l)),
      [],
    );

    // The devices keep serving: good clients get their bytes echoed by the guest (cat).
    const okS = await sClient(port, pki.caCert, good('client-cert.pem'), good('client-key.pem'), 'good s_client\n');
    assert.equal(okS.stdout, 'good s_client\n', okS.stderr);
    const okPy = await pyTlsClient(port, pki.caCert, good('client-cert.pem'), good('client-key.pem'), 'good python\n');
    assert.equal(okPy.got, 'good python\n', JSON.stringify(okPy));
    const okCrl = await pyTlsClient(crlPort, pki.caCert, good('client-cert.pem'), good('client-key.pem'), 'not revoked\n');
    assert.equal(okCrl.got, 'not revoked\n', JSON.stringify(okCrl));
    tally.add('good client served after refusals', 3);
    // Nothing a refused client sent ever reached the guest: cat would have echoed it to the good clients.
    assert.doesNotMatch(okS.stdout + (okPy.got ?? '') + (okCrl.got ?? ''), /s_client (no|cert|exp)|python (no|cert|exp)/);
    assert.equal(refusalLines().length, 2 * bad.length);
    assert.equal(r.exitCode, undefined, 'chardev run is still running');
    tally.report('TLS server refusals', (s) => t.diagnostic(s));
  });

  it('TLS client: chardev refuses servers with an expired, not-yet-valid or foreign certificate, naming why', T, async (t) => {
    const tally = new Tally();
    /** openssl s_server with `certDir`'s server certificate, requiring our (good) client certificate. */
    const sServer = async (certDir: string): Promise<{ port: number; kill: () => void }> => {
      const child = spawn(
        'openssl',
        [
          's_server',
          '-accept',
          '127.0.0.1:0',
          '-cert',
          path.join(certDir, 'server-cert.pem'),
          '-key',
          path.join(certDir, 'server-key.pem'),
          '-CAfile',
          pki.caCert,
          '-Verify',
          '1',
        ],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      child.stdin.on('error', () => {});
      const deadline = Date.now() + 5000;
      while (!/ACCEPT 127\.0\.0\.1:\d+/.test(out)) {
        if (Date.now() > deadline) throw new Error(`s_server did not start: ${err}`);
        await new Promise((res) => setTimeout(res, 20));
      }
      return { port: Number(/ACCEPT 127\.0\.0\.1:(\d+)/.exec(out)![1]), kill: () => child.kill('SIGKILL') };
    };
    const client = (port: number, extra = ''): string =>
      `<serial type='tcp'><source mode='connect' host='127.0.0.1' service='${port}'>${extra}</source><protocol type='tls'/><cd:tls dir='${q(pki.dir)}'/></serial>`;

    const cases = [
      { what: 'expired', dir: dated.expiredDir, reason: 'certificate has expired (CERT_HAS_EXPIRED)' },
      { what: 'not yet valid', dir: dated.futureDir, reason: 'certificate is not yet valid (CERT_NOT_YET_VALID)' },
      { what: 'another CA', dir: pki.rogueDir, reason: 'certificate signed by unknown authority (UNABLE_TO_VERIFY_LEAF_SIGNATURE)' },
    ];
    for (const c of cases) {
      const ss = await sServer(c.dir);
      try {
        // Without reconnect the start fails: one line, exit status 125 (chardev's own failure), the guest never runs.
        const r = start(`tlscli${cases.indexOf(c)}`, client(ss.port));
        assert.equal(await r.exited, 125, r.stderr());
        assert.equal(r.stderr(), `charserial0: TLS handshake with 127.0.0.1:${ss.port} failed: ${c.reason}\n`, `server with a certificate: ${c.what}`);
        assert.doesNotMatch(r.stdout(), /guest is/);
        tally.add('server refused by chardev (start fails)');
      } finally {
        ss.kill();
      }
    }

    // With reconnect the domain runs and says why once per failing streak, not once per try.
    const ss = await sServer(dated.expiredDir);
    try {
      const r = start('tlsrecon', client(ss.port, "<reconnect enabled='yes' timeout='1'/>"));
      await r.match(/guest is cat/, 'the domain to start');
      const line = `Unable to connect character device charserial0: TLS handshake with 127.0.0.1:${ss.port} failed: certificate has expired (CERT_HAS_EXPIRED)`;
      await r.until(() => r.stderr().includes(line), 'the refusal on stderr');
      // Three more tries at 1 s intervals: still one line.
      await new Promise((res) => setTimeout(res, 3500));
      assert.equal(r.stderr(), `${line}\n`);
      tally.add('server refused by chardev (reconnect, reported once)');
      await r.stop();
    } finally {
      ss.kill();
    }

    // Our own expired server certificate does not start at all (QEMU's own-certificate check).
    const own = start(
      'tlsown',
      `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='tls'/><cd:tls dir='${q(dated.expiredDir)}'/></serial>`,
    );
    assert.equal(await own.exited, 125);
    assert.equal(own.stderr(), `charserial0: The server certificate ${dated.expiredDir}/server-cert.pem has expired\n`);
    tally.add('own expired certificate refused at start');
    tally.report('TLS client refusals', (s) => t.diagnostic(s));
  });
});
