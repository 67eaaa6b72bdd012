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
      // Fill the socket's kernel buffers so what follows waits in user space.
      const filler = Buffer.alloc(512 * 1024, 0x2e);
      assert.equal(dev.write(filler), filler.length);
      const reused = Buffer.alloc(64 * 1024);
      for (let i = 0; i < 4; i++) {
        reused.fill(0x41 + i);
        assert.equal(dev.write(reused), reused.length);
      }
      client.resume();
      const total = filler.length + 4 * reused.length;
      while (got.reduce((n, b) => n + b.length, 0) < total) await new Promise((r) => setTimeout(r, 10));
      const all = Buffer.concat(got);
      for (let i = 0; i < 4; i++) {
        const part = all.subarray(filler.length + i * reused.length, filler.length + (i + 1) * reused.length);
        assert.ok(part.every((b) => b === 0x41 + i), `chunk ${i} arrived as written`);
      }
      client.destroy();
    } finally {
      await d.stop();
    }
  });

  for (const how of ['write', 'writeOwned'] as const) {
    it(`${how}: history, <log> and a late client see exactly the bytes written`, T, async () => {
      const sock = path.join(dir, `${how}.sock`);
      const log = path.join(dir, `${how}.log`);
      const xml = domainXml(
        `<serial type='unix'><source mode='bind' path='${q(sock)}'/><log file='${q(log)}'/><cd:history size='4096'/></serial>`,
      ).replace("<domain type='kvm'>", "<domain type='kvm' xmlns:cd='urn:chardev:1'>");
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
