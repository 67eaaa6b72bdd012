/**
 * Real x509 credentials for TLS tests, made by the openssl CLI rather than by our own
 * code, so a test never checks our loader against certificates our loader's author shaped.
 * Directories follow libvirt/QEMU's layout (ca-cert.pem, server-cert.pem, ...).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface Pki {
  /** Temp root holding everything below; removed by cleanup(). */
  readonly root: string;
  /** The good CA's libvirt directory: ca-cert.pem, server-{cert,key}.pem, client-{cert,key}.pem. */
  readonly dir: string;
  /** Same file names, every certificate (ca-cert.pem included) from a different CA. */
  readonly rogueDir: string;
  /**
   * The good CA plus ca-crl.pem revoking this directory's client-cert.pem; its server
   * certificate is the one in `dir` and is not revoked.
   */
  readonly crlDir: string;
  /** The good CA's certificate, i.e. `${dir}/ca-cert.pem`. */
  readonly caCert: string;
  /** Wall-clock milliseconds the openssl runs took. */
  readonly generationMs: number;
  /** Remove the temp root; later makePki() calls generate afresh. Idempotent. */
  cleanup(): void;
}

let cached: Pki | undefined;

/** The process's PKI, generated on first use. */
export function makePki(): Pki {
  cached ??= generate();
  return cached;
}

// A minimal config: without it `openssl req` pulls in the system openssl.cnf, whose default
// v3 sections would add extensions we don't control and collide with ours.
const REQ_CNF = `[req]
distinguished_name = dn
prompt = no
[dn]
`;

const CA_EXT = `basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
`;

// keyEncipherment means nothing for EC keys, but QEMU refuses a critical keyUsage without it.
const SERVER_EXT = `basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

const CLIENT_EXT = `basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

function openssl(args: readonly string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 });
  } catch (e) {
    const stderr = e instanceof Error && 'stderr' in e ? String(e.stderr) : '';
    throw new Error(`openssl ${args.join(' ')} failed: ${stderr || String(e)}`);
  }
}

/** Random, so certificates of the two CAs never share a serial (the CRL revokes by serial). */
function serial(): string {
  return `0x${randomBytes(8).toString('hex').replace(/^0/, '1')}`;
}

const NEW_P256_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-noenc'] as const;

function newCa(cn: string, keyFile: string, certFile: string, cwd: string): void {
  openssl(
    [
      'req',
      '-config',
      'req.cnf',
      '-x509',
      ...NEW_P256_KEY,
      '-keyout',
      keyFile,
      '-subj',
      `/CN=${cn}`,
      '-days',
      '3650',
      '-sha256',
      '-extensions',
      'ca_ext',
      '-out',
      certFile,
    ],
    cwd,
  );
}

/**
 * One openssl run per leaf: openssl 3's `req -x509 -CA` makes the key and signs it without
 * a CSR. Returns the serial as given to openssl, for the CRL index.
 */
function newLeaf(cn: string, ext: 'server_ext' | 'client_ext', ca: { cert: string; key: string }, keyFile: string, certFile: string, cwd: string): string {
  const s = serial();
  openssl(
    [
      'req',
      '-config',
      'req.cnf',
      '-x509',
      ...NEW_P256_KEY,
      '-keyout',
      keyFile,
      '-subj',
      `/CN=${cn}`,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-set_serial',
      s,
      '-days',
      '825',
      '-sha256',
      '-extensions',
      ext,
      '-out',
      certFile,
    ],
    cwd,
  );
  return s;
}

/**
 * `openssl ca -gencrl` reads revocations from a database; writing its index by hand
 * avoids having `openssl ca` issue (and so own) the certificates it revokes.
 */
function newCrl(ca: { cert: string; key: string }, revokedSerial: string, out: string, cwd: string): void {
  const hex = BigInt(revokedSerial).toString(16).toUpperCase();
  const evenHex = hex.length % 2 === 0 ? hex : `0${hex}`;
  const stamp = (d: Date): string => `${d.toISOString().replace(/[-:T]/g, '').slice(2, 14)}Z`;
  const now = new Date();
  const expiry = new Date(now.getTime() + 825 * 86400_000);
  fs.writeFileSync(path.join(cwd, 'index.txt'), `R\t${stamp(expiry)}\t${stamp(now)}\t${evenHex}\tunknown\t/CN=revoked client\n`);
  fs.writeFileSync(path.join(cwd, 'crlnumber'), '01\n');
  fs.writeFileSync(
    path.join(cwd, 'ca.cnf'),
    `[ca]
default_ca = test_ca
[test_ca]
database = index.txt
crlnumber = crlnumber
certificate = ${ca.cert}
private_key = ${ca.key}
default_md = sha256
default_crl_days = 30
`,
  );
  openssl(['ca', '-config', 'ca.cnf', '-gencrl', '-out', out], cwd);
}

function generate(): Pki {
  const started = performance.now();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-pki-'));
  let removed = false;
  const cleanup = (): void => {
    if (removed) return;
    removed = true;
    fs.rmSync(root, { recursive: true, force: true });
    if (cached?.root === root) cached = undefined;
  };
  // A test that forgets cleanup() (or a crash) must not leave CA keys in /tmp.
  process.once('exit', cleanup);
  try {
    const work = path.join(root, 'work');
    const dir = path.join(root, 'good');
    const rogueDir = path.join(root, 'rogue');
    const crlDir = path.join(root, 'crl');
    for (const d of [work, dir, rogueDir, crlDir]) fs.mkdirSync(d);
    fs.writeFileSync(path.join(work, 'req.cnf'), `${REQ_CNF}[ca_ext]\n${CA_EXT}[server_ext]\n${SERVER_EXT}[client_ext]\n${CLIENT_EXT}`);

    const good = { cert: path.join(dir, 'ca-cert.pem'), key: path.join(work, 'ca-key.pem') };
    newCa('chardev test CA', good.key, good.cert, work);
    newLeaf('localhost', 'server_ext', good, path.join(dir, 'server-key.pem'), path.join(dir, 'server-cert.pem'), work);
    newLeaf('chardev test client', 'client_ext', good, path.join(dir, 'client-key.pem'), path.join(dir, 'client-cert.pem'), work);

    const rogue = { cert: path.join(rogueDir, 'ca-cert.pem'), key: path.join(work, 'rogue-ca-key.pem') };
    newCa('chardev rogue CA', rogue.key, rogue.cert, work);
    newLeaf('localhost', 'server_ext', rogue, path.join(rogueDir, 'server-key.pem'), path.join(rogueDir, 'server-cert.pem'), work);
    newLeaf('chardev rogue client', 'client_ext', rogue, path.join(rogueDir, 'client-key.pem'), path.join(rogueDir, 'client-cert.pem'), work);

    for (const f of ['ca-cert.pem', 'server-cert.pem', 'server-key.pem']) fs.copyFileSync(path.join(dir, f), path.join(crlDir, f));
    const revoked = newLeaf('revoked client', 'client_ext', good, path.join(crlDir, 'client-key.pem'), path.join(crlDir, 'client-cert.pem'), work);
    newCrl(good, revoked, path.join(crlDir, 'ca-crl.pem'), work);

    return { root, dir, rogueDir, crlDir, caCert: good.cert, generationMs: Math.round(performance.now() - started), cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

/** Credentials outside their validity period, signed by the good CA (libvirt layout, `ca-cert.pem` the good CA). */
export interface DatedPki {
  /** client-cert.pem and server-cert.pem expired on 2020-02-01. */
  readonly expiredDir: string;
  /** client-cert.pem and server-cert.pem valid only from 2099-01-01. */
  readonly futureDir: string;
}

let datedCache: { root: string; dated: DatedPki } | undefined;

/**
 * Expired and not-yet-valid certificates from the good CA of `pki`. OpenSSL 3.0's `req`
 * and `x509` take only `-days` (from now), so these come from `openssl ca` with explicit
 * `-startdate`/`-enddate`, its database in the work directory (no faketime needed).
 */
export function makeDatedPki(pki: Pki): DatedPki {
  if (datedCache?.root === pki.root && fs.existsSync(pki.root)) return datedCache.dated;
  const work = path.join(pki.root, 'work');
  const ca = { cert: pki.caCert, key: path.join(work, 'ca-key.pem') };
  const dbDir = path.join(work, 'dated-ca');
  fs.mkdirSync(dbDir, { recursive: true });
  fs.writeFileSync(path.join(dbDir, 'index.txt'), '');
  fs.writeFileSync(
    path.join(dbDir, 'ca.cnf'),
    `[ca]
default_ca = dated
[dated]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[server_ext]
${SERVER_EXT}[client_ext]
${CLIENT_EXT}`,
  );
  const make = (dir: string, start: string, end: string): void => {
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(pki.caCert, path.join(dir, 'ca-cert.pem'));
    for (const [who, cn, ext] of [
      ['server', 'localhost', 'server_ext'],
      ['client', 'chardev test client', 'client_ext'],
    ] as const) {
      const csr = path.join(dbDir, `${path.basename(dir)}-${who}.csr`);
      openssl(
        ['req', '-config', path.join(work, 'req.cnf'), '-new', ...NEW_P256_KEY, '-keyout', path.join(dir, `${who}-key.pem`), '-subj', `/CN=${cn}`, '-out', csr],
        dbDir,
      );
      fs.writeFileSync(path.join(dbDir, 'serial'), `${serial().slice(2)}\n`);
      openssl(
        [
          'ca',
          '-config',
          'ca.cnf',
          '-batch',
          '-notext',
          '-cert',
          ca.cert,
          '-keyfile',
          ca.key,
          '-in',
          csr,
          '-out',
          path.join(dir, `${who}-cert.pem`),
          '-startdate',
          start,
          '-enddate',
          end,
          '-extensions',
          ext,
        ],
        dbDir,
      );
    }
  };
  const dated: DatedPki = { expiredDir: path.join(pki.root, 'expired'), futureDir: path.join(pki.root, 'future') };
  make(dated.expiredDir, '20200101000000Z', '20200201000000Z');
  make(dated.futureDir, '20990101000000Z', '20991231000000Z');
  datedCache = { root: pki.root, dated };
  return dated;
}
