/** A guest's last words: output still queued for a slow reader leaves before stop() closes the device. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { open } from '../../src/index.ts';
import { T, domainXml, payload, waitFor, writeAll } from './helpers.ts';

/**
 * A Python reader that opens what `open` says, reads with `read` (an expression) and sleeps
 * `pauseSec` after each read until EOF or EIO; `result` is `COUNT SHA256` once it has exited.
 */
function slowReader(open: readonly string[], read: string, pauseSec: number): { readonly result: Promise<string>; kill(): void } {
  const py = [
    'import hashlib, os, socket, time',
    ...open,
    'h, n = hashlib.sha256(), 0',
    'while True:',
    `    try: b = ${read}`,
    '    except OSError: break', // EIO: the pty master is gone
    '    if not b: break',
    '    h.update(b); n += len(b)',
    `    time.sleep(${pauseSec})`,
    'print(n, h.hexdigest())',
  ].join('\n');
  const child = spawn('python3', ['-c', py], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const result = new Promise<string>((resolve) => child.once('close', () => resolve(out.trim())));
  return { result, kill: () => void child.kill() };
}

describe('stop({ drainMs })', () => {
  it('a pty reader gets every byte the guest wrote before stop, even what was still queued', T, async () => {
    const d = await open(domainXml(`<serial type='pty'/>`), { ptyPollMs: 10 });
    const dev = d.device('serial0');
    const pts = dev.ptyPath;
    assert.ok(pts !== undefined);
    // A reader that takes its time (Python, 64 KiB reads with pauses), so most of the output waits in our queue.
    const reader = slowReader([`fd = os.open(${JSON.stringify(pts)}, os.O_RDONLY | os.O_NOCTTY)`], 'os.read(fd, 65536)', 0.02);
    try {
      await waitFor(() => dev.isOpen, 'the reader to be seen');
      const data = payload(900 * 1024);
      // The reader is slow: the device takes the burst as the reader makes room.
      await writeAll(dev, data);
      await d.stop({ drainMs: 10000 });
      assert.equal(Number((await reader.result).split(' ')[0]), data.length);
    } finally {
      reader.kill();
      await d.stop();
    }
  });

  it('a socket reader slower than drainMs still gets everything: the drain goes on while it takes output', { timeout: 30000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-drain-'));
    const sock = path.join(dir, 's');
    const d = await open(domainXml(`<serial type='unix'><source mode='bind' path='${sock}'/></serial>`));
    const dev = d.device('serial0');
    // ~100 KB/s: the 256 KiB chardev holds for it take ~2.5 s to leave, longer than drainMs.
    const reader = slowReader(['s = socket.socket(socket.AF_UNIX)', `s.connect(${JSON.stringify(sock)})`], 's.recv(8192)', 0.08);
    try {
      await waitFor(() => dev.isOpen, 'the reader to connect');
      const data = payload(1024 * 1024);
      const tail = 256 * 1024;
      await writeAll(dev, data.subarray(0, data.length - tail));
      // The client's kernel buffers are full (it is slow); the last 256 KiB wait in chardev.
      assert.equal(dev.write(data.subarray(data.length - tail)), tail);
      assert.ok(dev.pendingOutputBytes > 0, 'some output still waits in chardev');
      await d.stop({ drainMs: 1500 });
      assert.equal(await reader.result, `${data.length} ${createHash('sha256').update(data).digest('hex')}`);
    } finally {
      reader.kill();
      await d.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
