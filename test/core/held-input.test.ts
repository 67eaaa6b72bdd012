/**
 * Input that arrives after the frontend stopped listening is held, not lost: one read from a
 * telnet client can decode to data, BREAK, data, and a frontend whose queue filled on the
 * first part removes its 'data' listener before the rest is delivered (chardev qemu's bridge
 * does exactly that when QEMU's socket is full). The rest, BREAKs in their place, reaches the
 * next listener.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { describe, it } from 'node:test';
import { open } from '../../src/index.ts';
import { T, domainXml, waitFor } from './helpers.ts';

const IAC = 255;
const BRK = 243;

describe('input held while nobody listens', () => {
  it(
    'a telnet read of data, BREAK, data, BREAK, data: the frontend stops after the first part and gets the rest in order when it listens again',
    T,
    async () => {
      const domain = await open(domainXml(`<serial type='tcp'><source mode='bind' host='127.0.0.1' service='0' tls='no'/><protocol type='telnet'/></serial>`));
      try {
        const dev = domain.device('serial0');
        const port = Number(domain.liveState().boundServices?.get('serial0'));
        const events: string[] = [];
        const onBreak = (): void => void events.push('BREAK');
        dev.on('break', onBreak);
        // Stops listening as soon as it has one chunk: a guest whose buffer is full.
        const first = (b: Buffer): void => {
          events.push(b.toString('latin1'));
          dev.off('data', first);
        };
        dev.on('data', first);
        const client = net.connect(port, '127.0.0.1');
        await new Promise<void>((resolve) => client.once('connect', () => resolve()));
        // The greeting first, so the device is open; then one write the server reads at once.
        await new Promise<void>((resolve) => client.once('data', () => resolve()));
        client.write(Buffer.concat([Buffer.from('abc'), Buffer.from([IAC, BRK]), Buffer.from('def'), Buffer.from([IAC, BRK]), Buffer.from('ghi')]));
        await waitFor(() => events.length > 0, 'the first part');
        // Give the rest of that read every chance to be delivered (or lost) before listening again.
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.deepEqual(events, ['abc', 'BREAK'], 'after the first part only the BREAK that followed it at once (nothing held yet)');
        dev.on('data', (b: Buffer) => void events.push(b.toString('latin1')));
        await waitFor(() => events.join('').includes('ghi'), 'the held rest');
        assert.deepEqual(events, ['abc', 'BREAK', 'def', 'BREAK', 'ghi'], 'the rest, BREAK in its place');
        assert.equal(dev.counters.bytesToGuest, 9);
        client.destroy();
      } finally {
        await domain.stop();
      }
    },
  );
});
