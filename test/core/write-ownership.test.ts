import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { open } from '../../src/index.ts';
import { T, domainXml, q, tmpDir } from './helpers.ts';

/** Everything a late client of `sock` receives within `ms` (the history replay). */
function replay(sock: string, ms = 300): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const c = net.connect(sock);
    c.on('data', (b) => chunks.push(b));
    c.on('error', reject);
    setTimeout(() => {
      c.destroy();
      resolve(Buffer.concat(chunks));
    }, ms);
  });
}

describe('guest output ownership: write copies, writeOwned shares', () => {
  const dir = tmpDir('owned');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('write: bytes queued for a client that is behind do not change when the caller reuses its buffer', T, async () => {
    const sock = path.join(dir, 'queued.sock');
    const d = await open(domainXml(`<serial type='unix'><source mode='bind' path='${q(sock)}'/></serial>`));
    try {
      const dev = d.device('serial0');
      const client = net.connect(sock);
      client.pause();
      const got: Buffer[] = [];
      client.on('data', (b) => got.push(b));
      await new Promise<void>((resolve) => {
        if (dev.isOpen) return resolve();
        const opened = (): void => {
          dev.off('open', opened);
          resolve();
        };
        dev.on('open', opened);
      });
      // Write one reused buffer, refilled each time, until the client's kernel buffers are
      // full and the device takes no more: the last accepted bytes wait in user space.
      const reused = Buffer.alloc(64 * 1024);
      const expected: Buffer[] = [];
      for (let i = 0; ; i++) {
        reused.fill(0x41 + (i % 26));
        const n = dev.write(reused);
        expected.push(Buffer.from(reused.subarray(0, n)));
        if (n < reused.length) break;
        // Let libuv hand what it can to the kernel, as the loop would between guest writes.
        await new Promise((r) => setImmediate(r));
      }
      reused.fill(0x7a);
      const total = expected.reduce((n, b) => n + b.length, 0);
      client.resume();
      while (got.reduce((n, b) => n + b.length, 0) < total) await new Promise((r) => setTimeout(r, 10));
      assert.ok(Buffer.concat(got).equals(Buffer.concat(expected)), 'every accepted byte arrived as it was when written');
      client.destroy();
    } finally {
      await d.stop();
    }
  });

  for (const how of ['write', 'writeOwned'] as const) {
    it(`${how}: history, <log> and a late client see exactly the bytes written`, T, async () => {
      const sock = path.join(dir, `${how}.sock`);
      const log = path.join(dir, `${how}.log`);
      const xml = domainXml(`<serial type='unix'><source mode='bind' path='${q(sock)}'/><log file='${q(log)}'/><cd:history size='4096'/></serial>`);
      const d = await open(xml);
      try {
        const dev = d.device('serial0');
        const first = Buffer.from('first line\n');
        const second = Buffer.from('second line\n');
        assert.equal(dev[how](first), first.length);
        if (how === 'write') {
          // The caller may reuse its buffer at once: what was written must not change.
          first.fill(0x21);
        }
        assert.equal(dev[how](second), second.length);
        const expected = how === 'write' ? 'first line\nsecond line\n' : `${first.toString()}second line\n`;
        assert.equal((await replay(sock)).toString(), expected);
        assert.equal(fs.readFileSync(log, 'utf8'), expected);
      } finally {
        await d.stop();
      }
    });
  }
});
