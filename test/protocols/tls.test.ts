/**
 * x509 credentials in libvirt's layout and real TLS handshakes on 127.0.0.1, with
 * certificates made by the openssl CLI and, once, openssl s_client as the peer.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tls from 'node:tls';
import { ChardevError } from '../../src/errors.ts';
import {
  acceptTls,
  clientTlsOptions,
  connectTls,
  describePeerFailure,
  loadTlsCredentials,
  serverTlsOptions,
  type TlsCredentials,
  type TlsEndpoint,
} from '../../src/protocols/tls.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { waitFor } from '../platform/helpers.ts';

/** Per-test timeout: every test must finish or fail, never hang. */
const T = { timeout: 15000 };
/** Longest any single network step may take before the test fails saying which. */
const STEP_MS = 5000;

function loadError(dir: string, endpoint: TlsEndpoint, verifyPeer: boolean): ChardevError {
  try {
    loadTlsCredentials('charserial0', dir, endpoint, verifyPeer);
  } catch (e) {
    assert.ok(e instanceof ChardevError, `expected a ChardevError, got ${String(e)}`);
    assert.equal(e.code, 'ERR_TLS_CREDENTIALS');
    assert.ok(!e.message.includes('\n'), `one line, no stack: ${e.message}`);
    return e;
  }
  assert.fail(`loading ${dir} as ${endpoint} should have failed`);
}

function withTimeout<V>(p: Promise<V>, what: string, ms = STEP_MS): Promise<V> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface Failure {
  /** The client's port as the server saw it, i.e. what the log line names. */
  readonly port: number | undefined;
  readonly error: unknown;
}

/**
 * A TCP listener that hands each connection to acceptTls, answers the first chunk with
 * `echo:` + chunk and ends the connection; handshake failures are collected.
 */
class EchoServer {
  readonly failures: Failure[] = [];
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();

  private constructor(creds: TlsCredentials, handshakeTimeoutMs: number) {
    this.#server = net.createServer((raw) => {
      this.#sockets.add(raw);
      raw.on('close', () => this.#sockets.delete(raw));
      const port = raw.remotePort;
      acceptTls(creds, raw, { handshakeTimeoutMs }).then(
        (s) => {
          this.#sockets.add(s);
          s.on('error', () => s.destroy());
          s.once('data', (chunk: Buffer) => s.end(Buffer.concat([Buffer.from('echo:'), chunk])));
        },
        (error: unknown) => this.failures.push({ port, error }),
      );
    });
  }

  static async start(creds: TlsCredentials, handshakeTimeoutMs = STEP_MS): Promise<EchoServer> {
    const s = new EchoServer(creds, handshakeTimeoutMs);
    await new Promise<void>((resolve, reject) => {
      s.#server.once('error', reject);
      s.#server.listen(0, '127.0.0.1', () => resolve());
    });
    return s;
  }

  get port(): number {
    const a = this.#server.address();
    assert.ok(a !== null && typeof a === 'object');
    return a.port;
  }

  async nextFailure(): Promise<Failure> {
    const n = this.failures.length;
    await waitFor(() => this.failures.length > n, 'the server to report a failed handshake', STEP_MS);
    const f = this.failures[n];
    assert.ok(f !== undefined);
    return f;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** TCP connect; the socket is registered for destruction at the end of the test. */
function tcpConnect(port: number, sockets: Set<net.Socket>): Promise<net.Socket> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const raw = net.connect(port, '127.0.0.1');
      sockets.add(raw);
      raw.once('connect', () => resolve(raw));
      raw.once('error', reject);
    }),
    `a TCP connection to port ${port}`,
  );
}

interface Conversation {
  readonly data: string;
  readonly error: Error | undefined;
}

/**
 * A client TLS socket whose input, first error and close are recorded from the moment the
 * handshake completes: a refusal can arrive before the test gets round to listening.
 */
class Session {
  readonly socket: tls.TLSSocket;
  readonly #ended: Promise<Conversation>;

  constructor(socket: tls.TLSSocket) {
    this.socket = socket;
    let data = '';
    let error: Error | undefined;
    socket.on('data', (b: Buffer) => (data += b.toString('latin1')));
    socket.on('error', (e) => (error ??= e));
    this.#ended = new Promise((resolve) => socket.once('close', () => resolve({ data, error })));
  }

  /** Send `message` (if still possible), then everything that came back until the close. */
  converse(message: string): Promise<Conversation> {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(Buffer.from(message, 'latin1'));
    return withTimeout(this.#ended, 'the server to answer and close');
  }
}

async function rejection(p: Promise<unknown>): Promise<ChardevError> {
  try {
    await withTimeout(p, 'the handshake to fail');
  } catch (e) {
    assert.ok(e instanceof ChardevError, `expected a ChardevError, got ${String(e)}`);
    return e;
  }
  assert.fail('the handshake should have failed');
}

/** A credentials dir built from files of other dirs: [name in new dir, source path]. */
function assemble(root: string, name: string, files: ReadonlyArray<readonly [string, string]>): string {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  for (const [to, from] of files) fs.copyFileSync(from, path.join(dir, to));
  return dir;
}

// One PKI for the whole file: generated once, removed after the last suite.
let pki: Pki;
before(() => {
  pki = makePki();
});
after(() => pki.cleanup());

describe('TLS credentials (libvirt layout)', () => {
  let scratch = '';
  before(() => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-tls-'));
  });
  after(() => fs.rmSync(scratch, { recursive: true, force: true }));
  const good = (f: string): string => path.join(pki.dir, f);
  const rogue = (f: string): string => path.join(pki.rogueDir, f);

  it('loads a complete server and client directory', () => {
    const server = loadTlsCredentials('charserial0', pki.dir, 'server', true);
    assert.deepEqual(server.files, { caCert: good('ca-cert.pem'), cert: good('server-cert.pem'), key: good('server-key.pem') });
    assert.deepEqual(Object.keys(server.contextOptions).sort(), ['ca', 'cert', 'key']);
    const client = loadTlsCredentials('charserial0', pki.dir, 'client', true);
    assert.deepEqual(client.files, { caCert: good('ca-cert.pem'), cert: good('client-cert.pem'), key: good('client-key.pem') });
    const withCrl = loadTlsCredentials('charserial0', pki.crlDir, 'server', true);
    assert.equal(withCrl.files.caCrl, path.join(pki.crlDir, 'ca-crl.pem'));
  });

  it("a missing directory is QEMU's 'Unable to access credentials' for the first file it needs", () => {
    const dir = path.join(scratch, 'no-such-dir');
    assert.equal(loadError(dir, 'server', true).message, `charserial0: Unable to access credentials ${dir}/ca-cert.pem: No such file or directory`);
    assert.equal(loadError(dir, 'server', false).message, `charserial0: Unable to access credentials ${dir}/server-cert.pem: No such file or directory`);
  });

  it('ca-cert.pem is required with verify-peer, optional without', () => {
    const dir = assemble(scratch, 'no-ca', [
      ['server-cert.pem', good('server-cert.pem')],
      ['server-key.pem', good('server-key.pem')],
    ]);
    assert.equal(loadError(dir, 'server', true).message, `charserial0: Unable to access credentials ${dir}/ca-cert.pem: No such file or directory`);
    const creds = loadTlsCredentials('charserial0', dir, 'server', false);
    assert.equal(creds.files.caCert, undefined);
    assert.equal(serverTlsOptions(creds).requestCert, false);
  });

  it('server endpoint needs server-key.pem; a client without cert and key is fine, but not one without its key', () => {
    const serverDir = assemble(scratch, 'no-server-key', [
      ['ca-cert.pem', good('ca-cert.pem')],
      ['server-cert.pem', good('server-cert.pem')],
    ]);
    assert.equal(
      loadError(serverDir, 'server', true).message,
      `charserial0: Unable to access credentials ${serverDir}/server-key.pem: No such file or directory`,
    );
    const caOnly = assemble(scratch, 'ca-only', [['ca-cert.pem', good('ca-cert.pem')]]);
    assert.deepEqual(loadTlsCredentials('charserial0', caOnly, 'client', true).files, { caCert: path.join(caOnly, 'ca-cert.pem') });
    const certOnly = assemble(scratch, 'client-cert-only', [
      ['ca-cert.pem', good('ca-cert.pem')],
      ['client-cert.pem', good('client-cert.pem')],
    ]);
    assert.equal(
      loadError(certOnly, 'client', true).message,
      `charserial0: Unable to access credentials ${certOnly}/client-key.pem: No such file or directory (client-cert.pem is present and needs it)`,
    );
  });

  it('a key that does not belong to the certificate names both files', () => {
    const dir = assemble(scratch, 'mismatch', [
      ['ca-cert.pem', good('ca-cert.pem')],
      ['server-cert.pem', good('server-cert.pem')],
      ['server-key.pem', rogue('server-key.pem')],
    ]);
    assert.equal(
      loadError(dir, 'server', true).message,
      `charserial0: Cannot load certificate '${dir}/server-cert.pem' & key '${dir}/server-key.pem': The certificate and the given key do not match.`,
    );
  });

  it('garbage or damaged PEM is a one-line error naming the file', () => {
    const dir = assemble(scratch, 'garbage', [
      ['ca-cert.pem', good('ca-cert.pem')],
      ['server-cert.pem', good('server-cert.pem')],
      ['server-key.pem', good('server-key.pem')],
    ]);
    const file = (f: string): string => path.join(dir, f);
    const restore = (f: string): void => fs.copyFileSync(good(f), file(f));

    fs.writeFileSync(file('ca-cert.pem'), 'this is not a certificate\n');
    assert.equal(loadError(dir, 'server', true).message, `charserial0: Unable to import CA certificate list ${file('ca-cert.pem')}: no PEM certificate found`);
    restore('ca-cert.pem');

    // Valid armour, damaged DER inside: OpenSSL's reason is passed on, not a stack trace.
    const pem = fs.readFileSync(good('server-cert.pem'), 'utf8').split('\n');
    pem[3] = 'A'.repeat(pem[3]?.length ?? 64);
    fs.writeFileSync(file('server-cert.pem'), pem.join('\n'));
    assert.match(
      loadError(dir, 'server', true).message,
      new RegExp(`^charserial0: Unable to import server certificate ${file('server-cert.pem')}: [a-z][a-z ]+$`),
    );
    restore('server-cert.pem');

    fs.writeFileSync(file('server-key.pem'), 'garbage\n');
    assert.equal(
      loadError(dir, 'server', true).message,
      `charserial0: Cannot load certificate '${file('server-cert.pem')}' & key '${file('server-key.pem')}': no PEM private key found in ${file('server-key.pem')}`,
    );
    fs.writeFileSync(file('server-key.pem'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
    assert.match(loadError(dir, 'server', true).message, new RegExp(`: ${file('server-key.pem')} is not a valid private key \\([a-z ]+\\)$`));
    restore('server-key.pem');

    fs.writeFileSync(file('ca-crl.pem'), 'not a CRL\n');
    assert.equal(loadError(dir, 'server', true).message, `charserial0: Cannot load CRL '${file('ca-crl.pem')}': Failed to parse CRL`);
  });

  it('a password-protected key is refused with a way out', () => {
    const dir = assemble(scratch, 'encrypted', [
      ['ca-cert.pem', good('ca-cert.pem')],
      ['client-cert.pem', good('client-cert.pem')],
    ]);
    const key = path.join(dir, 'client-key.pem');
    execFileSync('openssl', ['pkey', '-in', good('client-key.pem'), '-aes256', '-passout', 'pass:secret', '-out', key]);
    assert.equal(
      loadError(dir, 'client', true).message,
      `charserial0: Cannot load certificate '${dir}/client-cert.pem' & key '${key}': the key is encrypted with a password, which is not supported; decrypt it with 'openssl pkey -in ${key} -out ${key}'`,
    );
  });

  it("QEMU's sanity checks: our certificate must come from our CA and be meant for our role", () => {
    const foreign = assemble(scratch, 'foreign-server', [
      ['ca-cert.pem', good('ca-cert.pem')],
      ['server-cert.pem', rogue('server-cert.pem')],
      ['server-key.pem', rogue('server-key.pem')],
    ]);
    assert.equal(
      loadError(foreign, 'server', true).message,
      `charserial0: Our own certificate ${foreign}/server-cert.pem failed validation against ${foreign}/ca-cert.pem: The certificate hasn't got a known issuer`,
    );
    const clientAsServer = assemble(scratch, 'client-as-server', [
      ['ca-cert.pem', good('ca-cert.pem')],
      ['server-cert.pem', good('client-cert.pem')],
      ['server-key.pem', good('client-key.pem')],
    ]);
    assert.equal(
      loadError(clientAsServer, 'server', true).message,
      `charserial0: Certificate ${clientAsServer}/server-cert.pem purpose does not allow use with a TLS server`,
    );
    const caAsCa = assemble(scratch, 'leaf-as-ca', [
      ['ca-cert.pem', good('client-cert.pem')],
      ['server-cert.pem', good('server-cert.pem')],
      ['server-key.pem', good('server-key.pem')],
    ]);
    assert.equal(loadError(caAsCa, 'server', true).message, `charserial0: The certificate ${caAsCa}/ca-cert.pem basic constraints do not show a CA`);
  });

  it('options: the wrong endpoint is a usage error; an IP host gets no SNI but is still what the certificate must name', () => {
    const server = loadTlsCredentials('charserial0', pki.dir, 'server', true);
    const client = loadTlsCredentials('charserial0', pki.dir, 'client', true);
    assert.throws(() => serverTlsOptions(client), { code: 'ERR_USAGE', message: 'charserial0: Expected TLS credentials for a server endpoint' });
    assert.throws(() => clientTlsOptions(server, 'localhost'), { code: 'ERR_USAGE', message: 'charserial0: Expected TLS credentials for a client endpoint' });
    assert.deepEqual(
      { requestCert: serverTlsOptions(server).requestCert, rejectUnauthorized: serverTlsOptions(server).rejectUnauthorized },
      { requestCert: true, rejectUnauthorized: true },
    );
    const byIp = clientTlsOptions(client, '127.0.0.1');
    assert.equal(byIp.servername, undefined);
    assert.equal(byIp.rejectUnauthorized, true);
    assert.equal(clientTlsOptions(client, 'localhost').servername, 'localhost');
  });
});

describe('TLS handshakes on 127.0.0.1', () => {
  let scratch = '';
  const sockets = new Set<net.Socket>();
  const servers: EchoServer[] = [];
  before(() => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-tls-'));
  });
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  after(() => fs.rmSync(scratch, { recursive: true, force: true }));

  async function serve(dir: string, verifyPeer = true, handshakeTimeoutMs = STEP_MS): Promise<EchoServer> {
    const s = await EchoServer.start(loadTlsCredentials('charserial0', dir, 'server', verifyPeer), handshakeTimeoutMs);
    servers.push(s);
    return s;
  }

  interface Dialled {
    /** Our side's port, as the server's log line names it. */
    readonly localPort: number | undefined;
    readonly session: Promise<Session>;
  }

  async function dial(server: EchoServer, dir: string, options: { host?: string; verifyPeer?: boolean } = {}): Promise<Dialled> {
    const creds = loadTlsCredentials('charclient0', dir, 'client', options.verifyPeer ?? true);
    const raw = await tcpConnect(server.port, sockets);
    const localPort = raw.localPort;
    const session = connectTls(creds, raw, options.host ?? '127.0.0.1', { handshakeTimeoutMs: STEP_MS }).then((s) => {
      sockets.add(s);
      return new Session(s);
    });
    // Tests that expect a rejection await it later; don't let it count as unhandled meanwhile.
    session.catch(() => {});
    return { localPort, session };
  }

  const established = (d: Dialled): Promise<Session> => withTimeout(d.session, 'the client handshake');

  it('(a) a client with credentials from the same CA: bytes round-trip', T, async () => {
    const server = await serve(pki.dir);
    const session = await established(await dial(server, pki.dir));
    assert.equal(session.socket.authorized, true);
    const bytes = Buffer.from([0, 1, 2, 0x80, 0xff, 10, 13]).toString('latin1');
    const reply = await session.converse(`ping ${bytes}`);
    assert.equal(reply.error, undefined);
    assert.equal(reply.data, `echo:ping ${bytes}`);
    assert.deepEqual(server.failures, []);
  });

  it('(a) the server may be named by a DNS name its certificate lists (sent as SNI)', T, async () => {
    const server = await serve(pki.dir);
    const session = await established(await dial(server, pki.dir, { host: 'localhost' }));
    assert.equal((await session.converse('hi')).data, 'echo:hi');
  });

  it('(b) a client without a certificate is refused by a verifying server, and both ends say why', T, async () => {
    const server = await serve(pki.dir);
    const caOnly = assemble(scratch, 'ca-only', [['ca-cert.pem', pki.caCert]]);
    const dialled = await dial(server, caOnly);
    const failure = await server.nextFailure();
    assert.ok(failure.error instanceof ChardevError);
    assert.equal(failure.error.code, 'ERR_TLS_HANDSHAKE');
    assert.equal(failure.port, dialled.localPort);
    assert.equal(
      failure.error.message,
      `charserial0: TLS handshake with 127.0.0.1:${dialled.localPort} failed: peer did not present a certificate (ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE)`,
    );
    // TLS 1.3: the client completes its side first, then reads the server's alert.
    const reply = await (await established(dialled)).converse('hello?');
    assert.equal(reply.data, '');
    assert.ok(reply.error !== undefined, 'the client must see the refusal');
    assert.equal(describePeerFailure(reply.error), 'peer requires a client certificate and we sent none (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED)');
  });

  it('(b) a server without verify-peer takes a client without a certificate', T, async () => {
    const server = await serve(pki.dir, false);
    const caOnly = assemble(scratch, 'ca-only-noverify', [['ca-cert.pem', pki.caCert]]);
    const session = await established(await dial(server, caOnly));
    assert.equal((await session.converse('anon')).data, 'echo:anon');
  });

  it('(c) a client certificate from another CA is refused: unknown authority', T, async () => {
    const server = await serve(pki.dir);
    // Our loader refuses a cert its own ca-cert.pem did not sign, so this client has no
    // CA at all and does not verify the server: what is tested is the server refusing it.
    const dir = assemble(scratch, 'rogue-client', [
      ['client-cert.pem', path.join(pki.rogueDir, 'client-cert.pem')],
      ['client-key.pem', path.join(pki.rogueDir, 'client-key.pem')],
    ]);
    const dialled = await dial(server, dir, { verifyPeer: false });
    const failure = await server.nextFailure();
    assert.ok(failure.error instanceof ChardevError);
    assert.equal(
      failure.error.message,
      `charserial0: TLS handshake with 127.0.0.1:${dialled.localPort} failed: certificate signed by unknown authority (UNABLE_TO_VERIFY_LEAF_SIGNATURE)`,
    );
    assert.equal((await (await established(dialled)).converse('let me in')).data, '', 'a refused client gets nothing');
  });

  it('(c) a revoked client certificate is refused when ca-crl.pem lists it; others still pass', T, async () => {
    const server = await serve(pki.crlDir);
    const revoked = await dial(server, pki.crlDir);
    const failure = await server.nextFailure();
    assert.ok(failure.error instanceof ChardevError);
    assert.equal(failure.error.message, `charserial0: TLS handshake with 127.0.0.1:${revoked.localPort} failed: certificate has been revoked (CERT_REVOKED)`);
    assert.equal((await (await established(revoked)).converse('x')).data, '');
    const session = await established(await dial(server, pki.dir));
    assert.equal((await session.converse('still fine')).data, 'echo:still fine');
  });

  it('(d) a verifying client refuses a server certificate from another CA, and one not naming the host', T, async () => {
    const rogueServer = await serve(pki.rogueDir, false);
    const e = await rejection((await dial(rogueServer, pki.dir)).session);
    assert.equal(e.code, 'ERR_TLS_HANDSHAKE');
    // The rogue server sends its CA along, hence "self-signed in chain" rather than "leaf".
    assert.equal(
      e.message,
      `charclient0: TLS handshake with 127.0.0.1:${rogueServer.port} failed: certificate signed by unknown authority (SELF_SIGNED_CERT_IN_CHAIN)`,
    );

    const server = await serve(pki.dir);
    const wrongName = await rejection((await dial(server, pki.dir, { host: 'chardev.example' })).session);
    assert.equal(
      wrongName.message,
      `charclient0: TLS handshake with chardev.example:${server.port} failed: certificate does not match the host: Host: chardev.example. is not in the cert's altnames: IP Address:127.0.0.1, DNS:localhost (ERR_TLS_CERT_ALTNAME_INVALID)`,
    );

    // Without verify-peer a client takes any server, as QEMU's verify-peer=off does.
    const session = await established(await dial(rogueServer, pki.dir, { verifyPeer: false }));
    assert.equal(session.socket.authorized, false);
    assert.equal((await session.converse('trusting')).data, 'echo:trusting');
  });

  it('(e) openssl s_client with the libvirt client files talks to the server', T, async () => {
    const server = await serve(pki.dir);
    const child = spawn(
      'openssl',
      [
        's_client',
        '-connect',
        `127.0.0.1:${server.port}`,
        '-CAfile',
        pki.caCert,
        '-cert',
        path.join(pki.dir, 'client-cert.pem'),
        '-key',
        path.join(pki.dir, 'client-key.pem'),
        '-verify_return_error',
        '-verify_ip',
        '127.0.0.1',
        '-quiet',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    try {
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      child.stdin.write('hello from s_client\n');
      // -quiet implies -ign_eof: s_client leaves when the server closes, which ours does after answering.
      const code = await withTimeout(exited, `openssl s_client to exit (stderr: ${stderr})`);
      assert.equal(stdout, 'echo:hello from s_client\n', `stderr: ${stderr}`);
      assert.equal(code, 0, `stderr: ${stderr}`);
      assert.deepEqual(server.failures, []);
    } finally {
      child.stdin.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it('peers that never complete a handshake: silence times out, plain text is not TLS', T, async () => {
    const server = await serve(pki.dir, true, 300);
    const silent = await tcpConnect(server.port, sockets);
    const silentPort = silent.localPort;
    const timedOut = await server.nextFailure();
    assert.ok(timedOut.error instanceof ChardevError);
    assert.equal(timedOut.error.message, `charserial0: TLS handshake with 127.0.0.1:${silentPort} failed: handshake timed out (ERR_TLS_HANDSHAKE_TIMEOUT)`);

    const plain = await tcpConnect(server.port, sockets);
    plain.write('GET / HTTP/1.0\r\n\r\n');
    const notTls = await server.nextFailure();
    assert.ok(notTls.error instanceof ChardevError);
    assert.match(notTls.error.message, /: peer is not speaking TLS \(ERR_SSL_[A-Z_]+\)$/);

    // The client side: a TCP server that accepts and says nothing.
    const mute = net.createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', () => resolve()));
    try {
      const address = mute.address();
      assert.ok(address !== null && typeof address === 'object');
      const raw = await tcpConnect(address.port, sockets);
      const creds = loadTlsCredentials('charclient0', pki.dir, 'client', true);
      const e = await rejection(connectTls(creds, raw, '127.0.0.1', { handshakeTimeoutMs: 300 }));
      assert.equal(e.message, `charclient0: TLS handshake with 127.0.0.1:${address.port} failed: handshake timed out (ERR_TLS_HANDSHAKE_TIMEOUT)`);
      assert.equal(raw.destroyed, true, 'a timed-out handshake leaves no socket open');
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => mute.close(() => resolve()));
    }
  });

  it('describePeerFailure: messages for errors that are hard to provoke here', () => {
    const err = (code: string, message = code): Error => Object.assign(new Error(message), { code });
    assert.equal(describePeerFailure(err('CERT_HAS_EXPIRED')), 'certificate has expired (CERT_HAS_EXPIRED)');
    assert.equal(describePeerFailure(err('ERR_SSL_WRONG_VERSION_NUMBER', 'x')), 'peer is not speaking TLS (ERR_SSL_WRONG_VERSION_NUMBER)');
    assert.equal(
      describePeerFailure(err('ECONNRESET', 'socket hang up')),
      'peer closed the connection during the handshake (it may have rejected our certificate) (ECONNRESET)',
    );
    assert.equal(describePeerFailure(err('ECONNRESET', 'read ECONNRESET')), 'connection reset by peer (ECONNRESET)');
    assert.equal(
      describePeerFailure(
        Object.assign(new Error('error:0A000410:SSL routines::sslv3 alert handshake failure'), { code: 'ERR_SSL_SOMETHING_NEW', reason: 'something new' }),
      ),
      'something new (ERR_SSL_SOMETHING_NEW)',
    );
    assert.equal(describePeerFailure(new Error('plain failure\nsecond line')), 'plain failure');
  });
});
