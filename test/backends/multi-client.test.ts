/**
 * Many clients on one device: every client sees the output and the history,
 * only the writer's input reaches the guest, take-over, and a stalled client that cannot
 * slow the others or grow memory. Python's socket module is every client.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from '../../src/index.ts';
import { T, collect, domainXml, eventLog, waitFor } from '../core/helpers.ts';
import { PyPeer, STREAM_PEER, hex } from './python-peer.ts';

const GREETING = 'fffb01fffb03fffb00fffd00';

function xml(devices: string): string {
  return domainXml(devices);
}

async function connect(port: string, peers: PyPeer[]): Promise<{ peer: PyPeer; label: string }> {
  const peer = new PyPeer(STREAM_PEER, ['tcp', 'connect', port]);
  peers.push(peer);
  const hello = await peer.line();
  const m = /^connected (\d+)$/.exec(hello);
  assert.ok(m, hello);
  return { peer, label: `127.0.0.1:${m[1]}` };
}

/** Read exactly `expected` from the peer and compare (as text, for readable failures). */
async function expectBytes(peer: PyPeer, expected: Buffer | string): Promise<void> {
  const want = typeof expected === 'string' ? Buffer.from(expected) : expected;
  const got = await peer.cmd(`recv ${want.length} 5`);
  assert.equal(Buffer.from(got.replace(/^got /, '').replace(/^-$/, ''), 'hex').toString('latin1'), want.toString('latin1'));
}

function notice(text: string): string {
  return `\r\n[chardev: ${text}]\r\n`;
}

describe('many clients on one telnet device', () => {
  it('all see history and output; only the writer types; take-over; a late client gets the history', T, async () => {
    const peers: PyPeer[] = [];
    const d = await open(
      xml(
        `<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><protocol type='telnet'/><cd:clients max='4'/><cd:history size='4096'/></serial>`,
      ),
    );
    try {
      const dev = d.device('serial0');
      const ev = eventLog(dev);
      const input = collect(dev);
      const port = d.liveState().boundServices?.get('serial0') ?? '';
      dev.write(Buffer.from('boot\r\n'));

      const a = await connect(port, peers);
      await expectBytes(a.peer, Buffer.concat([Buffer.from(GREETING, 'hex'), Buffer.from('boot\r\n')]));
      const b = await connect(port, peers);
      await expectBytes(
        b.peer,
        Buffer.concat([
          Buffer.from(GREETING, 'hex'),
          Buffer.from('boot\r\n'),
          Buffer.from(notice(`read-only: ${a.label} is the writer (attach with force to take over)`)),
        ]),
      );
      assert.deepEqual(ev, ['open'], 'the device opened once, for the first client');
      assert.deepEqual(
        dev.hub.clients().map((c) => [c.label, c.role]),
        [
          [a.label, 'writer'],
          [b.label, 'viewer'],
        ],
      );

      dev.write(Buffer.from('out\r\n'));
      await expectBytes(a.peer, 'out\r\n');
      await expectBytes(b.peer, 'out\r\n');

      assert.equal(await b.peer.cmd(`send ${hex('from-b ')}`), 'sent');
      assert.equal(await a.peer.cmd(`send ${hex('from-a ')}`), 'sent');
      await waitFor(() => input.bytes().toString() === 'from-a ', 'the writer’s input at the guest');
      await sleep(100);
      assert.equal(input.bytes().toString(), 'from-a ', 'a viewer’s input never reaches the guest');

      const bClient = dev.hub.clients().find((c) => c.label === b.label);
      assert.ok(bClient !== undefined);
      const bHub = dev.hub.client(bClient.id);
      assert.ok(bHub !== undefined);
      dev.hub.takeOver(bHub);
      await expectBytes(a.peer, notice(`${b.label} took over; you are a read-only viewer now`));
      await expectBytes(b.peer, notice('you are the writer now'));
      assert.equal(await a.peer.cmd(`send ${hex('a-again ')}`), 'sent');
      assert.equal(await b.peer.cmd(`send ${hex('b-now')}`), 'sent');
      await waitFor(() => input.bytes().toString().endsWith('b-now'), 'the new writer’s input');
      assert.equal(input.bytes().toString(), 'from-a b-now');

      assert.equal(await a.peer.cmd('close'), 'closed');
      await waitFor(() => dev.hub.size === 1, 'A to leave');
      const c = await connect(port, peers);
      await expectBytes(
        c.peer,
        Buffer.concat([
          Buffer.from(GREETING, 'hex'),
          Buffer.from('boot\r\nout\r\n'),
          Buffer.from(notice(`read-only: ${b.label} is the writer (attach with force to take over)`)),
        ]),
      );
      assert.equal(await b.peer.cmd('close'), 'closed');
      assert.equal(await c.peer.cmd('close'), 'closed');
      await waitFor(() => ev.length === 2, 'the last client leaving closes the device');
      assert.deepEqual(ev, ['open', 'close']);
    } finally {
      await d.stop();
      await Promise.all(peers.map((p) => p.kill()));
    }
  });

  it('a viewer that stops reading for 30 s does not slow the writer or the guest and memory stays bounded (slow: 30 s)', { timeout: 90000 }, async () => {
    const peers: PyPeer[] = [];
    const d = await open(xml(`<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0'/><cd:clients max='2'/></serial>`));
    const CHUNK = 16 * 1024;
    const DURATION_MS = 30_000;
    // The reader counts what it gets and reports how far behind the writer it ever fell.
    const reader = [
      'import socket, sys, time',
      `s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))`,
      'print("connected", flush=True)',
      'n = 0',
      'while True:',
      '    b = s.recv(1 << 20)',
      '    if not b: break',
      '    n += len(b)',
      'print(n, flush=True)',
    ].join('\n');
    try {
      const dev = d.device('serial0');
      const port = d.liveState().boundServices?.get('serial0') ?? '';
      // The reader comes first, so it is the writer (the guest waits for it alone); the
      // stalled client is a viewer, which never holds the guest.
      const r = spawn('python3', ['-c', reader, port], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      r.stdout.on('data', (b: Buffer) => (out += b.toString()));
      const readerDone = new Promise<void>((resolve) => r.once('close', () => resolve()));
      await waitFor(() => out.startsWith('connected') && dev.hub.size === 1, 'the reader attached');
      await connect(port, peers); // never calls recv
      await waitFor(() => dev.hub.size === 2, 'both clients attached');

      global.gc?.();
      const rss0 = process.memoryUsage().rss;
      let written = 0;
      let maxWriteGapMs = 0;
      const chunk = Buffer.alloc(CHUNK, 0x41);
      const start = Date.now();
      let last = start;
      while (Date.now() - start < DURATION_MS) {
        assert.equal(dev.write(chunk), CHUNK, 'the guest is never held back');
        written += CHUNK;
        await sleep(2);
        const now = Date.now();
        maxWriteGapMs = Math.max(maxWriteGapMs, now - last);
        last = now;
      }
      const growth = process.memoryUsage().rss - rss0;
      const stalledInfo = dev.hub.clients()[1];
      assert.ok(stalledInfo !== undefined);
      assert.equal(stalledInfo.role, 'viewer');
      // The fast reader is never more than its queue behind: once the guest stops, it has everything within a moment.
      const readerInfo = () => dev.hub.clients()[0];
      await waitFor(() => (readerInfo()?.bytesSent ?? 0) >= written, 'the reader to be sent everything', 5000);
      assert.equal(readerInfo()?.bytesMissed, 0, 'the reading client missed nothing');
      assert.ok(stalledInfo.bytesMissed > written - 16 * 1024 * 1024, `the stalled client missed most (${stalledInfo.bytesMissed} of ${written})`);
      assert.ok(growth < 64 * 1024 * 1024, `RSS grew by ${growth} bytes over ${written} bytes written`);
      assert.ok(maxWriteGapMs < 1000, `the event loop never stalled (longest gap ${maxWriteGapMs} ms)`);
      await d.stop();
      await readerDone;
      assert.equal(Number(out.split('\n')[1]), written, 'the reader got every byte');
    } finally {
      await d.stop();
      await Promise.all(peers.map((p) => p.kill()));
    }
  });
});
