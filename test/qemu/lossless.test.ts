/**
 * Nothing lost between a real QEMU guest and a slow client: the guest
 * writes 2,000,000 random bytes to a port, the checksum computed inside the guest; a real
 * client (Python) connected to the port's UNIX socket the whole time looks away for a few
 * seconds, then reads at 200 KB/s, and must get every byte, in order — as with QEMU serving
 * the socket itself, where a full socket makes the guest wait (the 16550 holds its
 * transmitter; virtio-serial throttles the port). Plain libvirt XML, no urn:chardev:1
 * extension.
 *
 * One boot of the guest kit (test/qemu/guest-kit.ts) for both ports: ttyS1 (isa-serial) and a
 * virtio-serial port (`<channel>` with a virtio target: QEMU's virtserialport, which throttles;
 * virtconsole drops by design, so it is not tested here), whose driver, virtio_console, the
 * initramfs carries as modules from Debian's kernel package (scripts/guest-kit.sh).
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Proc } from '../helpers/proc.ts';
import { q } from '../core/helpers.ts';
import { buildInitramfs, chardevQemu, findKit, needs, requireKit, within, type Kit, guestQemuArgv } from './guest-kit.ts';

const kit = findKit();
const kitMissing = typeof kit === 'string' ? kit : undefined;
const virtioMissing = typeof kit === 'string' ? kit : 'missing' in kit.modules ? kit.modules.missing : undefined;

/** What the guest writes to each port. */
const SIZE = 2_000_000;
/** How fast the client reads, in bytes per second. */
const RATE = 200_000;
/**
 * How long the client looks away at the first byte, in seconds. The 16550 under TCG, not held,
 * writes only about as fast as the client reads (150–360 KB/s measured), so a client that
 * merely read slowly would let a lossy chardev pass with its buffers; in 10 s the guest gets
 * 1.5 MB or more ahead of the client, more than any buffer on the way (chardev's old 1 MiB
 * client queue lost half the stream here). virtio-serial, not held, writes 2 MB in a tenth of
 * a second: a short stall does.
 */
const SERIAL_PAUSE = 10;
const CHANNEL_PAUSE = 3;
/** The virtio-serial port's name (`<target type='virtio' name=…>`). */
const CHANNEL = 'org.test.0';

/**
 * /init: the virtio modules (if any), then a shell on the console (ttyS0), as its controlling
 * tty. A module that fails to load is reported on the console, and the virtio test says so.
 */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in $(cat /lib/modules/load-order 2>/dev/null); do insmod /lib/modules/$m || echo "chardev-guest: insmod $m failed"; done
echo chardev-guest-ready
exec setsid cttyhack sh
`;

/**
 * The client: connects to a UNIX socket and says so. From the first byte on, it takes nothing
 * for `pause` seconds (a client that looks away: the guest must wait, not lose what it wrote
 * meanwhile), then reads at `rate` bytes/s until it has `size` bytes (and half a second more,
 * so extra bytes would be counted too) or nothing came for `idle` seconds; it prints what it
 * got as JSON: count, sha256, seconds from the first byte to the last.
 */
const READER = String.raw`
import hashlib, json, socket, sys, time
path, size, rate, idle, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
print("connected", flush=True)
s.settimeout(0.1)
h = hashlib.sha256()
count = 0
first = last = start = None
end = None
while True:
    now = time.monotonic()
    if end is not None and now >= end:
        break
    if last is not None and end is None and now - last > idle:
        break
    try:
        b = s.recv(4096)
    except socket.timeout:
        continue
    if not b:
        break
    now = time.monotonic()
    if first is None:
        first = now
        time.sleep(pause)
        start = time.monotonic()
        now = start
    last = now
    h.update(b)
    count += len(b)
    if count >= size and end is None:
        end = now + 0.5
    ahead = start + count / rate - now
    if ahead > 0 and end is None:
        time.sleep(ahead)
print(json.dumps({"count": count, "sha256": h.hexdigest(), "seconds": 0 if first is None else last - first}), flush=True)
`;

interface Got {
  readonly count: number;
  readonly sha256: string;
  readonly seconds: number;
}

/** A paced reader on `sock`, connected: it stops for `pause` s at the first byte, then reads at RATE. */
async function slowReader(label: string, sock: string, pause: number): Promise<Proc> {
  const p = new Proc(label, 'python3', ['-c', READER, sock, String(SIZE), String(RATE), '10', String(pause)]);
  await p.until(() => p.text.startsWith('connected\n') || p.exited, `${label} to connect`, 10000);
  assert.ok(!p.exited, `${label} could not connect to ${sock}: ${p.stderr}`);
  return p;
}

/** What the reader got, once it is done (every byte, or nothing for its idle time). */
async function result(p: Proc, timeoutMs: number): Promise<Got> {
  await p.until(() => /^\{.*\}$/m.test(p.text), `${p.label} to finish`, timeoutMs);
  return JSON.parse(/^\{.*\}$/m.exec(p.text)?.[0] ?? '{}') as Got;
}

describe('chardev qemu with a real guest: a slow client gets every byte the guest writes', { ...needs(kitMissing) }, () => {
  let dir = '';
  let c: ReturnType<typeof chardevQemu> | undefined;
  let consoleClient: Proc | undefined;
  const readers: Proc[] = [];
  const serialSock = (): string => path.join(dir, 'serial1.sock');
  const channelSock = (): string => path.join(dir, 'channel.sock');

  /** The console's output from `from` on. */
  const consoleText = (from: number): string => consoleClient?.text.slice(from) ?? '';
  /** Types `cmd` at the guest's shell; its output starts after the returned offset. */
  function type(cmd: string): number {
    const from = consoleClient?.text.length ?? 0;
    consoleClient?.child.stdin.write(`${cmd}\n`);
    return from;
  }
  async function onConsole(re: RegExp, from: number, what: string, ms: number): Promise<RegExpExecArray> {
    const cons = consoleClient;
    assert.ok(cons !== undefined, 'the guest console');
    await cons.until(() => re.test(consoleText(from)), what, ms);
    return re.exec(consoleText(from)) as RegExpExecArray;
  }

  /**
   * The guest makes SIZE random bytes in its tmpfs, prints their sha256 on the console, then
   * writes them to `dev` (a shell expression; `prepare` runs first in the guest) while the
   * client reads `sock`: it looks away for `pause` s at the first byte, then reads at RATE.
   *
   * `dd bs=4096`, not `cat`: busybox cat uses sendfile, and virtio_console queues each splice (up to
   * 64 KiB) as one of its port's 128 buffers, so the whole 2 MB would sit in the virtqueue and
   * the guest's write return at once (QEMU still throttles the port: no loss either way); with
   * 4 KiB writes the queue is full at 512 KiB and the guest itself waits, as its clock shows.
   */
  async function transfer(t: TestContext, name: string, sock: string, pause: number, prepare: string, dev: string): Promise<void> {
    const reader = await slowReader(`reader ${name}`, sock, pause);
    readers.push(reader);
    const file = `/tmp/${name}`;
    const from = type(
      `${prepare} && head -c ${SIZE} /dev/urandom > ${file} && sha256sum ${file} && echo "size=$(wc -c < ${file})" && s=$(cut -d' ' -f1 /proc/uptime) && dd if=${file} of=${dev} bs=4096 2>/dev/null && echo "${name}-done $s $(cut -d' ' -f1 /proc/uptime)" || echo "${name}-failed"`,
    );
    const sumAndSize = await onConsole(
      // Each alternative ends at its line's end: `$` would also match the end of what has
      // arrived so far, and a line half-read (size=20000 of size=2000000) would be taken whole.
      new RegExp(`^([0-9a-f]{64})  ${file}\\r?\\n(?:.*\\n)*?size=(\\d+)\\r?\\n|^${name}-failed\\r?\\n`, 'm'),
      from,
      `the guest's sha256 and size of ${file}`,
      30000,
    );
    assert.ok(sumAndSize[1] !== undefined, `the guest could not prepare ${name}:\n${consoleText(from)}`);
    const [, sum, size] = sumAndSize;
    assert.equal(Number(size), SIZE, `${file} in the guest`);
    const t0 = Date.now();
    // At RATE after the pause the client needs pause + SIZE / RATE s; the guest, held by it, about as long.
    const expectMs = (pause + SIZE / RATE) * 1000;
    const done = await onConsole(
      new RegExp(`^${name}-(?:done ([\\d.]+) ([\\d.]+)|failed)\\r?\\n`, 'm'),
      from,
      `the guest to finish writing to ${name}`,
      expectMs * 3 + 20000,
    );
    assert.ok(done[1] !== undefined, `the guest could not write to ${name}:\n${consoleText(from)}`);
    const guestSeconds = Number(done[2]) - Number(done[1]);
    const got = await result(reader, expectMs * 2 + 20000);
    t.diagnostic(
      `${name}: the guest wrote ${SIZE} B in ${guestSeconds.toFixed(1)} s (guest clock); the client, ${pause} s away at first then at ${RATE / 1000} KB/s, got ${got.count} B in ${got.seconds.toFixed(1)} s; ${((Date.now() - t0) / 1000).toFixed(1)} s from the checksum to the client's end`,
    );
    assert.deepEqual(
      { bytes: got.count, sha256: got.sha256 },
      { bytes: SIZE, sha256: sum },
      `${name}: what the client got (connected the whole time, ${pause} s away at first, then reading at ${RATE} B/s) — expected every byte the guest wrote, with the checksum the guest computed`,
    );
  }

  before(async () => {
    if (kitMissing !== undefined) return;
    const { kernel, busybox, modules } = kit as Kit;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chardev-lossless-'));
    const initrd = buildInitramfs(dir, busybox, INIT, 'dir' in modules ? modules.dir : undefined);
    const consoleSock = path.join(dir, 'console.sock');
    const file = path.join(dir, 'lossless.xml');
    fs.writeFileSync(
      file,
      `<domain type='kvm'>
  <name>lossless</name>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='unix'><source mode='bind' path='${q(consoleSock)}'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='${q(serialSock())}'/><target port='1'/></serial>
    <channel type='unix'><source mode='bind' path='${q(channelSock())}'/><target type='virtio' name='${CHANNEL}'/></channel>
  </devices>
</domain>
`,
    );
    c = chardevQemu([file, '--run-dir', path.join(dir, 'run'), '--log-dir', path.join(dir, 'logs'), '--', ...guestQemuArgv(kernel, initrd)]);
    const cq = c;
    await cq.until(() => (cq.stdout().match(/listening on unix:/g) ?? []).length >= 3, 'the UNIX sockets', 20000);
    consoleClient = new Proc('console', 'socat', ['-', `UNIX-CONNECT:${consoleSock}`]);
    await cq.until(() => /qemu: every device connected/.test(cq.stdout()), 'QEMU to connect every device', 20000);
    const t0 = Date.now();
    await onConsole(/chardev-guest-ready[\s\S]*# /, 0, 'the guest shell prompt', 90000);
    insmodFailures = consoleText(0).match(/^chardev-guest: insmod .*$/gm) ?? [];
    // No diagnostic outside a test: the first test says it.
    bootSeconds = (Date.now() - t0) / 1000;
  });
  let bootSeconds = 0;
  let insmodFailures: string[] = [];

  after(async () => {
    try {
      if (c !== undefined && consoleClient !== undefined) {
        // The guest powers off (QEMU and chardev end); stop() below is for when it did not.
        type('poweroff -f');
        await within(c.exited, 20000);
      }
    } finally {
      await c?.stop();
      await Promise.all([...readers, ...(consoleClient === undefined ? [] : [consoleClient])].map((p) => p.kill()));
      if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it(`ttyS1 (isa-serial) on a unix server: ${SIZE} B, read at ${RATE / 1000} KB/s, byte-exact`, { timeout: 120000 }, async (t) => {
    requireKit(kitMissing);
    t.diagnostic(`boot to the shell prompt under TCG: ${bootSeconds.toFixed(1)} s`);
    await transfer(t, 'serial', serialSock(), SERIAL_PAUSE, 'stty -F /dev/ttyS1 raw -echo 115200', '/dev/ttyS1');
  });

  it(`a virtio-serial port (virtserialport '${CHANNEL}') on a unix server: ${SIZE} B, read at ${RATE / 1000} KB/s, byte-exact`, {
    timeout: 120000,
    ...needs(virtioMissing),
  }, async (t) => {
    requireKit(virtioMissing);
    assert.deepEqual(insmodFailures, [], 'the virtio modules load in the guest');
    // devtmpfs names the port /dev/vportNpM; its name is in sysfs (udev would add the
    // /dev/virtio-ports/NAME link; busybox has no udev).
    const find = `v=; for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = ${CHANNEL} ] && v=/dev/\${p##*/}; done; echo "port: $v"; [ -n "$v" ]`;
    await transfer(t, 'channel', channelSock(), CHANNEL_PAUSE, find, '$v');
  });
});
