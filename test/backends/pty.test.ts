/** The pty backend against real ptys, with socat as the external client holding /dev/pts/N. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from '../../src/index.ts';
import type { Domain } from '../../src/core/domain.ts';
import { T, collect, domainXml, eventLog, newFds, openFds, payload, waitFor } from '../core/helpers.ts';

/** An external process with the slave open: its stdout is what the guest wrote, its stdin goes to the guest. */
class Client {
  readonly child: ChildProcess;
  readonly #out: Buffer[] = [];
  readonly #exited: Promise<void>;
  constructor(slavePath: string) {
    this.child = spawn('socat', ['-', `${slavePath},raw,echo=0`], { stdio: ['pipe', 'pipe', 'ignore'] });
    this.child.stdout?.on('data', (b: Buffer) => this.#out.push(b));
    this.child.stdin?.on('error', () => {});
    this.#exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }
  get received(): Buffer {
    return Buffer.concat(this.#out);
  }
  send(data: Uint8Array): void {
    this.child.stdin?.write(data);
  }
  async leave(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.#exited;
  }
}

describe('pty backend (real pty, socat client)', () => {
  let domain: Domain | undefined;
  const clients: Client[] = [];
  let fds = new Map<string, string>();
  before(() => {
    fds = openFds();
  });
  after(async () => {
    for (const c of clients) await c.leave();
    await domain?.stop();
    await sleep(20);
    assert.deepEqual(newFds(fds), [], 'every fd the pty tests opened is closed again');
  });

  async function start(): Promise<Domain> {
    await domain?.stop();
    domain = await open(domainXml(`<serial type='pty'/>`), { ptyPollMs: 25 });
    return domain;
  }
  function client(slave: string): Client {
    const c = new Client(slave);
    clients.push(c);
    return c;
  }

  it('output before any reader is discarded but reported as written; then both directions work', T, async () => {
    const d = await start();
    const dev = d.device('serial0');
    const slave = dev.ptyPath ?? assert.fail('no pty path');
    const events = eventLog(dev);
    const input = collect(dev);
    assert.equal(dev.write(Buffer.from('before any reader\n')), 18);
    assert.equal(dev.counters.dropped, 18);
    await sleep(80);
    assert.equal(events.length, 0, 'no client, no open');

    const c = client(slave);
    await waitFor(() => events.includes('open'), 'open after the client connected');
    const out = payload(65536);
    let accepted = 0;
    for (let off = 0; off < out.length; off += 4096) accepted += dev.write(out.subarray(off, off + 4096));
    assert.equal(accepted, out.length);
    await waitFor(() => c.received.length >= out.length, `client to receive ${out.length} bytes`);
    assert.deepEqual(c.received, out, 'exactly the bytes written after the client came, none from before');

    const back = payload(20000).reverse();
    c.send(back);
    await waitFor(() => input.bytes().length >= back.length, 'guest to receive the client input');
    assert.deepEqual(input.bytes(), back);
    assert.equal(dev.counters.bytesToGuest, back.length);
    assert.equal(dev.counters.bytesFromGuest, 18 + out.length);
  });

  it('a reader that comes and goes: open, close, open again', T, async () => {
    const d = await start();
    const dev = d.device('serial0');
    const slave = dev.ptyPath ?? assert.fail('no pty path');
    const events = eventLog(dev);
    const first = client(slave);
    await waitFor(() => events.length === 1, 'first open');
    await first.leave();
    await waitFor(() => events.length === 2, 'close when the reader left');
    dev.write(Buffer.from('while away\n'));
    const second = client(slave);
    await waitFor(() => events.length === 3, 'second open');
    assert.deepEqual(events, ['open', 'close', 'open']);
    dev.write(Buffer.from('hello again\n'));
    await waitFor(() => second.received.length >= 12, 'second client output');
    assert.equal(second.received.toString(), 'hello again\n');
  });

  it('input waits in the kernel until the guest listens (can_read)', T, async () => {
    const d = await start();
    const dev = d.device('serial0');
    const events = eventLog(dev);
    const c = client(dev.ptyPath ?? '');
    await waitFor(() => events.includes('open'), 'open');
    c.send(Buffer.from('queued'));
    await sleep(100);
    assert.equal(dev.counters.bytesToGuest, 0, 'nobody listens: nothing read');
    const input = collect(dev);
    await waitFor(() => input.bytes().length === 6, 'queued input after a data listener was added');
    assert.equal(input.bytes().toString(), 'queued');
  });
});
