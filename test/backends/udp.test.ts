/**
 * The udp backend against Python's socket module: QEMU's /char/udp echo, one datagram per
 * write, no OPENED ever, peer filtering, an unreachable peer, and the bound port in live XML.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from '../../src/index.ts';
import { loadDomain } from '../../src/config/domain.ts';
import { formatDomain } from '../../src/config/format.ts';
import type { Domain } from '../../src/core/domain.ts';
import type { ChardevError } from '../../src/errors.ts';
import { T, collect, domainXml, eventLog, newFds, openFds, tmpDir, waitFor } from '../core/helpers.ts';
import { DGRAM_PEER, PyPeer, hex } from './python-peer.ts';

function udpXml(peerPort: string | number): string {
  return `<serial type='udp'><source mode='bind' host='127.0.0.1' service='0'/><source mode='connect' host='127.0.0.1' service='${peerPort}'/></serial>`;
}

async function pyUdp(peers: PyPeer[], port?: number): Promise<{ peer: PyPeer; port: string }> {
  const peer = new PyPeer(DGRAM_PEER, port === undefined ? [] : [String(port)]);
  peers.push(peer);
  const m = /^bound (\d+)$/.exec(await peer.line());
  assert.ok(m, 'python udp peer bound');
  return { peer, port: m[1] as string };
}

/**
 * A python peer and a domain whose serial0 sends to it, for `body`; afterwards the domain is
 * stopped and every peer in `peers` (the body may start more) is killed.
 */
async function withUdpPeer(body: (py: { peer: PyPeer; port: string }, d: Domain, peers: PyPeer[]) => Promise<void>): Promise<void> {
  const peers: PyPeer[] = [];
  try {
    const py = await pyUdp(peers);
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

  it('a peer that is not listening (ICMP port unreachable): writes keep returning their length, nothing crashes; a peer that appears later gets the next writes', T, async () => {
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
  });

  it('datagrams arriving while the guest is not reading are dropped and counted (Node cannot leave them in the kernel)', T, async () => {
    await withUdpPeer(async (py, d) => {
      const dev = d.device('serial0');
      const local = boundPort(d);
      assert.equal(await py.peer.cmd(`sendto ${local} ${hex('early')}`), 'sent');
      await waitFor(() => dev.counters.dropped === 5, 'the unread datagram counted as dropped');
      const input = collect(dev);
      assert.equal(await py.peer.cmd(`sendto ${local} ${hex('late')}`), 'sent');
      await waitFor(() => input.bytes().length === 4, 'the datagram sent while reading');
      assert.equal(input.bytes().toString(), 'late');
    });
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
