/**
 * The real-guest tests' kit and plumbing (test/qemu/guest.test.ts, test/qemu/lossless.test.ts):
 * Debian's qemu-system-x86, a kernel from Debian's linux-image-amd64 and the few virtio
 * modules scripts/guest-kit.sh puts in .cache/guest/, an initramfs built here from
 * busybox-static, and `chardev qemu` run in the background.
 *
 * In CI (CI set) a missing kit is a failure; elsewhere the tests skip and say why.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from '../helpers/paths.ts';
import { waitFor } from '../core/helpers.ts';

export const BIN = path.join(ROOT, 'bin', 'chardev.js');
export const QEMU = 'qemu-system-x86_64';
const KIT_ENV = path.join(ROOT, '.cache', 'guest', 'kit.env');

export function onPath(cmd: string): boolean {
  return (process.env['PATH'] ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, cmd)));
}

export interface Kit {
  readonly kernel: string;
  readonly busybox: string;
  /**
   * The modules a virtio-serial port needs (a directory whose `load-order` lists its .ko files
   * in insmod order; empty when they are built in), or why there are none.
   */
  readonly modules: { readonly dir: string } | { readonly missing: string };
}

/** The guest kit, or why it is not there. */
export function findKit(): Kit | string {
  if (!onPath(QEMU)) return `${QEMU} is not installed (apt-get install --no-install-recommends qemu-system-x86)`;
  if (!onPath('cpio')) return 'cpio is not installed (apt-get install cpio)';
  let env: string;
  try {
    env = fs.readFileSync(KIT_ENV, 'utf8');
  } catch {
    return `no guest kit: run scripts/guest-kit.sh (it writes ${path.relative(ROOT, KIT_ENV)})`;
  }
  const get = (k: string): string => new RegExp(`^${k}=(.*)$`, 'm').exec(env)?.[1] ?? '';
  const kernel = get('CHARDEV_GUEST_KERNEL');
  const busybox = get('CHARDEV_GUEST_BUSYBOX');
  const modules = get('CHARDEV_GUEST_MODULES');
  if (!fs.existsSync(kernel)) return `the guest kernel ${kernel || '(none)'} is missing: run scripts/guest-kit.sh`;
  if (!fs.existsSync(busybox)) return `busybox ${busybox || '(none)'} is missing: apt-get install busybox-static`;
  return {
    kernel,
    busybox,
    modules:
      modules !== '' && fs.existsSync(path.join(modules, 'load-order'))
        ? { dir: modules }
        : { missing: `the guest kit has no virtio modules (${modules || 'an older kit'}): run scripts/guest-kit.sh` },
  };
}

export const qemuMissing = onPath(QEMU) ? undefined : `${QEMU} is not installed (apt-get install --no-install-recommends qemu-system-x86)`;

/** Skip locally with the reason; in CI the missing piece is the failure. */
export function needs(reason: string | undefined): { skip?: string } {
  return reason !== undefined && process.env['CI'] === undefined ? { skip: reason } : {};
}
export function requireKit(reason: string | undefined): void {
  if (reason !== undefined) assert.fail(`CI must provide the real-guest kit: ${reason}`);
}

/**
 * A newc initramfs with busybox and `init` as /init, built with cpio. With `modules` (the kit's
 * directory), its .ko files and `load-order` go to /lib/modules/ for init to insmod.
 */
export function buildInitramfs(dir: string, busybox: string, init: string, modules?: string): string {
  const tree = path.join(dir, 'initramfs');
  fs.mkdirSync(path.join(tree, 'bin'), { recursive: true });
  fs.copyFileSync(busybox, path.join(tree, 'bin', 'busybox'));
  fs.chmodSync(path.join(tree, 'bin', 'busybox'), 0o755);
  fs.writeFileSync(path.join(tree, 'init'), init, { mode: 0o755 });
  if (modules !== undefined) {
    const to = path.join(tree, 'lib', 'modules');
    fs.mkdirSync(to, { recursive: true });
    const order = fs.readFileSync(path.join(modules, 'load-order'), 'utf8');
    for (const ko of order.split('\n').filter((l) => l !== '')) fs.copyFileSync(path.join(modules, ko), path.join(to, ko));
    fs.writeFileSync(path.join(to, 'load-order'), order);
  }
  const out = path.join(dir, 'initramfs.cpio');
  execFileSync('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet > "$2"', 'sh', tree, out]);
  return out;
}

/** `chardev qemu ARGS…` in the background, its stdout and stderr collected. */
/**
 * QEMU's command line for the kit's guest: TCG, no display, no reboot (a guest that ends
 * ends QEMU), the kernel's console on the first serial port; `append` adds to that.
 */
export function guestQemuArgv(kernel: string, initrd: string, opts: { memMb?: number; append?: string } = {}): string[] {
  const append = ['console=ttyS0 panic=-1', opts.append].filter((a) => a !== undefined && a !== '').join(' ');
  return [QEMU, '-accel', 'tcg', '-m', String(opts.memMb ?? 256), '-display', 'none', '-no-reboot', '-kernel', kernel, '-initrd', initrd, '-append', append];
}

export function chardevQemu(args: readonly string[]) {
  const child = spawn(process.execPath, [BIN, 'qemu', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  let done = false;
  const exited = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      done = true;
      resolve(code);
    }),
  );
  return {
    child,
    exited,
    /** Cleanup after a failure: SIGTERM (chardev stops QEMU), SIGKILL if that takes too long. */
    stop: async () => {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
      await exited;
      clearTimeout(timer);
    },
    stdout: () => stdout,
    stderr: () => stderr,
    /** waitFor on its output, which the failure message shows. */
    until: async (cond: () => boolean, what: string, ms: number) => {
      try {
        await waitFor(cond, what, ms);
      } catch (e) {
        throw new Error(`${(e as Error).message}\nchardev stdout: ${stdout}\nchardev stderr: ${stderr}`);
      }
    },
  };
}

/**
 * `p`'s value, or 'timeout' after `ms`. The timer is cleared: a pending one would keep the
 * test file's process alive that long after its last test.
 */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([p, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Running (a zombie nobody reaped yet counts as gone). */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}
