/**
 * Unauthenticated access to a running domain, tried from outside as docs/reliability.md
 * define it: the control sockets (NAME.qmp, NAME.console), UNIX server sockets, the status
 * file and the logs are owner-only, so another user (`nobody`, through setpriv when the
 * tests run as root) is refused by the kernel; the browser console wants the start's random
 * token on every request and the WebSocket also its own Origin — tried with Python's
 * http.client against a real `chardev run`, on loopback and on a wildcard address.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { q } from '../core/helpers.ts';
import { needs, required } from '../helpers/ci.ts';
import { ChardevRun, runDir, scratchDir, secDomain, Tally } from './helpers.ts';

const T = { timeout: 60000 };
const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim() || 'python3';
/** For another user: a system interpreter it can run (a version manager's lives under $HOME). */
const SYSTEM_PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : PYTHON;
const NOBODY = 65534;

const asRoot = process.getuid?.() === 0 && fs.existsSync('/usr/bin/setpriv');
/** Why the other-user checks cannot run here; under CI that is a failure (.ci/run runs the suite as root). */
const notRoot = (what: string): string | undefined => (asRoot ? undefined : `needs root (and /usr/bin/setpriv) ${what}`);

/** As `nobody`: try each action on a path; prints one JSON object {path: 'ok' | errno name}. */
const PY_PROBE = String.raw`
import errno, json, socket, sys
out = {}
for spec in sys.argv[1:]:
    what, p = spec.split(':', 1)
    try:
        if what == 'connect':
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect(p)
            s.close()
        elif what == 'read':
            open(p, 'rb').read(1)
        elif what == 'list':
            import os
            os.listdir(p)
        out[spec] = 'ok'
    except OSError as e:
        out[spec] = errno.errorcode.get(e.errno, str(e))
print(json.dumps(out), flush=True)
`;

/** Runs `argv` (a Python command line) and parses the one JSON document it prints. */
function pythonJson<T>(argv: readonly string[], what: string, cwd?: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd !== undefined ? { cwd } : {}) });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('close', () => {
      try {
        resolve(JSON.parse(out) as T);
      } catch {
        reject(new Error(`${what} failed: ${err}`));
      }
    });
  });
}

function probeAs(uid: number | undefined, specs: readonly string[]): Promise<Record<string, string>> {
  const argv = uid === undefined ? [SYSTEM_PYTHON] : ['/usr/bin/setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', SYSTEM_PYTHON];
  return pythonJson([...argv, '-c', PY_PROBE, ...specs], 'probe', '/');
}

interface HttpTry {
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly headers?: Record<string, string>;
}

/** Python's http.client: the status line each request gets (101 for a WebSocket handshake that succeeds). */
const PY_HTTP = String.raw`
import http.client, json, sys
out = []
for t in json.loads(sys.argv[1]):
    c = http.client.HTTPConnection(t['host'], t['port'], timeout=5)
    try:
        c.request('GET', t['path'], headers=t.get('headers', {}))
        out.append(c.getresponse().status)
    except Exception as e:
        out.append(type(e).__name__)
    finally:
        c.close()
print(json.dumps(out), flush=True)
`;

function httpStatuses(tries: readonly HttpTry[]): Promise<Array<number | string>> {
  return pythonJson([PYTHON, '-c', PY_HTTP, JSON.stringify(tries)], 'python http.client');
}

const WS_HEADERS = { Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' };

describe('security: control sockets and the browser console refuse unauthenticated access (chardev run)', () => {
  let dir = '';
  let rundir = '';
  const runs: ChardevRun[] = [];
  before(() => {
    dir = scratchDir('access');
    rundir = runDir(dir);
  });
  after(async () => {
    await Promise.all(runs.map((r) => r.stop()));
  });

  /** The web console's token of a running domain, from its status file (as `chardev status` reads it). */
  const tokenOf = (name: string): string => {
    const st = JSON.parse(fs.readFileSync(path.join(rundir, `${name}.json`), 'utf8')) as { webUrl?: string };
    const token = /[?&]token=([A-Za-z0-9_-]+)/.exec(st.webUrl ?? '')?.[1];
    assert.ok(token !== undefined, `a token in ${name}.json: ${String(st.webUrl)}`);
    return token;
  };
  const start = (name: string, devices: string, args: readonly string[] = []): ChardevRun => {
    const file = path.join(dir, `${name}.xml`);
    fs.writeFileSync(file, secDomain(name, devices));
    const r = new ChardevRun(['--run-dir', rundir, '--log-dir', path.join(dir, 'logs'), ...args, file, '--', 'sleep', '60']);
    runs.push(r);
    return r;
  };

  it('another user cannot reach the QMP and console sockets, a UNIX server socket, the status file or the logs', {
    ...T,
    ...needs(notRoot('to act as another user')),
  }, async (t) => {
    required(notRoot('to act as another user'));
    const tally = new Tally();
    // A world-writable directory: only the socket's own mode can keep others out.
    const open = path.join(dir, 'open');
    fs.mkdirSync(open, { mode: 0o777 });
    fs.chmodSync(open, 0o777);
    const sock = path.join(open, 'serial.sock');
    const logFile = path.join(open, 'serial.log');
    const r = start('ctl', `<serial type='unix'><source mode='bind' path='${q(sock)}'/><log file='${q(logFile)}'/></serial><serial type='vc'/>`);
    await r.match(/guest is sleep/, 'the domain to start');
    const qmp = path.join(rundir, 'ctl.qmp');
    const consoleSock = path.join(rundir, 'ctl.console');
    const status = path.join(rundir, 'ctl.json');
    const specs = [`connect:${qmp}`, `connect:${consoleSock}`, `connect:${sock}`, `read:${status}`, `read:${logFile}`, `list:${rundir}`];

    // The owner gets in (the probe works), nobody does not.
    const owner = await probeAs(undefined, specs);
    assert.deepEqual(
      Object.values(owner),
      specs.map(() => 'ok'),
      JSON.stringify(owner),
    );
    const other = await probeAs(NOBODY, specs);
    assert.deepEqual(other, Object.fromEntries(specs.map((s) => [s, 'EACCES'])));
    tally.add('refused to another user (run dir 0700)', specs.length);

    // Even with the run directory opened up, the sockets and the status file themselves are owner-only.
    fs.chmodSync(rundir, 0o755);
    try {
      const inner = [`connect:${qmp}`, `connect:${consoleSock}`, `read:${status}`];
      const again = await probeAs(NOBODY, inner);
      assert.deepEqual(again, Object.fromEntries(inner.map((s) => [s, 'EACCES'])));
      tally.add('refused to another user (run dir opened to 0755)', inner.length);
    } finally {
      fs.chmodSync(rundir, 0o700);
    }
    // The refusals cost the domain nothing: nothing on stderr, QMP still answers its owner.
    assert.equal(r.stderr(), '');
    assert.equal(r.exitCode, undefined);
    tally.report('control sockets and files, other user', (s) => t.diagnostic(s));
  });

  it('a run directory someone else owns, or that others can enter, is refused before anything starts', {
    ...T,
    ...needs(notRoot('to make a directory owned by another user')),
  }, async (t) => {
    required(notRoot('to make a directory owned by another user'));
    const tally = new Tally();
    const file = path.join(dir, 'rd.xml');
    fs.writeFileSync(file, secDomain('rd', `<serial type='null'/>`));
    const theirs = path.join(dir, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o700 });
    fs.chownSync(theirs, NOBODY, NOBODY);
    const shared = path.join(dir, 'shared');
    fs.mkdirSync(shared);
    fs.chmodSync(shared, 0o755);
    for (const d of [theirs, shared]) {
      const r = new ChardevRun(['--run-dir', d, '--log-dir', path.join(dir, 'logs'), file, '--', 'true']);
      assert.equal(await r.exited, 125);
      assert.equal(r.stderr(), `run directory ${d} must be a directory owned by this user with mode 0700\n`);
      assert.deepEqual(fs.readdirSync(d), [], 'no socket or status file was created there');
      tally.add('foreign or open run directory refused');
    }
    tally.report('run directory ownership', (s) => t.diagnostic(s));
  });

  it('browser console: no, wrong or stale token → 401 (pages, files, WebSocket); foreign or missing Origin → 403', T, async (t) => {
    const tally = new Tally();
    const r = start('web', `<serial type='vc'><cd:web listen='127.0.0.1' port='0'/></serial>`);
    const [, port] = await r.match(/web console: http:\/\/127\.0\.0\.1:(\d+)\/console\/serial0 /, 'the console URL');
    // Printed only to a terminal: here (a pipe) it is in the owner-only status file.
    assert.doesNotMatch(r.stdout(), /token=/);
    const token = tokenOf('web');
    const p = Number(port);
    const origin = `http://127.0.0.1:${p}`;
    const wrong = `${token!.slice(0, -1)}${token!.endsWith('A') ? 'B' : 'A'}`;
    const get = (pathname: string, headers: Record<string, string> = {}): HttpTry => ({ host: '127.0.0.1', port: p, path: pathname, headers });
    const ws = (query: string, headers: Record<string, string> = {}): HttpTry => get(`/ws/serial0${query}`, { ...WS_HEADERS, ...headers });

    // The token of an earlier start is no good now: a second domain gets its own.
    const r2 = start('web2', `<serial type='vc'/>`);
    const [, port2] = await r2.match(/web console: http:\/\/127\.0\.0\.1:(\d+)\/console\/serial0 /, 'the second console URL');
    const token2 = tokenOf('web2');
    assert.notEqual(token2, token);
    tally.add('a new token per start');

    const refused: Array<[string, HttpTry, number]> = [
      ['index, no token', get('/'), 401],
      ['console page, no token', get('/console/serial0'), 401],
      ['static file, no token', get('/static/console.js'), 401],
      ['xterm, no token', get('/static/xterm.mjs'), 401],
      ['index, empty token', get('/?token='), 401],
      ['console page, wrong token (same length)', get(`/console/serial0?token=${wrong}`), 401],
      ['console page, token with a suffix', get(`/console/serial0?token=${token}x`), 401],
      ['console page, token prefix', get(`/console/serial0?token=${token!.slice(0, 16)}`), 401],
      ['console page, the other domain’s token', get(`/console/serial0?token=${token2}`), 401],
      ['index, wrong cookie', get('/', { Cookie: `chardev_token_${p}=${wrong}` }), 401],
      ['index, token cookie under another port’s name', get('/', { Cookie: `chardev_token_${port2}=${token}` }), 401],
      ['index, token in a header', get('/', { Authorization: `Bearer ${token}` }), 401],
      ['WebSocket, no token', ws('', { Origin: origin }), 401],
      ['WebSocket, wrong token', ws(`?token=${wrong}`, { Origin: origin }), 401],
      ['WebSocket, foreign Origin', ws(`?token=${token}`, { Origin: 'http://evil.example' }), 403],
      ['WebSocket, DNS-rebound Origin and Host', ws(`?token=${token}`, { Origin: `http://evil.example:${p}`, Host: `evil.example:${p}` }), 403],
      ['WebSocket, another local port as Origin', ws(`?token=${token}`, { Origin: `http://127.0.0.1:${p + 1}` }), 403],
      ['WebSocket, no Origin', ws(`?token=${token}`), 403],
      ['WebSocket, null Origin', ws(`?token=${token}`, { Origin: 'null' }), 403],
    ];
    const allowed: Array<[string, HttpTry, number]> = [
      ['console page with the token', get(`/console/serial0?token=${token}`), 200],
      ['static file with the cookie', get('/static/console.js', { Cookie: `chardev_token_${p}=${token}` }), 200],
      ['WebSocket with the token and own Origin', ws(`?token=${token}`, { Origin: origin }), 101],
    ];
    const all = [...refused, ...allowed];
    const got = await httpStatuses(all.map(([, h]) => h));
    const mismatches = all.flatMap(([what, , want], i) => (got[i] === want ? [] : [`${what}: ${got[i]}, expected ${want}`]));
    assert.deepEqual(mismatches, []);
    tally.add('unauthenticated requests refused', refused.length);
    tally.add('authenticated requests served (controls)', allowed.length);

    // The token is not on any command line or in the environment, where other users could read it.
    for (const pid of [r.pid, r2.pid]) {
      for (const f of ['cmdline', 'environ']) {
        const text = fs.readFileSync(`/proc/${pid}/${f}`, 'latin1');
        assert.ok(!text.includes(token!) && !text.includes(token2!), `/proc/${pid}/${f}`);
        tally.add('token absent from /proc cmdline/environ');
      }
    }
    // Refused requests are not errors of the domain.
    assert.equal(r.stderr(), '');
    tally.report('browser console', (s) => t.diagnostic(s));
  });

  it('browser console on a wildcard address (--web 0.0.0.0:0): reachable from other addresses, still only with the token', T, async (t) => {
    const tally = new Tally();
    const r = start('webany', `<serial type='vc'/>`, ['--web', '0.0.0.0:0']);
    const [, port] = await r.match(/web console: http:\/\/[^:/]+:(\d+)\/console\/serial0 /, 'the console URL');
    const token = tokenOf('webany');
    const p = Number(port);
    const hosts = ['127.0.0.2'];
    for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') hosts.push(a.address);
    const tries: HttpTry[] = [];
    const want: number[] = [];
    for (const host of hosts) {
      const origin = `http://${host}:${p}`;
      tries.push(
        { host, port: p, path: '/' },
        { host, port: p, path: `/console/serial0?token=${token}x` },
        { host, port: p, path: '/ws/serial0', headers: { ...WS_HEADERS, Origin: origin } },
      );
      want.push(401, 401, 401);
      tries.push({ host, port: p, path: `/ws/serial0?token=${token}`, headers: { ...WS_HEADERS, Origin: 'http://evil.example' } });
      want.push(403);
      tries.push(
        { host, port: p, path: `/console/serial0?token=${token}` },
        { host, port: p, path: `/ws/serial0?token=${token}`, headers: { ...WS_HEADERS, Origin: origin } },
      );
      want.push(200, 101);
      tally.add('unauthenticated requests refused', 4);
      tally.add('authenticated requests served (controls)', 2);
    }
    assert.deepEqual(await httpStatuses(tries), want, hosts.join(' '));
    tally.report('browser console on a wildcard address', (s) => t.diagnostic(s));
  });
});
