/**
 * The udp backend against Python's socket module: QEMU's /char/udp echo, one datagram per
 * write, no OPENED ever, peer filtering, an unreachable peer, input that waits in the kernel
 * while the guest does not read, and the bound port in live XML.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from '../../src/index.ts';
import { loadDomain } from '../../src/config/domain.ts';
import { formatDomain } from '../../src/config/format.ts';
import type { Domain } from '../../src/core/domain.ts';
import type { ChardevError } from '../../src/errors.ts';
import { kernelReading } from '../../src/backends/udp.ts';
import { T, collect, domainXml, eventLog, newFds, openFds, tmpDir, waitFor } from '../core/helpers.ts';
import { DGRAM_PEER, PyPeer, hex } from './python-peer.ts';

function udpXml(peerPort: string | number): string {
  return `<serial type='udp'><source mode='bind' host='127.0.0.1' service='0'/><source mode='connect' host='127.0.0.1' service='${peerPort}'/></serial>`;
}

/**
 * A UDP peer bound like DGRAM_PEER with one command, `burst DEST FIRST COUNT SIZE`: COUNT
 * datagrams of SIZE bytes sent back to back, datagram i being `datagram(i, SIZE)` below;
 * answers `sent SHA256` of them all.
 */
const BURST_PEER = String.raw`
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 0))
print('bound', s.getsockname()[1], flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, *args = line.split()
    if cmd == 'burst':
        dest, first, count, size = map(int, args)
        h = hashlib.sha256()
        for i in range(first, first + count):
            d = i.to_bytes(4, 'big') + bytes((i * 131 + j) & 0xff for j in range(size - 4))
            s.sendto(d, ('127.0.0.1', dest))
            h.update(d)
        print('sent', h.hexdigest(), flush=True)
    else:
        print('unknown', cmd, flush=True)
`;

/** What BURST_PEER sends as datagram i: a big-endian counter, then bytes that depend on i. */
function datagram(i: number, size: number): Buffer {
  const d = Buffer.alloc(size);
  d.writeUInt32BE(i, 0);
  for (let j = 0; j < size - 4; j++) d[4 + j] = (i * 131 + j) & 0xff;
  return d;
}

function sha256(...parts: Buffer[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/**
 * 1 KiB datagrams: 64 of them take about 150 KB of the default 208 KiB receive buffer here
 * (the kernel charges ~2.3 KB a datagram; it holds 92 of them, not 200).
 */
const SIZE = 1024;

/** BURST_PEER sends datagrams FIRST … FIRST+COUNT-1 to `local`; checks that both sides agree on them. */
async function burst(peer: PyPeer, local: string, first: number, count: number): Promise<Buffer[]> {
  const expected = Array.from({ length: count }, (_, k) => datagram(first + k, SIZE));
  assert.equal(await peer.cmd(`burst ${local} ${first} ${count} ${SIZE}`), `sent ${sha256(...expected)}`, 'python sent what the test expects');
  return expected;
}

/** The kernel's view of the device's socket (127.0.0.1:PORT in /proc/net/udp). */
function kernelSocket(port: string): { rxQueue: number; drops: number } {
  const local = `0100007F:${Number(port).toString(16).toUpperCase().padStart(4, '0')}`;
  const row = fs
    .readFileSync('/proc/net/udp', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[1] === local);
  assert.ok(row !== undefined && row.length >= 13, `127.0.0.1:${port} in /proc/net/udp`);
  // tx_queue:rx_queue in hex (bytes the kernel charges, overhead included); drops is the last field.
  return { rxQueue: parseInt((row[4] ?? '').split(':')[1] ?? '', 16), drops: Number(row[12]) };
}

/** Every datagram, whole, in order: the index of the first one that differs in the message. */
function assertDatagrams(got: readonly Buffer[], expected: readonly Buffer[], what: string): void {
  const bad = expected.findIndex((e, i) => got[i] === undefined || !e.equals(got[i] as Buffer));
  assert.equal(bad, -1, `${what}: datagram ${bad} differs (got ${got[bad]?.length ?? 'none'} bytes, counter ${got[bad]?.readUInt32BE(0) ?? '-'})`);
  assert.equal(got.length, expected.length, `${what}: datagram count`);
  assert.equal(sha256(...got), sha256(...expected), `${what}: sha256 of the concatenation`);
}

async function pyUdp(peers: PyPeer[], port?: number, script = DGRAM_PEER): Promise<{ peer: PyPeer; port: string }> {
  const peer = new PyPeer(script, port === undefined ? [] : [String(port)]);
  peers.push(peer);
  const m = /^bound (\d+)$/.exec(await peer.line());
  assert.ok(m, 'python udp peer bound');
  return { peer, port: m[1] as string };
}

/**
 * A python peer and a domain whose serial0 sends to it, for `body`; afterwards the domain is
 * stopped and every peer in `peers` (the body may start more) is killed.
 */
async function withUdpPeer(body: (py: { peer: PyPeer; port: string }, d: Domain, peers: PyPeer[]) => Promise<void>, script = DGRAM_PEER): Promise<void> {
  const peers: PyPeer[] = [];
  try {
    const py = await pyUdp(peers, undefined, script);
    const d = await open(domainXml(udpXml(py.port)));
    try {
      await body(py, d, peers);
    } finally {
      await d.stop();
    }
  } finally {
    await Promise.all(peers.map((p) => p.kill()));
  }
}

/** A UDP port nobody is bound to (bound, then released). */
async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind({ address: '127.0.0.1', port: 0 }, r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function boundPort(d: Domain): string {
  const p = d.liveState().boundServices?.get('serial0');
  assert.ok(p !== undefined && /^[1-9]\d*$/.test(p), `bound port in the live state: ${p}`);
  return p;
}

describe('udp backend (python peer)', () => {
  let fds = new Map<string, string>();
  let dir = '';
  before(() => {
    dir = tmpDir('udp');
    fds = openFds();
  });
  after(async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await sleep(50);
    assert.deepEqual(newFds(fds), []);
  });

  it('echo: one datagram from the bound address, the reply reaches the guest; never OPENED (/char/udp)', T, async () => {
    await withUdpPeer(async (py, d) => {
      const dev = d.device('serial0');
      const ev = eventLog(dev);
      const input = collect(dev);
      const local = boundPort(d);
      assert.equal(dev.filename, 'udp');
      assert.equal(dev.where, `charserial0: udp 127.0.0.1:${local} -> 127.0.0.1:${py.port}`);
      assert.equal(dev.isOpen, false);

      assert.equal(dev.write(Buffer.from('hello')), 5);
      assert.equal(await py.peer.cmd('recv 2'), `dgram ${hex('hello')} ${local}`, 'one 5-byte datagram from the chardev’s bound port');
      assert.equal(await py.peer.cmd(`sendto ${local} ${hex('hello')}`), 'sent');
      await waitFor(() => input.bytes().length === 5, 'the reply at the guest');
      assert.equal(input.bytes().toString(), 'hello');

      // Each write is one datagram, boundaries kept.
      for (const w of ['a', 'bb', 'ccc']) assert.equal(dev.write(Buffer.from(w)), w.length);
      for (const w of ['a', 'bb', 'ccc']) assert.equal(await py.peer.cmd('recv 2'), `dgram ${hex(w)} ${local}`);
      assert.equal(await py.peer.cmd('recv 0.2'), 'timeout', 'exactly three datagrams');

      // Binary, including NUL and 0xFF, both ways.
      const bin = Buffer.from([0, 1, 0xff, 0x0a, 0x0d, 0x80]);
      assert.equal(dev.write(bin), bin.length);
      assert.equal(await py.peer.cmd('recv 2'), `dgram ${hex(bin)} ${local}`);
      assert.equal(await py.peer.cmd(`sendto ${local} ${hex(bin)}`), 'sent');
      await waitFor(() => input.bytes().length === 5 + bin.length, 'binary datagram at the guest');
      assert.deepEqual(input.bytes().subarray(5), bin);

      await sleep(20);
      assert.deepEqual(ev, [], 'udp never emits OPENED (nor CLOSED)');
      assert.equal(dev.isOpen, false);
      assert.deepEqual(dev.counters, { bytesFromGuest: 5 + 6 + 6, bytesToGuest: 5 + 6, dropped: 0 });
    });
  });

  it('only the connected peer’s datagrams reach the guest', T, async () => {
    await withUdpPeer(async (py, d, peers) => {
      const stranger = await pyUdp(peers);
      const dev = d.device('serial0');
      const input = collect(dev);
      const local = boundPort(d);
      assert.equal(await stranger.peer.cmd(`sendto ${local} ${hex('intruder')}`), 'sent');
      assert.equal(await py.peer.cmd(`sendto ${local} ${hex('friend')}`), 'sent');
      await waitFor(() => input.bytes().length >= 6, 'the peer’s datagram');
      await sleep(100);
      assert.equal(input.bytes().toString(), 'friend', 'the kernel filters other sources of a connected socket');
    });
  });

  it(
    'a peer that is not listening (ICMP port unreachable): writes keep returning their length, nothing crashes; a peer that appears later gets the next writes',
    T,
    async () => {
      const peers: PyPeer[] = [];
      const port = await freeUdpPort();
      const errors: ChardevError[] = [];
      const d = await open(domainXml(udpXml(port)), { onError: (e) => errors.push(e) });
      try {
        const dev = d.device('serial0');
        const ev = eventLog(dev);
        const input = collect(dev);
        for (let i = 0; i < 20; i++) {
          assert.equal(dev.write(Buffer.from(`lost${i}`)), `lost${i}`.length, `write ${i} while the peer is unreachable`);
          await sleep(5);
        }
        await sleep(50);
        // The ICMP errors (ECONNREFUSED) are picked up by Node's receive path, not by the next
        // send as in QEMU; either way the datagrams are gone and only counting may differ.
        const bytes = Array.from({ length: 20 }, (_, i) => `lost${i}`.length).reduce((a, b) => a + b, 0);
        assert.equal(dev.counters.bytesFromGuest, bytes);
        assert.ok(dev.counters.dropped <= bytes);
        assert.deepEqual(ev, []);

        const py = await pyUdp(peers, port);
        // The first send after the peer appears may still fail on an error queued earlier.
        let got = '';
        for (let i = 0; i < 10 && !got.startsWith('dgram'); i++) {
          assert.equal(dev.write(Buffer.from('found')), 5);
          got = await py.peer.cmd('recv 0.2');
        }
        assert.equal(got, `dgram ${hex('found')} ${boundPort(d)}`);
        // Input still works after the receive errors (QEMU would have stopped reading for good).
        assert.equal(await py.peer.cmd(`sendto ${boundPort(d)} ${hex('back')}`), 'sent');
        await waitFor(() => input.bytes().toString() === 'back', 'input after the ICMP errors');
        assert.deepEqual(errors, [], 'a lossy transport: no error reports');
      } finally {
        await d.stop();
        await Promise.all(peers.map((p) => p.kill()));
      }
    },
  );

  it('datagrams sent while the guest does not read wait in the kernel, then all arrive whole, in order (QEMU leaves them in the socket)', T, async () => {
    await withUdpPeer(async (py, d) => {
      const dev = d.device('serial0');
      const local = boundPort(d);
      const expected = await burst(py.peer, local, 0, 64);
      // Give a reader that should not be there time to empty the socket.
      await sleep(300);
      const k = kernelSocket(local);
      assert.ok(k.rxQueue >= 64 * SIZE, `the datagrams wait in the kernel's receive queue (${k.rxQueue} bytes)`);
      assert.equal(k.drops, 0, 'the kernel dropped none');
      assert.deepEqual(dev.counters, { bytesFromGuest: 0, bytesToGuest: 0, dropped: 0 }, 'nothing read, nothing dropped');

      const got: Buffer[] = [];
      dev.on('data', (b) => got.push(b));
      await waitFor(() => got.length >= expected.length, 'every datagram once the guest reads');
      await sleep(50);
      assertDatagrams(got, expected, 'after reading starts');
      assert.equal(kernelSocket(local).rxQueue, 0, 'the queue is empty again');
      assert.deepEqual(dev.counters, { bytesFromGuest: 0, bytesToGuest: 64 * SIZE, dropped: 0 });
    }, BURST_PEER);
  });

  it('reading on, off, on again: what arrives while off waits and comes after what came before, nothing lost', T, async () => {
    await withUdpPeer(async (py, d) => {
      const dev = d.device('serial0');
      const local = boundPort(d);
      const got: Buffer[] = [];
      const first = (b: Buffer): void => void got.push(b);
      dev.on('data', first);
      const a = await burst(py.peer, local, 0, 32);
      await waitFor(() => got.length >= 32, 'the first burst while reading');

      dev.off('data', first);
      const b = await burst(py.peer, local, 32, 64);
      await sleep(300);
      assert.equal(got.length, 32, 'nothing delivered while nobody reads');
      assert.ok(kernelSocket(local).rxQueue >= 64 * SIZE, 'the second burst waits in the kernel');
      assert.equal(dev.counters.dropped, 0);

      dev.on('data', (chunk) => got.push(chunk));
      await waitFor(() => got.length >= 96, 'the second burst once reading again');
      const c = await burst(py.peer, local, 96, 32);
      await waitFor(() => got.length >= 128, 'a third burst: reading stays on');
      await sleep(50);
      assertDatagrams(got, [...a, ...b, ...c], 'on, off, on');
      assert.equal(kernelSocket(local).drops, 0, 'the kernel dropped none');
      assert.deepEqual(dev.counters, { bytesFromGuest: 0, bytesToGuest: 128 * SIZE, dropped: 0 });
    }, BURST_PEER);
  });

  it(`kernelReading finds Node's dgram state on this Node (${process.version}), so the counting fallback is not taken; without it, undefined`, T, async () => {
    const s = dgram.createSocket('udp4');
    try {
      const control = kernelReading(s);
      assert.ok(control !== undefined, `Node ${process.version}: the dgram socket's 'state symbol' handle with recvStart/recvStop`);
      await new Promise<void>((r) => s.bind({ address: '127.0.0.1', port: 0 }, r));
      assert.equal(control(false), true, 'recvStop');
      assert.equal(control(false), true, 'recvStop twice');
      assert.equal(control(true), true, 'recvStart');
    } finally {
      await new Promise<void>((r) => s.close(() => r()));
    }
    // After close (Node sets the handle to null): refused, no exception.
    const closed = dgram.createSocket('udp4');
    const control = kernelReading(closed);
    await new Promise<void>((r) => closed.close(() => r()));
    assert.equal(control?.(true), false);
    // Another shape (another Node): no control, so the backend reads and counts drops.
    assert.equal(kernelReading(new EventEmitter() as unknown as dgram.Socket), undefined);
    const other = { [Symbol('state symbol')]: { handle: {}, receiving: false } };
    assert.equal(kernelReading(other as unknown as dgram.Socket), undefined);
  });

  it('bind service=0: the real port in the live state and the live XML; stop releases the socket', T, async () => {
    const peers: PyPeer[] = [];
    try {
      const py = await pyUdp(peers);
      const before = openFds();
      const loaded = loadDomain(domainXml(udpXml(py.port)), { file: 'test.xml' });
      const d = await open(loaded);
      let local = '';
      try {
        local = boundPort(d);
        const live = formatDomain(loaded, { live: true, state: d.liveState() });
        assert.match(live, new RegExp(`<source mode=["']bind["'] host=["']127\\.0\\.0\\.1["'] service=["']${local}["']/>`));
        assert.match(live, new RegExp(`<source mode=["']connect["'] host=["']127\\.0\\.0\\.1["'] service=["']${py.port}["']/>`));
        assert.match(formatDomain(loaded), /<source mode=["']bind["'] host=["']127\.0\.0\.1["'] service=["']0["']\/>/);
        assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap').length, 1);
      } finally {
        await d.stop();
      }
      assert.equal(d.device('serial0').write(Buffer.from('x')), 0, 'writes after stop are refused');
      await sleep(20);
      assert.deepEqual(newFds(before), []);
      assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap').length, 0);
      // The port is free again: something else can bind it.
      await pyUdp(peers, Number(local));
    } finally {
      await Promise.all(peers.map((p) => p.kill()));
    }
  });

  it('no connect service is a start error', T, async () => {
    await assert.rejects(
      open(domainXml(`<serial type='udp'><source mode='bind' host='127.0.0.1' service='0'/><source mode='connect' host='127.0.0.1'/></serial>`)),
      /udp: remote port not specified|service/,
    );
  });
});
