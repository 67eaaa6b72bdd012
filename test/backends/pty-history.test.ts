/** A pty reader that comes late sees the device's history, then live output (real pty, Python reader). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { open } from '../../src/index.ts';
import { T, domainXml, waitFor } from '../core/helpers.ts';

describe('pty + <cd:history>', () => {
  it('replays what scrolled by before the reader came, then live output; without history nothing is replayed', T, async () => {
    const xml = (ext: string): string => domainXml(`<serial type='pty'>${ext}</serial>`);
    for (const [ext, expected] of [
      [`<cd:history size='1024'/>`, 'boot 1\nboot 2\nlive\n'],
      ['', 'live\n'],
    ] as const) {
      const d = await open(xml(ext), { ptyPollMs: 10 });
      try {
        const dev = d.device('serial0');
        assert.equal(dev.write(Buffer.from('boot 1\n')), 7);
        assert.equal(dev.write(Buffer.from('boot 2\n')), 7);
        const py = [
          'import os, sys',
          `fd = os.open(${JSON.stringify(dev.ptyPath)}, os.O_RDONLY | os.O_NOCTTY)`,
          'buf = b""',
          'while not buf.endswith(b"live\\n"): buf += os.read(fd, 4096)',
          'sys.stdout.write(buf.decode())',
        ].join('\n');
        const reader = spawn('python3', ['-c', py], { stdio: ['ignore', 'pipe', 'inherit'] });
        let got = '';
        reader.stdout.on('data', (b: Buffer) => (got += b.toString()));
        const exited = new Promise<void>((resolve) => reader.once('close', () => resolve()));
        try {
          await waitFor(() => dev.isOpen, 'the reader to be seen');
          dev.write(Buffer.from('live\n'));
          await exited;
          assert.equal(got, expected);
        } finally {
          reader.kill();
        }
      } finally {
        await d.stop();
      }
    }
  });
});
