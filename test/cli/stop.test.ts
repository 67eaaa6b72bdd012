/**
 * `chardev stop NAME` on a domain running alone (`chardev run`): its own SIGTERM path stops
 * the guest and the devices; stop returns once the domain is gone. (Under the daemon it is
 * tested in test/daemon/ and test/qemu/daemon.test.ts.)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run } from '../platform/helpers.ts';
import { BIN, Daemon, alive } from './daemon.ts';

describe('chardev stop', () => {
  let dir = '';
  let d: Daemon | undefined;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-stop-'));
  });
  after(async () => {
    await d?.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stops a domain running alone (SIGTERM to its process) and waits until it is gone; an unknown domain is an error', { timeout: 40000 }, async () => {
    const runDir = path.join(dir, 'run');
    const file = path.join(dir, 'alone.xml');
    fs.writeFileSync(file, "<domain><name>alone</name><devices><serial type='null'/></devices></domain>");
    d = new Daemon(['run', file, '--run-dir', runDir, '--log-dir', path.join(dir, 'logs'), '--', 'sleep', '60']);
    await d.match(/guest is sleep/, 'the domain to start');
    const stopped = await run(process.execPath, [BIN, 'stop', 'alone', '--run-dir', runDir], 30000);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout.toString(), "Domain 'alone' stopped\n");
    assert.equal(fs.existsSync(path.join(runDir, 'alone.json')), false, 'gone when stop returns');
    assert.equal(await d.exitWithin(5000), 128 + 15, "chardev run's status for SIGTERM");
    assert.equal(alive(d.pid), false);
    const again = await run(process.execPath, [BIN, 'stop', 'alone', '--run-dir', runDir], 30000);
    assert.equal(again.code, 1);
    assert.equal(again.stderr, "failed to get domain 'alone'\n");
  });
});
