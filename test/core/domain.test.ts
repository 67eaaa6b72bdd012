/** The runtime core with the simple backends: start, write, log tee, events, all-or-nothing, stop. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatDomain } from '../../src/config/format.ts';
import { startDomain } from '../../src/core/domain.ts';
import '../../src/backends/index.ts';
import { ChardevError } from '../../src/errors.ts';
import { open, loadDomain } from '../../src/index.ts';
import { T, domainXml, eventLog, load, mode, newFds, openFds, q, tmpDir } from './helpers.ts';

async function startError(p: Promise<unknown>): Promise<ChardevError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ChardevError, `expected a ChardevError, got ${String(e)}`);
    return e;
  }
  assert.fail('start should have failed');
}

describe('runtime core', () => {
  let dir = '';
  before(() => {
    dir = tmpDir('core');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('null: every write succeeds, nothing comes back, never opens (/char/null)', T, async () => {
    const d = await startDomain(load(`<serial type='null'/>`));
    const dev = d.device('serial0');
    const events = eventLog(dev);
    let input = 0;
    dev.on('data', (b) => (input += b.length));
    assert.equal(dev.write(Buffer.from('discard me')), 10);
    await sleep(50);
    assert.deepEqual(events, []);
    assert.equal(dev.isOpen, false);
    assert.equal(input, 0);
    assert.deepEqual(dev.counters, { bytesFromGuest: 10, bytesToGuest: 0, dropped: 0 });
    assert.equal(dev.filename, 'null');
    await d.stop();
    assert.equal(dev.write(Buffer.from('x')), 0, 'a stopped device accepts nothing');
  });

  it('file: truncates at start, 0600, opened at once (late listeners get open replayed) (/char/file)', T, async () => {
    const file = path.join(dir, 'trunc.log');
    fs.writeFileSync(file, 'old contents\n');
    const d = await open(domainXml(`<serial type='file'><source path='${q(file)}'/></serial>`));
    const dev = d.device('charserial0');
    const events = eventLog(dev);
    await sleep(0);
    assert.deepEqual(events, ['open']);
    assert.equal(dev.write(Buffer.from('new\n')), 4);
    assert.equal(dev.write(Buffer.from([0, 255, 10])), 3);
    await d.stop();
    assert.deepEqual(fs.readFileSync(file), Buffer.from([...Buffer.from('new\n'), 0, 255, 10]));
    assert.deepEqual(events, ['open', 'close'], 'stop sends CLOSED like QEMU destroying a chardev');
  });

  it("file: append='on' keeps what was there; a new file is created 0600", T, async () => {
    const file = path.join(dir, 'append.log');
    fs.writeFileSync(file, 'first\n');
    const fresh = path.join(dir, 'fresh.log');
    const d = await open(
      domainXml(`<serial type='file'><source path='${q(file)}' append='on'/></serial><serial type='file'><source path='${q(fresh)}'/></serial>`),
    );
    d.device('serial0').write(Buffer.from('second\n'));
    d.device('serial1').write(Buffer.from('x'));
    await d.stop();
    assert.equal(fs.readFileSync(file, 'utf8'), 'first\nsecond\n');
    assert.equal(mode(fresh), 0o600);
  });

  it('file: a missing directory is an error naming the device and the path', T, async () => {
    const file = path.join(dir, 'no', 'such', 'dir', 'f.log');
    const err = await startError(open(domainXml(`<serial type='file'><source path='${q(file)}'/></serial>`)));
    assert.equal(err.code, 'ERR_BACKEND_OPEN');
    assert.equal(err.message, `charserial0: file: Could not open '${file}': directory '${path.dirname(file)}' does not exist`);
  });

  it('<log>: records every byte the guest writes, for any type, 0600, truncated unless append', T, async () => {
    const logA = path.join(dir, 'tee-null.log');
    const logB = path.join(dir, 'tee-pty.log');
    fs.writeFileSync(logA, 'stale');
    fs.writeFileSync(logB, 'kept:');
    const d = await open(
      domainXml(
        `<serial type='null'><log file='${q(logA)}'/></serial>` +
          `<serial type='pty'><log file='${q(logB)}' append='on'/></serial>` +
          `<serial type='null'><log file='${q(path.join(dir, 'tee-new.log'))}'/></serial>`,
      ),
    );
    const all = Buffer.alloc(256);
    for (let i = 0; i < 256; i++) all[i] = i;
    for (const alias of ['serial0', 'serial1']) {
      const dev = d.device(alias);
      for (let off = 0; off < all.length; off += 37) assert.equal(dev.write(all.subarray(off, off + 37)), Math.min(37, 256 - off));
    }
    // The pty has no reader: its output is discarded by the backend, but still logged.
    assert.equal(d.device('serial1').counters.dropped, 256);
    await d.stop();
    assert.deepEqual(fs.readFileSync(logA), all);
    assert.deepEqual(fs.readFileSync(logB), Buffer.concat([Buffer.from('kept:'), all]));
    assert.equal(mode(path.join(dir, 'tee-new.log')), 0o600, 'a log file chardev creates is owner-only');
  });

  it('types that need other software fail at start with ERR_BACKEND_UNSUPPORTED naming the device', T, async () => {
    const cases: Array<[string, string]> = [
      [`<channel type='qemu-vdagent'><target type='virtio' name='com.redhat.spice.0'/></channel>`, 'qemu-vdagent'],
      [`<channel type='dbus'><source channel='org.qemu.x'/><target type='virtio' name='org.qemu.x'/></channel>`, 'dbus'],
      // bhyve's null-modem pair: a valid document (libvirt 9.0.0 formats it), nothing to start it with.
      [`<channel type='nmdm'><source master='/dev/nmdm0A' slave='/dev/nmdm0B'/><target type='virtio' name='org.qemu.x'/></channel>`, 'nmdm'],
    ];
    for (const [xml, type] of cases) {
      const err = await startError(open(domainXml(xml)));
      assert.equal(err.code, 'ERR_BACKEND_UNSUPPORTED');
      assert.equal(err.message, `charchannel0: host interface type '${type}' is not supported yet`);
    }
  });

  it('start is all-or-nothing: a failing device leaves no files, fds or timers behind', T, async () => {
    const made = path.join(dir, 'aon-made.log');
    const tee = path.join(dir, 'aon-tee.log');
    const existing = path.join(dir, 'aon-existing.log');
    fs.writeFileSync(existing, 'must survive\n');
    const fifo = path.join(dir, 'aon-fifo');
    fs.rmSync(fifo, { force: true });
    await import('../../src/platform/index.ts').then(({ linuxPlatform }) => linuxPlatform.mkfifo(fifo, 0o600));
    const logDir = path.join(dir, 'aon-logs');
    fs.mkdirSync(logDir);
    const bad = path.join(dir, 'missing-dir', 'x.log');
    const fds = openFds();
    const err = await startError(
      open(
        domainXml(
          `<serial type='file'><source path='${q(made)}'/><log file='${q(tee)}'/></serial>` +
            `<serial type='pty'/>` +
            `<serial type='pipe'><source path='${q(fifo)}'/></serial>` +
            `<serial type='stdio'/>` +
            `<parallel type='file'><source path='${q(existing)}' append='on'/></parallel>` +
            `<channel type='file'><source path='${q(bad)}'/><target type='virtio' name='x'/></channel>`,
        ),
        { logDir, name: 'aon' },
      ),
    );
    assert.match(err.message, /^charchannel0: file: Could not open '.*missing-dir\/x\.log': directory '.*missing-dir' does not exist$/);
    assert.equal(fs.existsSync(made), false, 'file created by the failed start is removed');
    assert.equal(fs.existsSync(tee), false, 'log created by the failed start is removed');
    assert.equal(fs.existsSync(path.join(logDir, 'aon.log')), false, 'domain log created by the failed start is removed');
    assert.equal(fs.readFileSync(existing, 'utf8'), 'must survive\n', 'files that existed before are left alone');
    assert.ok(fs.statSync(fifo).isFIFO(), 'FIFOs are the user’s: QEMU never creates or removes them');
    await sleep(20);
    assert.deepEqual(newFds(fds), []);
  });

  it('stop releases every fd and timer (pty, file, pipe, stdio, log)', T, async () => {
    const fifo = path.join(dir, 'stop-fifo');
    const { linuxPlatform } = await import('../../src/platform/index.ts');
    linuxPlatform.mkfifo(fifo, 0o600);
    const fds = openFds();
    const d = await open(
      domainXml(
        `<serial type='pty'><log file='${q(path.join(dir, 'stop-tee.log'))}'/></serial>` +
          `<serial type='file'><source path='${q(path.join(dir, 'stop-file.log'))}'/></serial>` +
          `<serial type='pipe'><source path='${q(fifo)}'/></serial>` +
          `<serial type='stdio'/>`,
      ),
      { logDir: dir, ptyPollMs: 10 },
    );
    for (const dev of d.devices.values()) dev.on('data', () => {});
    assert.ok(newFds(fds).length >= 5, `expected the devices' fds to be open: ${newFds(fds).join(', ')}`);
    await d.stop();
    await d.stop(); // idempotent
    assert.deepEqual(newFds(fds), []);
    // No timer keeps the loop alive: the pty poll is unref'd and cleared.
    const handles = (process as unknown as { getActiveResourcesInfo(): string[] }).getActiveResourcesInfo();
    assert.equal(handles.filter((h) => h === 'Timeout').length, 0, `active: ${handles.join(', ')}`);
  });

  it(
    'stdio: the domain log LOGDIR/NAME.log, appended across runs, input disabled (/char/stdio: libvirt sends a stdio chardev to the domain log)',
    T,
    async () => {
      const logDir = path.join(dir, 'stdio');
      fs.mkdirSync(logDir);
      for (const text of ['run 1\n', 'run 2\n']) {
        const d = await open(domainXml(`<serial type='stdio'/>`, 'vm1'), { logDir });
        const dev = d.device('serial0');
        const events = eventLog(dev);
        assert.equal(dev.write(Buffer.from(text)), text.length);
        await sleep(0);
        assert.deepEqual(events, ['open']);
        await d.stop();
      }
      assert.equal(fs.readFileSync(path.join(logDir, 'vm1.log'), 'utf8'), 'run 1\nrun 2\n');
      assert.equal(mode(path.join(logDir, 'vm1.log')), 0o600);
    },
  );

  it('stdio without a log directory is a usage error naming the device', T, async () => {
    const err = await startError(open(domainXml(`<serial type='stdio'/>`)));
    assert.equal(err.code, 'ERR_USAGE');
    assert.match(err.message, /^charserial0: /);
  });

  it('live XML: pty paths and tty= on console 0; devices by alias; primary is serial 0', T, async () => {
    const loaded = loadDomain(domainXml(`<serial type='pty'/><console type='pty'><target type='serial'/></console>`));
    const d = await open(loaded);
    assert.deepEqual([...d.devices.keys()], ['serial0'], 'the console is serial 0 seen again: no chardev of its own');
    const slave = d.device('serial0').ptyPath ?? '';
    assert.match(slave, /^\/dev\/pts\/\d+$/);
    assert.equal(d.primary(), d.device('serial0'));
    assert.equal(d.device('serial0').filename, `pty:${slave}`);
    assert.deepEqual(d.describe(), [`char device redirected to ${slave} (label charserial0)`]);
    const live = formatDomain(loaded, { live: true, state: d.liveState() });
    assert.ok(live.includes(`<source path='${slave}'/>`), live);
    assert.ok(live.includes(`<console type='pty' tty='${slave}'>`), live);
    assert.throws(() => d.device('serial9'), /no device 'serial9' in domain t \(has: serial0\)/);
    await d.stop();
  });
});
