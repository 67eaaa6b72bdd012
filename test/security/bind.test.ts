/**
 * Nothing binds beyond the configured address, checked from outside the process: the
 * socket inodes in /proc/PID/fd of a real `chardev run`, looked up in /proc/net/{tcp,tcp6,
 * udp,udp6,unix}, must be exactly the configured listeners (no 0.0.0.0, no ::, no extra
 * port, no extra UNIX path), plus the connections the domain itself makes; and connecting
 * to the same ports on the machine's other addresses is refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as dgram from 'node:dgram';
import { spawn } from 'node:child_process';
import { open } from '../../src/index.ts';
import { domainXml, q } from '../core/helpers.ts';
import { ChardevRun, runDir, scratchDir, secDomain, Tally } from './helpers.ts';

const T = { timeout: 60000 };

interface InetSocket {
  readonly proto: 'tcp' | 'tcp6' | 'udp' | 'udp6';
  readonly local: string;
  readonly remote: string;
  /** TCP: LISTEN, ESTABLISHED, …; UDP: UNCONN or ESTABLISHED (connected). */
  readonly state: string;
  readonly inode: string;
}

const TCP_STATES: Readonly<Record<string, string>> = { '01': 'ESTABLISHED', '06': 'TIME_WAIT', '07': 'CLOSE', '08': 'CLOSE_WAIT', '0A': 'LISTEN' };

/** `0100007F:1F90` → `127.0.0.1:8080`; IPv6 as `[::1]:8080` (four little-endian words). */
function decodeAddress(hex: string): string {
  const [addr = '', port = ''] = hex.split(':');
  const p = parseInt(port, 16);
  if (addr.length === 8) {
    const b = Buffer.from(addr, 'hex').reverse();
    return `${[...b].join('.')}:${p}`;
  }
  const bytes = Buffer.alloc(16);
  for (let w = 0; w < 4; w++)
    Buffer.from(addr.slice(w * 8, w * 8 + 8), 'hex')
      .reverse()
      .copy(bytes, w * 4);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // The URL parser compresses it the canonical way, brackets included.
  const host = new URL(`http://[${groups.join(':')}]/`).hostname;
  return `${host}:${p}`;
}

function inetSockets(): InetSocket[] {
  const out: InetSocket[] = [];
  for (const proto of ['tcp', 'tcp6', 'udp', 'udp6'] as const) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/net/${proto}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const st = f[3] ?? '';
      const state = proto.startsWith('udp') ? (st === '01' ? 'ESTABLISHED' : 'UNCONN') : (TCP_STATES[st] ?? st);
      out.push({ proto, local: decodeAddress(f[1] ?? ''), remote: decodeAddress(f[2] ?? ''), state, inode: f[9] ?? '' });
    }
  }
  return out;
}

interface UnixSocket {
  readonly inode: string;
  readonly listening: boolean;
  readonly path: string | undefined;
}

function unixSockets(): UnixSocket[] {
  return fs
    .readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 7)
    .map((f) => ({ inode: f[6] ?? '', listening: ((parseInt(f[3] ?? '0', 16) >> 16) & 1) === 1, path: f[7] }));
}

/** The socket inodes a process holds. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m !== null) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = net.connect({ host, port });
    c.setTimeout(2000, () => {
      c.destroy();
      resolve('timeout');
    });
    c.once('connect', () => {
      c.destroy();
      resolve('connected');
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** The machine's own addresses other than loopback (where a wildcard bind would also answer). */
function otherAddresses(): string[] {
  const out = ['127.0.0.2'];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal) continue;
      if (a.family === 'IPv6' && a.address.startsWith('fe80')) continue; // needs a scope id
      out.push(a.address);
    }
  }
  return out;
}

const hasIpv6Loopback = ((): boolean => {
  try {
    return /^0{31}1 /m.test(fs.readFileSync('/proc/net/if_inet6', 'utf8'));
  } catch {
    return false;
  }
})();

describe('security: chardev run binds only where the configuration says (seen from /proc)', () => {
  let dir = '';
  let rundir = '';
  const closers: Array<() => unknown> = [];
  before(() => {
    dir = scratchDir('bind');
    rundir = runDir(dir);
  });
  after(async () => {
    for (const c of closers.reverse()) await c();
  });

  it('the /proc reader itself sees a wildcard listener (negative control)', T, async () => {
    const any4 = net.createServer();
    await new Promise<void>((resolve) => any4.listen(0, '0.0.0.0', resolve));
    const servers = [any4];
    if (hasIpv6Loopback) {
      const any6 = net.createServer();
      await new Promise<void>((resolve) => any6.listen({ port: 0, host: '::', ipv6Only: true }, resolve));
      servers.push(any6);
    }
    try {
      const mine = socketInodes(process.pid);
      const seen = inetSockets()
        .filter((s) => mine.has(s.inode) && s.state === 'LISTEN')
        .map((s) => s.local);
      for (const srv of servers) {
        const a = srv.address() as net.AddressInfo;
        assert.ok(seen.includes(a.family === 'IPv6' ? `[::]:${a.port}` : `0.0.0.0:${a.port}`), `${JSON.stringify(a)} in ${seen.join(' ')}`);
      }
    } finally {
      await Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
    }
  });

  it('listeners are exactly the configured tcp/udp/unix/web addresses; other local addresses are refused', T, async (t) => {
    const tally = new Tally();
    // A server for the tcp client device to connect to, and a UDP peer.
    const upstream = net.createServer((s) => s.on('error', () => {}));
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => upstream.close(() => resolve())));
    const upstreamPort = (upstream.address() as net.AddressInfo).port;
    const udpPeer = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udpPeer.bind(0, '127.0.0.1', resolve));
    closers.push(() => {
      udpPeer.close();
    });
    const udpPeerPort = udpPeer.address().port;

    const sock = path.join(dir, 'serial.sock');
    const v6 = hasIpv6Loopback ? `<serial type='tcp'><source mode='bind' host='::1' service='0'/><protocol type='raw'/></serial>` : '';
    const file = path.join(dir, 'bind.xml');
    fs.writeFileSync(
      file,
      secDomain(
        'bind',
        `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='telnet'/></serial>
<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/></serial>
<serial type='udp'><source mode='bind' host='127.0.0.1' service='0'/><source mode='connect' host='127.0.0.1' service='${udpPeerPort}'/></serial>
<serial type='tcp'><source mode='connect' host='127.0.0.1' service='${upstreamPort}'/><protocol type='raw'/></serial>
<serial type='unix'><source mode='bind' path='${q(sock)}'/></serial>
<serial type='vc'><cd:web listen='127.0.0.1' port='0'/></serial>
${v6}`,
      ),
    );
    const r = new ChardevRun(['--run-dir', rundir, '--log-dir', path.join(dir, 'logs'), file, '--', 'sleep', '60']);
    closers.push(() => r.stop());
    await r.match(/guest is sleep/, 'the domain to start');
    const out = r.stdout();
    const telnetPort = Number(/charserial0: listening on telnet:127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
    const rawPort = Number(/charserial1: listening on tcp:127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
    const udpPort = Number(/charserial2: udp 127\.0\.0\.1:(\d+) -> /.exec(out)?.[1]);
    const webPort = Number(/web console: http:\/\/127\.0\.0\.1:(\d+)\//.exec(out)?.[1]);
    const v6Port = hasIpv6Loopback ? Number(/charserial6: listening on tcp:\[::1\]:(\d+)/.exec(out)?.[1]) : undefined;
    for (const p of [telnetPort, rawPort, udpPort, webPort, ...(v6Port === undefined ? [] : [v6Port])]) assert.ok(p > 0, out);

    const mine = socketInodes(r.pid);
    const inet = inetSockets().filter((s) => mine.has(s.inode));
    const unix = unixSockets().filter((s) => mine.has(s.inode));

    const listeners = inet
      .filter((s) => s.state === 'LISTEN')
      .map((s) => `${s.proto} ${s.local}`)
      .sort();
    const expectedListeners = [
      `tcp 127.0.0.1:${telnetPort}`,
      `tcp 127.0.0.1:${rawPort}`,
      `tcp 127.0.0.1:${webPort}`,
      ...(v6Port === undefined ? [] : [`tcp6 [::1]:${v6Port}`]),
    ].sort();
    assert.deepEqual(listeners, expectedListeners, 'TCP listeners');
    tally.add('TCP listeners matched', expectedListeners.length);
    const udp = inet.filter((s) => s.proto.startsWith('udp')).map((s) => `${s.local} -> ${s.remote} ${s.state}`);
    assert.deepEqual(udp, [`127.0.0.1:${udpPort} -> 127.0.0.1:${udpPeerPort} ESTABLISHED`], 'the one UDP socket, bound and connected as configured');
    tally.add('UDP sockets matched');
    const connections = inet.filter((s) => s.proto.startsWith('tcp') && s.state !== 'LISTEN').map((s) => `${s.remote}`);
    assert.deepEqual(connections, [`127.0.0.1:${upstreamPort}`], 'the only TCP connection is the tcp client device’s');
    tally.add('outgoing TCP connections matched');
    const wildcard = inet.filter((s) => /^(0\.0\.0\.0|\[::\]):/.test(s.local));
    assert.deepEqual(wildcard, [], 'nothing bound to a wildcard address');

    const unixPaths = unix
      .filter((s) => s.listening)
      .map((s) => s.path)
      .sort();
    assert.deepEqual(unixPaths, [sock, path.join(rundir, 'bind.console'), path.join(rundir, 'bind.qmp')].sort(), 'UNIX listeners');
    tally.add('UNIX listeners matched', 3);
    // The rest are the guest's stdio socket pairs: unnamed and not listening.
    assert.deepEqual(
      unix.filter((s) => !s.listening && s.path !== undefined),
      [],
      'no other named UNIX socket',
    );
    // Every socket the process holds is accounted for (no netlink, raw or packet socket).
    const known = new Set([...inet, ...unix].map((s) => s.inode));
    assert.deepEqual(
      [...mine].filter((i) => !known.has(i)),
      [],
      'sockets of other families',
    );
    tally.add('socket inodes accounted for', mine.size);

    // From the outside: the ports answer on the configured address only.
    for (const p of [telnetPort, rawPort, webPort]) {
      assert.equal(await tryConnect('127.0.0.1', p), 'connected', `127.0.0.1:${p}`);
      for (const other of otherAddresses()) {
        assert.equal(await tryConnect(other, p), 'ECONNREFUSED', `${other}:${p}`);
        tally.add('connections from other local addresses refused');
      }
    }
    if (v6Port !== undefined) {
      assert.equal(await tryConnect('127.0.0.1', v6Port), 'ECONNREFUSED', 'a [::1] listener is not on 127.0.0.1');
      tally.add('connections from other local addresses refused');
    }
    tally.report('bind addresses', (s) => t.diagnostic(s));
  });
});

describe('security: a udp device takes guest input from its configured peer only', () => {
  it('datagrams from another sender, even ones queued before connect(), never reach the guest (10 starts under a spray)', T, async (t) => {
    const tally = new Tally();
    const freeUdpPort = async (): Promise<number> => {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
      const port = s.address().port;
      await new Promise<void>((resolve) => s.close(() => resolve()));
      return port;
    };
    const port = await freeUdpPort();
    const peer = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => peer.bind(0, '127.0.0.1', resolve));
    const peerPort = peer.address().port;
    // Another local sender hammering the device's fixed port the whole time, in its own process.
    const spray = spawn(
      'python3',
      [
        '-c',
        `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 30
while time.time() < end:
    try:
        s.sendto(b'FOREIGN', ('127.0.0.1', ${port}))
    except OSError:
        pass
`,
      ],
      { stdio: 'ignore' },
    );
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const xml = domainXml(
        `<serial type='udp'><source mode='bind' host='127.0.0.1' service='${port}'/><source mode='connect' host='127.0.0.1' service='${peerPort}'/></serial>`,
      );
      for (let i = 0; i < 10; i++) {
        const d = await open(xml);
        try {
          const dev = d.device('serial0');
          const chunks: Buffer[] = [];
          dev.on('data', (b) => chunks.push(b));
          // UDP is lossy and the spray can fill the socket's receive queue: the peer sends
          // again every 100 ms until its datagram is through, as a real peer would.
          const deadline = Date.now() + 5000;
          let sends = 0;
          while (!Buffer.concat(chunks).includes(`peer ${i}`) && Date.now() < deadline) {
            peer.send(`peer ${i}`, port, '127.0.0.1');
            sends++;
            for (let w = 0; w < 10 && !Buffer.concat(chunks).includes(`peer ${i}`); w++) await new Promise((resolve) => setTimeout(resolve, 10));
          }
          await new Promise((resolve) => setTimeout(resolve, 50));
          const got = Buffer.concat(chunks).toString();
          const copies = got.length / `peer ${i}`.length;
          assert.ok(
            copies >= 1 && copies <= sends && got === `peer ${i}`.repeat(copies),
            `start ${i}: only the peer's datagrams reached the guest (got ${JSON.stringify(got.slice(0, 80))} after ${sends} sends)`,
          );
          // Not even counted as guest input nobody read: a foreign datagram is not input at all.
          assert.deepEqual(dev.counters, { bytesFromGuest: 0, bytesToGuest: got.length, dropped: 0 }, `start ${i}`);
          tally.add('starts under a spray with no foreign input');
        } finally {
          await d.stop();
        }
      }
    } finally {
      spray.kill('SIGKILL');
      peer.close();
    }
    tally.report('udp peer filter', (s) => t.diagnostic(s));
  });
});
