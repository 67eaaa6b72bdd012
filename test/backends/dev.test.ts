/** The dev backend: host tty passthrough and the parallel-port check (test-char.c serial/parallel cases). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from '../../src/index.ts';
import { ChardevError } from '../../src/errors.ts';
import { linuxPlatform } from '../../src/platform/index.ts';
import { T, collect, domainXml, eventLog, newFds, openFds, payload, q, run, tmpDir, waitFor } from '../core/helpers.ts';

describe('dev backend', () => {
  it("serial on /dev/null is accepted, as QEMU's test-char expects; output is taken (/char/serial)", T, async () => {
    const fds = openFds();
    const d = await open(domainXml(`<serial type='dev'><source path='/dev/null'/></serial>`));
    const dev = d.device('serial0');
    const events = eventLog(dev);
    await sleep(0);
    assert.deepEqual(events, ['open']);
    assert.equal(dev.filename, 'serial');
    assert.equal(dev.write(Buffer.from('into the void')), 13);
    await d.stop();
    await sleep(10);
    assert.deepEqual(newFds(fds), []);
  });

  it("parallel on /dev/null is refused with QEMU's 'not a parallel port', leaving no fd open (/char/parallel)", T, async () => {
    const fds = openFds();
    await assert.rejects(open(domainXml(`<parallel type='dev'><source path='/dev/null'/></parallel>`)), (e: unknown) => {
      assert.ok(e instanceof ChardevError);
      assert.equal(e.code, 'ERR_BACKEND_OPEN');
      assert.match(e.message, /^charparallel0: \/dev\/null: not a parallel port: /);
      return true;
    });
    assert.deepEqual(newFds(fds), []);
  });

  it('serial on a regular file or a missing path is refused before any I/O', T, async () => {
    const dir = tmpDir('dev');
    try {
      const file = path.join(dir, 'plain');
      fs.writeFileSync(file, '');
      await assert.rejects(open(domainXml(`<serial type='dev'><source path='${q(file)}'/></serial>`)), /charserial0: '.*plain' is not a character device/);
      await assert.rejects(
        open(domainXml(`<serial type='dev'><source path='${q(path.join(dir, 'none'))}'/></serial>`)),
        /charserial0: Could not open '.*none'/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serial on a real tty: set raw 115200 8N1; bytes pass both ways unchanged', T, async () => {
    // A pty stands in for a serial line: its slave is the "host device", the master the far end.
    const pty = linuxPlatform.openPty();
    const d = await open(domainXml(`<serial type='dev'><source path='${q(pty.slavePath)}'/></serial>`));
    const farEnd: Buffer[] = [];
    const reader = linuxPlatform.openPtyReader(pty.masterFd, { onData: (b) => farEnd.push(b) });
    try {
      const stty = (await run('stty', ['-F', pty.slavePath, '-a'])).stdout.toString();
      assert.match(stty, /speed 115200 baud/);
      for (const flag of ['-icanon', '-echo', '-opost', '-isig', '-icrnl', '-ixon', 'cs8', '-cstopb', '-parenb', '-crtscts']) {
        assert.ok(new RegExp(`(^|\\s)${flag.replace('-', '\\-')}(\\s|$)`, 'm').test(stty), `expected ${flag} in ${stty}`);
      }
      const dev = d.device('serial0');
      const input = collect(dev);
      const out = payload(5000);
      assert.equal(dev.write(out), out.length);
      await waitFor(() => Buffer.concat(farEnd).length >= out.length, 'far end to receive guest output');
      assert.deepEqual(Buffer.concat(farEnd), out);
      const back = payload(3000).reverse();
      fs.writeSync(pty.masterFd, back);
      await waitFor(() => input.bytes().length >= back.length, 'guest to receive far-end bytes');
      assert.deepEqual(input.bytes(), back);
    } finally {
      reader.close();
      await d.stop();
      linuxPlatform.close(pty.masterFd);
    }
  });
});
