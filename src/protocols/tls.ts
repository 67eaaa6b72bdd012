/**
 * x509 TLS credentials in libvirt/QEMU's directory layout, and TLS on already-connected
 * TCP sockets with QEMU's tls-creds-x509 semantics.
 *
 * Loading follows qcrypto_tls_creds_x509_load(): which files are required per endpoint,
 * the same sanity checks on our own certificates, and QEMU's error texts where it has one,
 * so a directory QEMU refuses is refused here with the words a libvirt user would search for.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { ChardevError } from '../errors.ts';

export type TlsEndpoint = 'server' | 'client';

/** File names inside a credentials directory, as QEMU's crypto/tlscredsx509.h defines them. */
export const TLS_FILES = {
  caCert: 'ca-cert.pem',
  caCrl: 'ca-crl.pem',
  serverCert: 'server-cert.pem',
  serverKey: 'server-key.pem',
  clientCert: 'client-cert.pem',
  clientKey: 'client-key.pem',
} as const;

/** Absolute paths of the files that were found and loaded. */
export interface TlsFiles {
  readonly caCert?: string;
  readonly caCrl?: string;
  readonly cert?: string;
  readonly key?: string;
}

export interface TlsCredentials {
  /** The chardev id (e.g. `charserial0`), prefixed to every message about these credentials. */
  readonly id: string;
  readonly dir: string;
  readonly endpoint: TlsEndpoint;
  /** QEMU's `verify-peer`: a server requires and checks client certificates; a client checks the server's and its name. */
  readonly verifyPeer: boolean;
  readonly files: TlsFiles;
  /** Built at load time, so every file problem surfaces then rather than at the first connection. */
  readonly secureContext: tls.SecureContext;
  /** What `secureContext` was built from; tls.Server accepts these, not a prebuilt context. */
  readonly contextOptions: Readonly<tls.SecureContextOptions>;
}

export interface HandshakeOptions {
  /** Give up on a peer that has not completed the handshake by then. Default 10 s. */
  readonly handshakeTimeoutMs?: number;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Read and check the credentials for one endpoint, synchronously (chardevs are set up
 * before the guest runs, like QEMU creating its tls-creds object).
 *
 * Deviations from QEMU, all deliberate: without `verifyPeer` a missing ca-cert.pem is
 * accepted (nothing would use it); ca-crl.pem is loaded for clients too (QEMU: servers
 * only); a lone client-cert.pem or client-key.pem is an error (QEMU silently sends no
 * certificate); dh-params.pem is not read, as Node offers no way to validate it and
 * silently ignores a malformed one, while ECDHE makes it unnecessary.
 */
export function loadTlsCredentials(id: string, dir: string, endpoint: TlsEndpoint, verifyPeer: boolean): TlsCredentials {
  const fail = (message: string, cause?: unknown): never => {
    throw new ChardevError('ERR_TLS_CREDENTIALS', `${id}: ${message}`, cause === undefined ? undefined : { cause });
  };
  const isServer = endpoint === 'server';
  const caCertFile = credentialPath(dir, TLS_FILES.caCert, verifyPeer, fail);
  const caCrlFile = credentialPath(dir, TLS_FILES.caCrl, false, fail);
  const certFile = credentialPath(dir, isServer ? TLS_FILES.serverCert : TLS_FILES.clientCert, isServer, fail);
  const keyFile = credentialPath(dir, isServer ? TLS_FILES.serverKey : TLS_FILES.clientKey, isServer, fail);
  if ((certFile === undefined) !== (keyFile === undefined)) {
    const [present, missing] = certFile !== undefined ? [TLS_FILES.clientCert, TLS_FILES.clientKey] : [TLS_FILES.clientKey, TLS_FILES.clientCert];
    fail(`Unable to access credentials ${path.join(dir, missing)}: No such file or directory (${present} is present and needs it)`);
  }

  const caPem = caCertFile === undefined ? undefined : readCredential(caCertFile, fail);
  const cas = caPem === undefined || caCertFile === undefined ? [] : parseCaList(caCertFile, caPem, fail);
  let certPem: string | undefined;
  let keyPem: string | undefined;
  let cert: X509Certificate | undefined;
  if (certFile !== undefined && keyFile !== undefined) {
    certPem = readCredential(certFile, fail);
    keyPem = readCredential(keyFile, fail);
    cert = parseLeaf(certFile, certPem, isServer, fail);
    const key = parseKey(certFile, keyFile, keyPem, fail);
    if (!cert.checkPrivateKey(key)) {
      fail(`Cannot load certificate '${certFile}' & key '${keyFile}': The certificate and the given key do not match.`);
    }
  }
  // QEMU's sanity check order: our certificate, then the CAs, then the two together.
  if (cert !== undefined && certFile !== undefined) checkCert(cert, certFile, endpoint, fail);
  if (caCertFile !== undefined) for (const ca of cas) checkCert(ca, caCertFile, 'CA', fail);
  if (cert !== undefined && caCertFile !== undefined && !cas.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey))) {
    fail(`Our own certificate ${certFile ?? ''} failed validation against ${caCertFile}: The certificate hasn't got a known issuer`);
  }
  const crlPem = caCrlFile === undefined ? undefined : readCredential(caCrlFile, fail);

  const contextOptions: tls.SecureContextOptions = {
    ...(caPem !== undefined ? { ca: caPem } : {}),
    ...(certPem !== undefined && keyPem !== undefined ? { cert: certPem, key: keyPem } : {}),
    ...(crlPem !== undefined ? { crl: crlPem } : {}),
  };
  const secureContext = ((): tls.SecureContext => {
    try {
      return tls.createSecureContext(contextOptions);
    } catch (e) {
      // Certificates and key were parsed above, so what is left to fail is the CRL.
      if (caCrlFile !== undefined) return fail(`Cannot load CRL '${caCrlFile}': ${opensslReason(e)}`, e);
      return fail(`Cannot load credentials from ${dir}: ${opensslReason(e)}`, e);
    }
  })();
  const files: TlsFiles = {
    ...(caCertFile !== undefined ? { caCert: caCertFile } : {}),
    ...(caCrlFile !== undefined ? { caCrl: caCrlFile } : {}),
    ...(certFile !== undefined ? { cert: certFile } : {}),
    ...(keyFile !== undefined ? { key: keyFile } : {}),
  };
  return { id, dir, endpoint, verifyPeer, files, secureContext, contextOptions };
}

/**
 * Options for a tls.Server (never listening; see acceptTls). Not for a bare
 * `new tls.TLSSocket(socket, { isServer: true, ... })`: such a socket ignores
 * `rejectUnauthorized` for a certificate that is present but untrusted and carries on.
 */
export function serverTlsOptions(creds: TlsCredentials): tls.TlsOptions {
  requireEndpoint(creds, 'server');
  return {
    ...creds.contextOptions,
    requestCert: creds.verifyPeer,
    rejectUnauthorized: creds.verifyPeer,
  };
}

/**
 * Options for `tls.connect({ socket, ...clientTlsOptions(creds, host) })`. `host` is what
 * the user asked to connect to; the server certificate must name it (DNS name or IP
 * address), as QEMU checks it against the chardev's host.
 */
export function clientTlsOptions(creds: TlsCredentials, host: string): tls.ConnectionOptions {
  requireEndpoint(creds, 'client');
  return {
    secureContext: creds.secureContext,
    // SNI may not carry an IP address (Node warns); `host` still drives the identity check.
    ...(net.isIP(host) === 0 ? { servername: host } : {}),
    host,
    rejectUnauthorized: creds.verifyPeer,
    checkServerIdentity: (_servername, cert) => tls.checkServerIdentity(host, cert),
  };
}

/**
 * Run the server side of a TLS handshake on an accepted socket. Resolves once the peer is
 * verified (when `verifyPeer`); rejects with ERR_TLS_HANDSHAKE whose message is the log line,
 * e.g. `charserial0: TLS handshake with 127.0.0.1:40000 failed: peer did not present a certificate (…)`.
 */
export function acceptTls(creds: TlsCredentials, socket: net.Socket, options: HandshakeOptions = {}): Promise<tls.TLSSocket> {
  requireEndpoint(creds, 'server');
  const peer = peerName(socket.remoteAddress, socket.remotePort);
  return new Promise((resolve, reject) => {
    // A tls.Server per connection, never listening: only its connection path checks the
    // client's chain and drops untrusted peers (a bare server TLSSocket does not), and it
    // reports every failure through one event, with the socket carrying the reason.
    const server = tls.createServer({
      ...serverTlsOptions(creds),
      handshakeTimeout: options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    });
    server.once('secureConnection', (tlsSocket: tls.TLSSocket) => resolve(tlsSocket));
    server.once('tlsClientError', (err: Error, tlsSocket: tls.TLSSocket) => {
      // A rejected certificate surfaces as "socket hang up"; the real reason is on the socket.
      const authError = authorizationFailure(tlsSocket);
      const cause = authError ?? err;
      tlsSocket.destroy();
      reject(handshakeError(creds.id, peer, cause));
    });
    server.emit('connection', socket);
  });
}

/**
 * Run the client side of a TLS handshake on a connected socket. Under TLS 1.3 a server
 * checks our certificate after this resolves, so a refusal shows up as the connection
 * closing right after, not as a rejection here.
 */
export function connectTls(creds: TlsCredentials, socket: net.Socket, host: string, options: HandshakeOptions = {}): Promise<tls.TLSSocket> {
  requireEndpoint(creds, 'client');
  const peer = peerName(host, socket.remotePort);
  return new Promise((resolve, reject) => {
    const tlsSocket = tls.connect({ ...clientTlsOptions(creds, host), socket });
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    const settle = (err: Error | undefined): void => {
      clearTimeout(timer);
      tlsSocket.off('secureConnect', onSecure);
      tlsSocket.off('error', onError);
      tlsSocket.off('close', onClose);
      if (err === undefined) {
        resolve(tlsSocket);
      } else {
        // Our listener is gone; a late error from the dying socket must not become an uncaught one.
        tlsSocket.on('error', () => {});
        tlsSocket.destroy();
        reject(handshakeError(creds.id, peer, err));
      }
    };
    const onSecure = (): void => settle(undefined);
    const onError = (err: Error): void => settle(err);
    const onClose = (): void => settle(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    const timer = setTimeout(() => settle(Object.assign(new Error('TLS handshake timeout'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' })), timeoutMs);
    tlsSocket.once('secureConnect', onSecure);
    tlsSocket.once('error', onError);
    tlsSocket.once('close', onClose);
  });
}

/** OpenSSL verification results (Node error codes) that all mean "we don't trust who signed it". */
const UNKNOWN_AUTHORITY = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
]);

const NOT_TLS = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'ERR_SSL_HTTP_REQUEST']);

const NOTHING_IN_COMMON = new Set([
  'ERR_SSL_UNSUPPORTED_PROTOCOL',
  'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
  'ERR_SSL_NO_SHARED_CIPHER',
  'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
  'ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM',
]);

const REASONS: Readonly<Record<string, string>> = {
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: 'peer did not present a certificate',
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'peer requires a client certificate and we sent none',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'peer rejected our certificate',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'peer does not trust the authority that signed our certificate',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: 'peer says our certificate has expired',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED: 'peer says our certificate has been revoked',
  ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE: 'peer does not accept our certificate for this use',
  CERT_HAS_EXPIRED: 'certificate has expired',
  CERT_NOT_YET_VALID: 'certificate is not yet valid',
  CERT_REVOKED: 'certificate has been revoked',
  CERT_SIGNATURE_FAILURE: 'certificate signature is invalid',
  INVALID_PURPOSE: 'certificate is not allowed for this use (extendedKeyUsage)',
  UNABLE_TO_GET_CRL: "no CRL from the certificate's issuer in ca-crl.pem",
  CRL_HAS_EXPIRED: 'ca-crl.pem has expired',
  CRL_NOT_YET_VALID: 'ca-crl.pem is not yet valid',
  ERR_TLS_HANDSHAKE_TIMEOUT: 'handshake timed out',
  EPIPE: 'connection closed by peer',
};

/**
 * One line saying why a handshake failed, from the error Node reported (or a verification
 * code from `tlsSocket.authorizationError`), with Node's code in parentheses for searching.
 */
export function describePeerFailure(err: Error): string {
  const code = errorCode(err);
  const reason = ((): string => {
    if (code === undefined) return firstLine(err.message);
    if (UNKNOWN_AUTHORITY.has(code)) return 'certificate signed by unknown authority';
    if (NOT_TLS.has(code)) return 'peer is not speaking TLS';
    if (NOTHING_IN_COMMON.has(code)) return 'no TLS version, cipher or signature algorithm in common with the peer';
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      const detail = 'reason' in err && typeof err.reason === 'string' ? err.reason : firstLine(err.message);
      return `certificate does not match the host: ${detail}`;
    }
    if (code === 'ECONNRESET') {
      // Node's own wording when the peer vanished mid-handshake, which is how a peer that
      // rejects our certificate without a TLS alert (Node does that) looks from here.
      return err.message === 'socket hang up'
        ? 'peer closed the connection during the handshake (it may have rejected our certificate)'
        : 'connection reset by peer';
    }
    return REASONS[code] ?? opensslReason(err);
  })();
  return code === undefined ? reason : `${reason} (${code})`;
}

// ---------------------------------------------------------------------------------------

type Fail = (message: string, cause?: unknown) => never;

/**
 * qcrypto_tls_creds_get_path(): a missing optional file is fine; anything else, even for an
 * optional one (e.g. permission denied), is an error in QEMU's words.
 */
function credentialPath(dir: string, name: string, required: boolean, fail: Fail): string | undefined {
  const file = path.join(dir, name);
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return file;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' && !required) return undefined;
    return fail(`Unable to access credentials ${file}: ${strerror(e)}`, e);
  }
}

function readCredential(file: string, fail: Fail): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    return fail(`Unable to read credentials ${file}: ${strerror(e)}`, e);
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function parseCaList(file: string, pem: string, fail: Fail): X509Certificate[] {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) fail(`Unable to import CA certificate list ${file}: no PEM certificate found`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (e) {
      const which = blocks.length > 1 ? ` (certificate ${i + 1} of ${blocks.length})` : '';
      return fail(`Unable to import CA certificate list ${file}${which}: ${opensslReason(e)}`, e);
    }
  });
}

/** The first certificate is ours; any after it are intermediates sent along with it. */
function parseLeaf(file: string, pem: string, isServer: boolean, fail: Fail): X509Certificate {
  const what = isServer ? 'server' : 'client';
  const block = pem.match(PEM_CERT)?.[0];
  if (block === undefined) return fail(`Unable to import ${what} certificate ${file}: no PEM certificate found`);
  try {
    return new X509Certificate(block);
  } catch (e) {
    return fail(`Unable to import ${what} certificate ${file}: ${opensslReason(e)}`, e);
  }
}

function parseKey(certFile: string, keyFile: string, pem: string, fail: Fail): KeyObject {
  const prefix = `Cannot load certificate '${certFile}' & key '${keyFile}'`;
  // OpenSSL reports a missing passphrase as "interrupted or cancelled"; say what it means.
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(pem)) {
    fail(`${prefix}: the key is encrypted with a password, which is not supported; decrypt it with 'openssl pkey -in ${keyFile} -out ${keyFile}'`);
  }
  if (!/-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/.test(pem)) fail(`${prefix}: no PEM private key found in ${keyFile}`);
  try {
    return createPrivateKey({ key: pem, format: 'pem' });
  } catch (e) {
    return fail(`${prefix}: ${keyFile} is not a valid private key (${opensslReason(e)})`, e);
  }
}

const EKU_SERVER = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT = '1.3.6.1.5.5.7.3.2';
const EKU_ANY = '2.5.29.37.0';

/**
 * qcrypto_tls_creds_check_cert(), minus key usage bits, which Node does not expose (OpenSSL
 * enforces them in the handshake). Unlike QEMU, extendedKeyUsage is enforced even when not
 * critical, because OpenSSL's peer verification does the same and would fail later, vaguely.
 */
function checkCert(cert: X509Certificate, file: string, role: 'CA' | 'server' | 'client', fail: Fail): void {
  const now = Date.now();
  if (Date.parse(cert.validTo) < now) fail(`The ${role} certificate ${file} has expired`);
  if (Date.parse(cert.validFrom) > now) fail(`The ${role} certificate ${file} is not yet active`);
  if (role === 'CA') {
    if (!cert.ca) fail(`The certificate ${file} basic constraints do not show a CA`);
    return;
  }
  if (cert.ca) fail(`The certificate ${file} basic constraints show a CA, but we need one for a ${role}`);
  const purposes = cert.keyUsage;
  const wanted = role === 'server' ? EKU_SERVER : EKU_CLIENT;
  if (purposes !== undefined && purposes.length > 0 && !purposes.includes(wanted) && !purposes.includes(EKU_ANY)) {
    fail(`Certificate ${file} purpose does not allow use with a TLS ${role}`);
  }
}

function requireEndpoint(creds: TlsCredentials, endpoint: TlsEndpoint): void {
  if (creds.endpoint !== endpoint) {
    throw new ChardevError('ERR_USAGE', `${creds.id}: Expected TLS credentials for a ${endpoint} endpoint`);
  }
}

function handshakeError(id: string, peer: string, cause: Error): ChardevError {
  return new ChardevError('ERR_TLS_HANDSHAKE', `${id}: TLS handshake with ${peer} failed: ${describePeerFailure(cause)}`, { cause });
}

/** `authorizationError` is typed as an Error but Node stores the verification code string. */
function authorizationFailure(tlsSocket: tls.TLSSocket): Error | undefined {
  const value: unknown = tlsSocket.authorizationError;
  if (value instanceof Error) return value;
  if (typeof value === 'string' && value !== '') return Object.assign(new Error(value), { code: value });
  return undefined;
}

function peerName(address: string | undefined, port: number | undefined): string {
  const host = address === undefined ? 'unknown peer' : net.isIPv6(address) ? `[${address}]` : address;
  return port === undefined ? host : `${host}:${port}`;
}

function errorCode(err: Error): string | undefined {
  return 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function errnoCode(e: unknown): string | undefined {
  return e instanceof Error ? errorCode(e) : undefined;
}

/** OpenSSL's own short reason ("wrong tag"), without its "error:0680007B:asn1 encoding routines::" prefix. */
function opensslReason(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if ('reason' in e && typeof e.reason === 'string' && e.reason !== '') return e.reason;
  const line = firstLine(e.message);
  const m = /^(?:[0-9A-F]+:)?error:[0-9A-F]+:[^:]*:[^:]*:([^:]+)/.exec(line);
  return m?.[1] ?? line;
}

function firstLine(s: string): string {
  return s.split('\n', 1)[0] ?? s;
}

/** glibc's strerror() text, as QEMU's error_setg_errno() prints it. */
const STRERROR: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  EIO: 'Input/output error',
};

function strerror(e: unknown): string {
  const code = errnoCode(e);
  if (code !== undefined && STRERROR[code] !== undefined) return STRERROR[code];
  return e instanceof Error ? firstLine(e.message) : String(e);
}
