/** Shared plumbing for runtime tests: temp dirs, domain documents, fd accounting. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadDomain, type LoadedDomain } from '../../src/config/domain.ts';
import type { Chardev } from '../../src/core/chardev.ts';

export { waitFor, run, payload, trackedFds } from '../platform/helpers.ts';

/** Per-test timeout: every runtime test must finish or fail, never hang. */
export const T = { timeout: 15000 };

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `chardev-${prefix}-`));
}

/** XML attribute escaping for paths put into test documents. */
export function q(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/</g, '&lt;');
}

export { domainXml } from '../helpers/domain-xml.ts';
import { domainXml } from '../helpers/domain-xml.ts';

export function load(devices: string, name = 't'): LoadedDomain {
  return loadDomain(domainXml(devices, name), { file: 'test.xml' });
}

/** Every open fd of this process (number → target), for before/after comparisons. */
export function openFds(): Map<string, string> {
  const result = new Map<string, string>();
  for (const name of fs.readdirSync('/proc/self/fd')) {
    try {
      result.set(name, fs.readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // the directory fd readdir itself used
    }
  }
  return result;
}

/** Fds open now that were not open in `before` (ignoring libuv/V8 internals like anon_inode/eventfd). */
export function newFds(before: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [fd, target] of openFds()) {
    if (before.get(fd) === target) continue;
    if (/^anon_inode:/.test(target)) continue;
    out.push(`${fd} -> ${target}`);
  }
  return out;
}

/** Collect everything a device delivers to the guest. */
export function collect(dev: Chardev): { readonly bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  dev.on('data', (b) => chunks.push(b));
  return { bytes: () => Buffer.concat(chunks) };
}

/** Count open/close events of a device. */
export function eventLog(dev: Chardev): string[] {
  const events: string[] = [];
  dev.on('open', () => events.push('open'));
  dev.on('close', () => events.push('close'));
  return events;
}

export function mode(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

/**
 * What a frontend does under QEMU's flow control: write, keep what the device refused,
 * and go on when it says 'writable'. Resolves once the device has taken every byte.
 */
export function writeAll(dev: Chardev, data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    let off = 0;
    const more = (): void => {
      while (off < data.length) {
        if (dev.stopped) {
          dev.off('writable', more);
          reject(new Error(`${dev.id} stopped with ${data.length - off} bytes not taken`));
          return;
        }
        const n = dev.write(data.subarray(off));
        off += n;
        if (n === 0) return;
      }
      dev.off('writable', more);
      resolve();
    };
    dev.on('writable', more);
    more();
  });
}
