/**
 * The tcp and unix backends against real peers: Python's socket module (byte-exact,
 * step-by-step clients and servers), socat, and Node's net where nothing else fits.
 * Every scenario runs over TCP (127.0.0.1, service='0') and over a unix socket, like
 * QEMU's /char/socket/* tests.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from '../../src/index.ts';
import { loadDomain } from '../../src/config/domain.ts';
import { formatDomain } from '../../src/config/format.ts';
import type { Chardev } from '../../src/core/chardev.ts';
import type { Domain } from '../../src/core/domain.ts';
import { ChardevError } from '../../src/errors.ts';
import { T, collect, domainXml, eventLog, mode, newFds, openFds, q, tmpDir, waitFor, writeAll } from '../core/helpers.ts';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
import { PyPeer, STREAM_PEER, hex } from './python-peer.ts';

type Kind = 'tcp' | 'unix';

const HELLO = Buffer.from('Hello\0');
const WORLD = Buffer.from('World\0');

let dir = '';
let counter = 0;

/** A fresh socket path in the test directory. */
function sockPath(): string {
  return path.join(dir, `s${++counter}.sock`);
}

/** A port nobody listens on (bound, then released). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface Server {
  readonly xml: string;
  /** What a peer connects to once the domain runs: the real port, or the path. */
  address(d: Domain): string;
  /** query-chardev's filename while nobody is connected. */
  disconnected(d: Domain): string;
  /** The filename while the peer whose local port is `clientPort` is connected. */
  connected(d: Domain, clientPort: string): string;
}

function server(kind: Kind, inner = ''): Server {
  if (kind === 'tcp') {
    const port = (d: Domain): string => d.liveState().boundServices?.get('serial0') ?? '?';
    return {
      xml: `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='raw'/>${inner}</serial>`,
      address: port,
      disconnected: (d) => `disconnected:tcp:127.0.0.1:${port(d)},server=on`,
      connected: (d, cport) => `tcp:127.0.0.1:${port(d)},server=on <-> 127.0.0.1:${cport}`,
    };
  }
  const p = sockPath();
  return {
    xml: `<serial type='unix'><source mode='bind' path='${q(p)}'/>${inner}</serial>`,
    address: () => p,
    disconnected: () => `disconnected:unix:${p},server=on`,
    connected: () => `unix:${p},server=on`,
  };
}

/** A server device of `kind`, started, with its events logged and its input collected from the start. */
async function startServer(kind: Kind): Promise<{ srv: Server; d: Domain; dev: Chardev; ev: string[]; input: { bytes: () => Buffer } }> {
  const srv = server(kind);
  const d = await open(domainXml(srv.xml));
  const dev = d.device('serial0');
  return { srv, d, dev, ev: eventLog(dev), input: collect(dev) };
}

/** A client device for `address` (a port or a path); `reconnect` in seconds. */
function clientXml(kind: Kind, address: string, reconnect?: number): string {
  const rc = reconnect === undefined ? '' : `<reconnect enabled='yes' timeout='${reconnect}'/>`;
  if (kind === 'tcp') return `<serial type='tcp'><source mode='connect' host='127.0.0.1' service='${address}'>${rc}</source><protocol type='raw'/></serial>`;
  return `<serial type='unix'><source mode='connect' path='${q(address)}'>${rc}</source></serial>`;
}

/** Where a client device shows itself: disconnected, and connected from `localPort`. */
function clientNames(kind: Kind, address: string): { disconnected: string; connected: (localPort: string) => string } {
  if (kind === 'tcp') {
    return { disconnected: `disconnected:tcp:127.0.0.1:${address}`, connected: (lp) => `tcp:127.0.0.1:${lp} <-> 127.0.0.1:${address}` };
  }
  return { disconnected: `disconnected:unix:${address}`, connected: () => `unix:${address}` };
}

/** A Python client connected to `address`; resolves once its connect() returned. */
async function pyClient(kind: Kind, address: string, peers: PyPeer[]): Promise<{ peer: PyPeer; port: string }> {
  const peer = new PyPeer(STREAM_PEER, [kind, 'connect', address]);
  peers.push(peer);
  const first = await peer.line();
  const m = /^connected (\S+)$/.exec(first);
  assert.ok(m, `python client: ${first}`);
  return { peer, port: m[1] as string };
}

/** A Python listener on `address` (port '0' for an ephemeral one); resolves with the real address. */
async function pyServer(kind: Kind, address: string, peers: PyPeer[]): Promise<{ peer: PyPeer; address: string }> {
  const peer = new PyPeer(STREAM_PEER, [kind, 'listen', address]);
  peers.push(peer);
  const first = await peer.line();
  const m = /^listening (\S+)$/.exec(first);
  assert.ok(m, `python server: ${first}`);
  return { peer, address: kind === 'tcp' ? (m[1] as string) : address };
}

async function killAll(peers: PyPeer[]): Promise<void> {
  await Promise.all(peers.splice(0).map((p) => p.kill()));
}

/** Wait until `events` has `n` entries; the message says what was seen. */
async function events(list: string[], expected: string[], what: string, timeoutMs = 5000): Promise<void> {
  await waitFor(() => list.length >= expected.length, `${what} (events so far: ${list.join(',') || 'none'})`, timeoutMs);
  assert.deepEqual(list, expected, what);
}

/** The guest's ping-pong of QEMU's tests: Hello\0 out, World\0 back, exactly. */
async function pingPong(dev: Chardev, peer: PyPeer, input: { bytes: () => Buffer }, what: string): Promise<void> {
  const before = input.bytes().length;
  assert.equal(dev.write(HELLO), 6, `${what}: write_all of Hello\\0`);
  assert.equal(await peer.cmd('recv 6'), `got ${hex(HELLO)}`, `${what}: peer receives exactly Hello\\0`);
  assert.equal(await peer.cmd(`send ${hex(WORLD)}`), 'sent');
  await waitFor(() => input.bytes().length >= before + 6, `${what}: World\\0 at the guest`);
  assert.deepEqual(input.bytes().subarray(before), WORLD, `${what}: guest receives exactly World\\0`);
}

/** Counts of the libuv resource kinds a socket device holds (handles, pending connects, timers). */
function netResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) {
    if (/^(TCPServerWrap|TCPSocketWrap|TCPWrap|PipeServerWrap|PipeWrap|ConnectWrap|Timeout)$/.test(r)) counts.set(r, (counts.get(r) ?? 0) + 1);
  }
  return counts;
}

/** Baseline after earlier tests' handles finished closing (libuv closes them a tick late). */
async function settledResources(): Promise<Map<string, number>> {
  await sleep(30);
  return netResources();
}

/** Wait until no resource kind is above `baseline`; fail naming the extra ones. */
async function assertNoResourcesLeft(baseline: Map<string, number>): Promise<void> {
  const extra = (): string[] => [...netResources()].filter(([k, n]) => n > (baseline.get(k) ?? 0)).map(([k, n]) => `${k} ×${n - (baseline.get(k) ?? 0)}`);
  try {
    await waitFor(() => extra().length === 0, 'handles to be released', 1000);
  } catch {
    assert.deepEqual(extra(), [], 'active handles left behind');
  }
}

describe('socket backend (tcp and unix, real peers)', () => {
  let fds = new Map<string, string>();
  before(() => {
    dir = tmpDir('socket');
    fds = openFds();
  });
  after(async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await sleep(50);
    assert.deepEqual(newFds(fds), []);
  });

  for (const kind of ['tcp', 'unix'] as const) {
    describe(kind, () => {
      it(
        `server mainloop: starts disconnected, a client opens it, Hello/World both ways, close; twice (/char/socket/server/mainloop/${kind}, /char/socket/server/wait-conn/${kind})`,
        T,
        async () => {
          const peers: PyPeer[] = [];
          const { srv, d, dev, ev, input } = await startServer(kind);
          try {
            if (kind === 'tcp') assert.match(srv.address(d), /^[1-9]\d*$/, 'the real port is in the live state');
            assert.equal(dev.filename, srv.disconnected(d));
            assert.equal(dev.isOpen, false);
            await sleep(20);
            assert.deepEqual(ev, [], 'no event before a client');
            for (const round of [1, 2]) {
              const { peer, port } = await pyClient(kind, srv.address(d), peers);
              await events(ev, round === 1 ? ['open'] : ['open', 'close', 'open'], `client ${round} opens the device`);
              assert.equal(dev.filename, srv.connected(d, port));
              assert.equal(dev.isOpen, true);
              // Re-installing a handler while connected replays OPENED (QEMU's late attach).
              let replayed = 0;
              dev.on('open', () => replayed++);
              await waitFor(() => replayed === 1, 'OPENED replayed to a late open listener');
              await pingPong(dev, peer, input, `client ${round}`);
              assert.equal(await peer.cmd('close'), 'closed');
              await events(ev, round === 1 ? ['open', 'close'] : ['open', 'close', 'open', 'close'], `client ${round} leaving closes the device`);
              assert.equal(dev.filename, srv.disconnected(d));
              assert.equal(dev.isOpen, false);
            }
            assert.deepEqual(input.bytes(), Buffer.concat([WORLD, WORLD]));
            assert.equal(dev.counters.bytesFromGuest, 12);
            assert.equal(dev.counters.bytesToGuest, 12);
            assert.equal(dev.counters.dropped, 0);
          } finally {
            await d.stop();
            await killAll(peers);
          }
          if (kind === 'unix') assert.equal(fs.existsSync(srv.address(d)), false, 'socket file removed at stop');
        },
      );

      it(
        `two clients: the second waits (connected, unserved) until the first leaves, then is served (/char/socket/server/two-clients/${kind})`,
        T,
        async () => {
          const peers: PyPeer[] = [];
          const { srv, d, dev, ev, input } = await startServer(kind);
          try {
            const c1 = await pyClient(kind, srv.address(d), peers);
            await events(ev, ['open'], 'client 1 opens');
            const c2 = await pyClient(kind, srv.address(d), peers); // connect() returned: the backlog took it
            assert.equal(await c2.peer.cmd(`send ${hex('early')}`), 'sent');
            assert.equal(dev.write(Buffer.from('one')), 3);
            assert.equal(await c1.peer.cmd('recv 3'), `got ${hex('one')}`);
            assert.equal(await c2.peer.cmd('quiet 0.3'), 'none', 'the waiting client receives nothing');
            await sleep(100);
            assert.equal(input.bytes().length, 0, 'the waiting client’s bytes do not reach the guest');
            assert.equal(dev.filename, srv.connected(d, c1.port));

            assert.equal(await c1.peer.cmd('close'), 'closed');
            await events(ev, ['open', 'close', 'open'], 'close #1, then client 2 is served');
            assert.equal(dev.filename, srv.connected(d, c2.port));
            await waitFor(() => input.bytes().length === 5, 'client 2’s early bytes at the guest');
            assert.equal(input.bytes().toString(), 'early');
            assert.equal(dev.write(Buffer.from('two')), 3);
            assert.equal(await c2.peer.cmd('recv 3'), `got ${hex('two')}`, 'client 2 gets output written after it was served, nothing older');
            assert.equal(await c2.peer.cmd('close'), 'closed');
            await events(ev, ['open', 'close', 'open', 'close'], 'close #2');
            assert.equal(dev.filename, srv.disconnected(d));
          } finally {
            await d.stop();
            await killAll(peers);
          }
        },
      );

      it('output with no client is dropped (counted, logged); a later client gets only newer bytes (§7.1)', T, async () => {
        const peers: PyPeer[] = [];
        const log = path.join(dir, `log-${++counter}`);
        fs.writeFileSync(log, 'old contents\n');
        const srv = server(kind, `<log file='${q(log)}' append='off'/>`);
        const d = await open(domainXml(srv.xml));
        try {
          const dev = d.device('serial0');
          const ev = eventLog(dev);
          assert.equal(dev.write(Buffer.from('before ')), 7, 'a write with no client reports the full length');
          assert.equal(dev.write(Buffer.from('nobody ')), 7);
          assert.equal(dev.counters.dropped, 14);
          assert.equal(dev.counters.bytesFromGuest, 14);
          const c = await pyClient(kind, srv.address(d), peers);
          await events(ev, ['open'], 'client opens');
          assert.equal(dev.write(Buffer.from('after')), 5);
          assert.equal(await c.peer.cmd('recv 5'), `got ${hex('after')}`);
          assert.equal(await c.peer.cmd('quiet 0.2'), 'none', 'nothing written before the connect is replayed');
          assert.equal(dev.counters.dropped, 14);
          assert.equal(fs.readFileSync(log, 'utf8'), 'before nobody after', 'the log has everything the guest wrote (truncated at start)');
        } finally {
          await d.stop();
          await killAll(peers);
        }
      });

      it(
        `client mode without reconnect: connected at start, ping-pong, server leaves → closed for good (/char/socket/client/mainloop/${kind}, /char/socket/client/wait-conn/${kind}, /char/socket/basic)`,
        T,
        async () => {
          const peers: PyPeer[] = [];
          const target = await pyServer(kind, kind === 'tcp' ? '0' : sockPath(), peers);
          const names = clientNames(kind, target.address);
          const d = await open(domainXml(clientXml(kind, target.address)));
          try {
            const accepted = await target.peer.cmd('accept 5');
            const m = /^accepted (\S+)$/.exec(accepted);
            assert.ok(m, accepted);
            const dev = d.device('serial0');
            assert.equal(dev.isOpen, true, 'connected immediately after creation');
            assert.equal(dev.filename, names.connected(m[1] as string));
            const ev = eventLog(dev);
            await events(ev, ['open'], 'OPENED replayed to a late listener');
            const input = collect(dev);
            await pingPong(dev, target.peer, input, 'client mode');
            assert.equal(await target.peer.cmd('close'), 'closed');
            await events(ev, ['open', 'close'], 'server closing the connection closes the device');
            assert.equal(dev.filename, names.disconnected);
            // The listener is still there: a reconnect attempt would be accepted.
            assert.equal(await target.peer.cmd('accept 1.5'), 'timeout', 'no reconnect without <reconnect>');
            assert.deepEqual(ev, ['open', 'close']);
            assert.equal(dev.write(Buffer.from('lost')), 4, 'writes while down are taken and dropped');
            assert.equal(dev.counters.dropped, 4);
          } finally {
            await d.stop();
            await killAll(peers);
          }
        },
      );

      it('client mode without reconnect and the server down: start fails with ERR_CONNECT, nothing left behind', T, async () => {
        const address = kind === 'tcp' ? String(await freePort()) : sockPath();
        const where = kind === 'tcp' ? `127.0.0.1:${address}` : address;
        const reason = kind === 'tcp' ? 'Connection refused' : 'No such file or directory';
        const res = await settledResources();
        const before = openFds();
        await assert.rejects(open(domainXml(clientXml(kind, address))), (e: unknown) => {
          assert.ok(e instanceof ChardevError, String(e));
          assert.equal(e.code, 'ERR_CONNECT');
          assert.equal(e.message, `charserial0: Failed to connect to '${where}': ${reason}`);
          return true;
        });
        await sleep(30);
        assert.deepEqual(newFds(before), []);
        await assertNoResourcesLeft(res);
        if (kind === 'unix') assert.equal(fs.existsSync(address), false);
      });

      it(`client with reconnect and the server down: one error per streak, connects when the server appears, reconnects after a disconnect (/char/socket/client/mainloop-reconnect/${kind}, /char/socket/client/wait-conn-reconnect/${kind}, §7.7)`, {
        timeout: 20000,
      }, async () => {
        const peers: PyPeer[] = [];
        const address = kind === 'tcp' ? String(await freePort()) : sockPath();
        const where = kind === 'tcp' ? `127.0.0.1:${address}` : address;
        const reason = kind === 'tcp' ? 'Connection refused' : 'No such file or directory';
        const names = clientNames(kind, address);
        const errors: ChardevError[] = [];
        const started = Date.now();
        const d = await open(domainXml(clientXml(kind, address, 1)), { onError: (e) => errors.push(e) });
        try {
          const dev = d.device('serial0');
          const ev = eventLog(dev);
          const input = collect(dev);
          assert.equal(dev.isOpen, false, 'start succeeds, not connected');
          assert.equal(dev.filename, names.disconnected);
          assert.match(dev.where, /charserial0: client of (tcp:127\.0\.0\.1:\d+|unix:.*) \(reconnect every 1 s\)$/);
          await waitFor(() => errors.length > 0, 'the first connect failure reported');
          // First attempt at once, then every second: wait for at least three more.
          await sleep(Math.max(0, started + 3400 - Date.now()));
          assert.equal(errors.length, 1, `one message per failure streak, got: ${errors.map((e) => e.message).join(' | ')}`);
          assert.equal(errors[0]?.code, 'ERR_CONNECT');
          assert.equal(errors[0]?.message, `Unable to connect character device charserial0: Failed to connect to '${where}': ${reason}`);
          assert.deepEqual(ev, []);

          const s1 = await pyServer(kind, address, peers);
          const appeared = Date.now();
          assert.match(await s1.peer.cmd('accept 3'), /^accepted /);
          await events(ev, ['open'], 'OPENED once the server is up', 3000);
          assert.ok(Date.now() - appeared < 2000, `connected ${Date.now() - appeared} ms after the server appeared`);
          assert.equal(dev.isOpen, true);
          await pingPong(dev, s1.peer, input, 'first server');

          // The server goes away entirely; a new one takes its place before the retry is due.
          await s1.peer.kill();
          await events(ev, ['open', 'close'], 'CLOSED when the server goes');
          const closedAt = Date.now();
          const s2 = await pyServer(kind, address, peers);
          assert.match(await s2.peer.cmd('accept 4'), /^accepted /);
          await events(ev, ['open', 'close', 'open'], 'reconnected by itself', 3000);
          // QEMU: no immediate retry after a disconnect, the timer runs first.
          assert.ok(Date.now() - closedAt >= 800, `reconnected ${Date.now() - closedAt} ms after the disconnect`);
          await pingPong(dev, s2.peer, input, 'second server');
          assert.equal(errors.length, 1, `no new error: ${errors.map((e) => e.message).join(' | ')}`);
        } finally {
          await d.stop();
          await killAll(peers);
        }
      });

      it(`client with reconnect whose first connection is dropped at once: CLOSED, a reconnect after the interval, then the normal ping-pong, close and reconnect (/char/socket/client/reconnect-error/${kind})`, {
        timeout: 20000,
      }, async () => {
        // QEMU's frontend disconnects on the first OPENED; chardev's frontends have no such call,
        // so the peer drops that first connection instead — the client side sees the same thing.
        const peers: PyPeer[] = [];
        const target = await pyServer(kind, kind === 'tcp' ? '0' : sockPath(), peers);
        const errors: ChardevError[] = [];
        const d = await open(domainXml(clientXml(kind, target.address, 1)), { onError: (e) => errors.push(e) });
        try {
          const dev = d.device('serial0');
          const ev = eventLog(dev);
          const input = collect(dev);
          assert.match(await target.peer.cmd('accept 3'), /^accepted /);
          await events(ev, ['open'], 'the first connection opens');
          assert.equal(await target.peer.cmd('close'), 'closed');
          await events(ev, ['open', 'close'], 'its end is CLOSED');
          const closedAt = Date.now();
          assert.match(await target.peer.cmd('accept 4'), /^accepted /);
          await events(ev, ['open', 'close', 'open'], 'reconnected by itself', 3000);
          assert.ok(Date.now() - closedAt >= 800, `reconnected ${Date.now() - closedAt} ms after the drop, not at once`);
          await pingPong(dev, target.peer, input, 'after the reconnect');
          assert.equal(await target.peer.cmd('close'), 'closed');
          await events(ev, ['open', 'close', 'open', 'close'], 'CLOSED again');
          assert.match(await target.peer.cmd('accept 4'), /^accepted /);
          await events(ev, ['open', 'close', 'open', 'close', 'open'], 'and reconnected again', 3000);
          await pingPong(dev, target.peer, input, 'second reconnect');
          assert.deepEqual(errors, [], 'a dropped connection is not a connect failure');
        } finally {
          await d.stop();
          await killAll(peers);
        }
      });

      it(
        `a second device with the id of a connected reconnecting client is refused; the first keeps working (/char/socket/client/dupid-reconnect/${kind})`,
        T,
        async () => {
          const peers: PyPeer[] = [];
          const target = await pyServer(kind, kind === 'tcp' ? '0' : sockPath(), peers);
          const d = await open(domainXml(clientXml(kind, target.address, 1)));
          try {
            const dev = d.device('serial0');
            const ev = eventLog(dev);
            const input = collect(dev);
            assert.match(await target.peer.cmd('accept 3'), /^accepted /);
            await events(ev, ['open'], 'connected');
            const source = d.device('serial0').def.source;
            await assert.rejects(d.add('charserial0', source), (e: unknown) => {
              assert.ok(e instanceof ChardevError);
              assert.equal(e.code, 'ERR_BACKEND_BUSY');
              assert.equal(e.message, 'charserial0: domain t already has a device with this id or alias');
              return true;
            });
            assert.equal(await target.peer.cmd('accept 1'), 'timeout', 'the refused duplicate never connected');
            assert.equal(d.device('charserial0'), dev);
            await pingPong(dev, target.peer, input, 'the first device after the refusal');
            assert.deepEqual(ev, ['open']);
          } finally {
            await d.stop();
            await killAll(peers);
          }
        },
      );

      it('live XML shows the real address', T, async () => {
        const srv = server(kind);
        const loaded = loadDomain(domainXml(srv.xml), { file: 'test.xml' });
        const d = await open(loaded);
        try {
          const live = formatDomain(loaded, { live: true, state: d.liveState() });
          const inactive = formatDomain(loaded);
          if (kind === 'tcp') {
            const port = srv.address(d);
            assert.notEqual(port, '0');
            assert.match(live, new RegExp(`<source mode=["']bind["'] host=["']127\\.0\\.0\\.1["'] service=["']${port}["']/>`));
            assert.doesNotMatch(live, /service=["']0["']/);
            assert.match(inactive, /service=["']0["']/, 'the inactive XML keeps what the document said');
          } else {
            assert.match(live, new RegExp(`<source mode=["']bind["'] path=["']${srv.address(d).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}["']/>`));
            assert.equal(d.liveState().boundServices?.has('serial0') ?? false, false);
          }
        } finally {
          await d.stop();
        }
      });

      it('a stalled client holds the guest (QEMU): writes are refused once it is behind, memory stays bounded; when it reads it gets every byte', {
        timeout: 30000,
      }, async () => {
        const peers: PyPeer[] = [];
        const { srv, d, dev, ev } = await startServer(kind); // input is collected: the guest keeps reading
        try {
          const c = await pyClient(kind, srv.address(d), peers); // does not recv() until told
          await events(ev, ['open'], 'stalled client opens');
          const data = randomBytes(16 * 1024 * 1024);
          global.gc?.();
          const rss0 = process.memoryUsage().rss;
          // The guest writes as fast as it may: until the device takes nothing (kernel buffers
          // and chardev's in-flight bound are full).
          let off = 0;
          for (;;) {
            const n = dev.write(data.subarray(off, off + 64 * 1024));
            off += n;
            if (n === 0) break;
            // Let libuv move what it can into the kernel.
            await new Promise((r) => setImmediate(r));
          }
          const held = off;
          assert.ok(held > 0 && held < data.length, `the device took ${held} bytes before the guest had to wait`);
          await sleep(300);
          assert.equal(dev.write(data.subarray(off)), 0, 'the guest still waits: the client has taken nothing');
          const growth = process.memoryUsage().rss - rss0;
          assert.ok(growth < 40 * 1024 * 1024, `RSS grew by ${growth} bytes while the guest waited`);
          // The client reads now; the guest goes on as it makes room.
          const reading = c.peer.cmd(`sha ${data.length} 20`);
          await writeAll(dev, data.subarray(off));
          assert.equal(await reading, `sha ${data.length} ${sha256(data)}`, 'every byte, in order');
          assert.equal(dev.counters.bytesFromGuest, data.length);
          assert.equal(dev.counters.dropped, 0);

          assert.equal(await c.peer.cmd('close'), 'closed');
          await events(ev, ['open', 'close'], 'the client leaving closes the device');
          const chunk = Buffer.alloc(64 * 1024, 0x5a);
          assert.equal(dev.write(chunk), chunk.length, 'accepted (and dropped) while nobody is connected, as QEMU does');
          assert.equal(dev.counters.dropped, chunk.length);
        } finally {
          await d.stop();
          await killAll(peers);
        }
      });

      it('socat as a real client (server mode): 100 KiB each way, byte-exact', T, async () => {
        const srv = server(kind);
        const d = await open(domainXml(srv.xml));
        const addr = kind === 'tcp' ? `TCP:127.0.0.1:${srv.address(d)}` : `UNIX-CONNECT:${srv.address(d)}`;
        const socat = spawn('socat', ['-', addr], { stdio: ['pipe', 'pipe', 'pipe'] });
        const exited = new Promise<number | null>((r) => socat.once('close', (code) => r(code)));
        try {
          const dev = d.device('serial0');
          const ev = eventLog(dev);
          const input = collect(dev);
          const out: Buffer[] = [];
          let got = 0;
          let stderr = '';
          socat.stdout.on('data', (b: Buffer) => {
            out.push(b);
            got += b.length;
          });
          socat.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
          await events(ev, ['open'], 'socat connects');
          const toSocat = randomBytes(100 * 1024);
          const toGuest = randomBytes(100 * 1024);
          let off = 0;
          while (off < toSocat.length) {
            off += dev.write(toSocat.subarray(off));
            if (off < toSocat.length) await sleep(5);
          }
          await waitFor(() => got >= toSocat.length, `100 KiB at socat (got ${got}; ${stderr})`);
          assert.ok(Buffer.concat(out).equals(toSocat), 'socat printed exactly what the guest wrote');
          socat.stdin.end(toGuest);
          await waitFor(() => input.bytes().length >= toGuest.length, '100 KiB at the guest');
          assert.ok(input.bytes().equals(toGuest), 'the guest got exactly what socat read from stdin');
          // socat's EOF on stdin half-closes; QEMU (and we) treat read()==0 as a disconnect.
          await events(ev, ['open', 'close'], 'socat leaving closes the device');
          assert.equal(await exited, 0, stderr);
          assert.equal(dev.filename, srv.disconnected(d));
        } finally {
          socat.kill('SIGKILL');
          await exited;
          await d.stop();
        }
      });

      it('socat as a real server (client mode, EXEC:cat echo): 100 KiB round trip', T, async () => {
        const address = kind === 'tcp' ? String(await freePort()) : sockPath();
        const listen = kind === 'tcp' ? `TCP-LISTEN:${address},bind=127.0.0.1,reuseaddr` : `UNIX-LISTEN:${address}`;
        const socat = spawn('socat', ['-d', '-d', listen, 'EXEC:cat'], { stdio: ['ignore', 'ignore', 'pipe'] });
        const exited = new Promise<number | null>((r) => socat.once('close', (code) => r(code)));
        let stderr = '';
        socat.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        let d: Domain | undefined;
        try {
          await waitFor(() => /listening on/.test(stderr), `socat listening (${stderr})`);
          d = await open(domainXml(clientXml(kind, address)));
          const dev = d.device('serial0');
          const input = collect(dev);
          assert.equal(dev.isOpen, true);
          const payload = randomBytes(100 * 1024);
          let off = 0;
          while (off < payload.length) {
            off += dev.write(payload.subarray(off));
            if (off < payload.length) await sleep(5);
          }
          await waitFor(() => input.bytes().length >= payload.length, `echo of 100 KiB (got ${input.bytes().length}; ${stderr})`);
          assert.ok(input.bytes().equals(payload), 'echoed byte for byte');
        } finally {
          await d?.stop();
          socat.kill('SIGKILL');
          await exited;
        }
      });

      it('stop releases every fd, handle and timer; closes the client; removes the socket file', T, async () => {
        const peers: PyPeer[] = [];
        const beforeRes = await settledResources();
        const beforeFds = openFds();
        const srv = server(kind);
        const down = kind === 'tcp' ? String(await freePort()) : sockPath();
        // A server with a client, plus a client retrying against nothing (its timer must go too).
        const xml = srv.xml + clientXml(kind, down, 1);
        const d = await open(domainXml(xml), { onError: () => {} });
        let stoppedPath = '';
        try {
          const dev = d.device('serial0');
          const ev = eventLog(dev);
          await pyClient(kind, srv.address(d), peers);
          await events(ev, ['open'], 'client connected');
          stoppedPath = srv.address(d);
          await sleep(50);
          await d.stop();
          assert.deepEqual(ev, ['open', 'close'], 'stop sends CLOSED to a connected device');
          assert.equal(dev.write(Buffer.from('x')), 0, 'writes after stop are refused');
          const peer = peers[0] as PyPeer;
          assert.equal(await peer.cmd('quiet 2'), 'got EOF', 'the client sees the connection end');
        } finally {
          await d.stop();
          await killAll(peers);
        }
        await sleep(50);
        assert.deepEqual(newFds(beforeFds), []);
        await assertNoResourcesLeft(beforeRes);
        if (kind === 'unix') assert.equal(fs.existsSync(stoppedPath), false, 'socket file removed');
      });
    });
  }

  it('tcp: stop aborts a client connect that is still in progress (a listener whose accept queue is full)', T, async () => {
    // backlog 0 and one queued connection: the kernel drops further SYNs, so connects hang.
    const jammed = new PyPeer(
      String.raw`
import socket, sys
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(0)
port = s.getsockname()[1]
held = []
for _ in range(2):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(('127.0.0.1', port))
    except BlockingIOError:
        pass
    held.append(c)
print('listening', port, flush=True)
sys.stdin.readline()
`,
      [],
    );
    try {
      const m = /^listening (\d+)$/.exec(await jammed.line());
      assert.ok(m);
      const res = await settledResources();
      const before = openFds();
      const errors: string[] = [];
      const d = await open(domainXml(clientXml('tcp', m[1] as string, 1)), { onError: (e) => errors.push(e.message) });
      await sleep(300);
      assert.equal(d.device('serial0').isOpen, false);
      assert.deepEqual(errors, [], 'the connect is still pending, not failed');
      const t0 = Date.now();
      await d.stop();
      assert.ok(Date.now() - t0 < 1000, `stop took ${Date.now() - t0} ms`);
      await sleep(30);
      assert.deepEqual(newFds(before), [], 'the half-open connect’s socket is closed by stop');
      await assertNoResourcesLeft(res);
      assert.deepEqual(errors, []);
    } finally {
      await jammed.kill();
    }
  });

  describe('unix socket file', () => {
    it('is created owner-only (0600) and removed at stop', T, async () => {
      const p = sockPath();
      const d = await open(domainXml(`<serial type='unix'><source mode='bind' path='${q(p)}'/></serial>`));
      try {
        assert.ok(fs.lstatSync(p).isSocket());
        assert.equal(mode(p), 0o600);
        assert.equal(d.device('serial0').where, `charserial0: listening on unix:${p}`);
      } finally {
        await d.stop();
      }
      assert.equal(fs.existsSync(p), false);
    });

    it('a stale socket file (its process was killed) is replaced', T, async () => {
      const peers: PyPeer[] = [];
      const p = sockPath();
      try {
        const stale = await pyServer('unix', p, peers);
        await stale.peer.kill('SIGKILL');
        assert.ok(fs.lstatSync(p).isSocket(), 'the killed process left its socket file');
        const d = await open(domainXml(`<serial type='unix'><source mode='bind' path='${q(p)}'/></serial>`));
        try {
          const dev = d.device('serial0');
          const ev = eventLog(dev);
          const c = await pyClient('unix', p, peers);
          await events(ev, ['open'], 'a client reaches the new listener');
          assert.equal(dev.write(Buffer.from('fresh')), 5);
          assert.equal(await c.peer.cmd('recv 5'), `got ${hex('fresh')}`);
          assert.equal(mode(p), 0o600);
        } finally {
          await d.stop();
        }
        assert.equal(fs.existsSync(p), false);
      } finally {
        await killAll(peers);
      }
    });

    it('a live socket (someone listening) makes start fail with ERR_BACKEND_BUSY and is left alone', T, async () => {
      const peers: PyPeer[] = [];
      const p = sockPath();
      try {
        const live = await pyServer('unix', p, peers);
        await assert.rejects(open(domainXml(`<serial type='unix'><source mode='bind' path='${q(p)}'/></serial>`)), (e: unknown) => {
          assert.ok(e instanceof ChardevError, String(e));
          assert.equal(e.code, 'ERR_BACKEND_BUSY');
          assert.equal(e.message, `charserial0: Failed to bind socket to '${p}': another process is listening on it`);
          return true;
        });
        assert.ok(fs.lstatSync(p).isSocket(), 'the other process keeps its socket');
        // The other listener still works (our probe took its backlog slot; accept it, then a real client).
        assert.match(await live.peer.cmd('accept 2'), /^accepted/);
        const c = await pyClient('unix', p, peers);
        assert.match(await live.peer.cmd('accept 2'), /^accepted/);
        void c;
      } finally {
        await killAll(peers);
      }
    });

    it('a live listener whose backlog is full is still busy, not stale', T, async () => {
      const p = sockPath();
      // backlog 0 plus one queued client: our probe's connect gets EAGAIN, not ECONNREFUSED.
      const live = new PyPeer(
        String.raw`
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(0)
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
print('ready', flush=True)
sys.stdin.readline()
`,
        [p],
      );
      try {
        assert.equal(await live.line(), 'ready');
        const ino = fs.statSync(p).ino;
        await assert.rejects(open(domainXml(`<serial type='unix'><source mode='bind' path='${q(p)}'/></serial>`)), (e: unknown) => {
          assert.ok(e instanceof ChardevError, String(e));
          assert.equal(e.code, 'ERR_BACKEND_BUSY');
          return true;
        });
        assert.equal(fs.statSync(p).ino, ino, 'the other process’s socket file was not replaced');
      } finally {
        await live.kill();
      }
    });

    it('a regular file at the path makes start fail and is left untouched', T, async () => {
      const p = sockPath();
      fs.writeFileSync(p, 'precious');
      await assert.rejects(open(domainXml(`<serial type='unix'><source mode='bind' path='${q(p)}'/></serial>`)), (e: unknown) => {
        assert.ok(e instanceof ChardevError, String(e));
        assert.equal(e.code, 'ERR_BACKEND_OPEN');
        assert.equal(e.message, `charserial0: Failed to bind socket to '${p}': the path exists and is not a socket`);
        return true;
      });
      assert.equal(fs.readFileSync(p, 'utf8'), 'precious');
    });
  });
});
