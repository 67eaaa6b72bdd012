/**
 * A running domain: every host device started all-or-nothing, like QEMU creating its
 * chardevs before the guest runs. If one cannot start, the ones already started are
 * stopped (removing files they created) and the error, which names the device, is thrown.
 */
import * as path from 'node:path';
import type { LoadedDomain } from '../config/domain.ts';
import { chardevId, hostDevices } from '../config/names.ts';
import type { LiveState } from '../config/types.ts';
import { createBackend } from '../backends/registry.ts';
import { ChardevError } from '../errors.ts';
import { linuxPlatform, type Platform } from '../platform/index.ts';
import type { RotationOptions } from './backend.ts';
import { Chardev } from './chardev.ts';
import { DEFAULT_ROTATION, RotatingLog } from './rotating-log.ts';

/** QEMU re-checks a client-less pty once a second. */
export const DEFAULT_PTY_POLL_MS = 1000;

export interface DomainOptions {
  /** Directory of the domain log (`stdio` devices write `LOGDIR/DOMAIN.log`). Required only if a stdio device exists. */
  readonly logDir?: string;
  /** Overrides the domain's `<name>` (also the default when there is none: `domain`). */
  readonly name?: string;
  /** Domain log rotation; default 2 MiB, 3 backups (virtlogd). */
  readonly rotation?: Partial<RotationOptions>;
  readonly ptyPollMs?: number;
  /** The OS seam; tests pass a FakePlatform. */
  readonly platform?: Platform;
  /** Run-time errors of devices that have no 'error' listener of their own. */
  readonly onError?: (err: ChardevError) => void;
}

export class Domain {
  readonly name: string;
  /** Running devices by alias (`serial0`, `parallel0`, …), in libvirt's start order. */
  readonly devices: ReadonlyMap<string, Chardev>;
  readonly #domainLog: RotatingLog | undefined;
  #stopping: Promise<void> | undefined;
  /**
   * A running domain keeps the process alive until stop(), as a listening
   * server does; the backends' own poll timers are unref'd.
   */
  #keepAlive: NodeJS.Timeout | undefined = setInterval(() => {}, 0x7fffffff);

  /** @internal Use startDomain(). */
  constructor(name: string, devices: Map<string, Chardev>, domainLog: RotatingLog | undefined) {
    this.name = name;
    this.devices = devices;
    this.#domainLog = domainLog;
  }

  /** The device by alias or chardev id; throws ERR_USAGE naming what exists. */
  device(name: string): Chardev {
    const alias = name.startsWith('char') ? name.slice(4) : name;
    const dev = this.devices.get(alias);
    if (dev === undefined) {
      throw new ChardevError('ERR_USAGE', `no device '${name}' in domain ${this.name} (has: ${[...this.devices.keys()].join(', ') || 'none'})`);
    }
    return dev;
  }

  /** The guest's main console: the first serial, else the first console, else undefined. */
  primary(): Chardev | undefined {
    const all = [...this.devices.values()];
    return all.find((d) => d.def.kind === 'serial') ?? all.find((d) => d.def.kind === 'console');
  }

  /** What live XML needs: pty slave paths and bound ports by alias (formatDomain's `state`). */
  liveState(): LiveState {
    const ptyPaths = new Map<string, string>();
    const boundServices = new Map<string, string>();
    for (const [alias, dev] of this.devices) {
      if (dev.ptyPath !== undefined) ptyPaths.set(alias, dev.ptyPath);
      if (dev.boundService !== undefined) boundServices.set(alias, dev.boundService);
    }
    return { ptyPaths, boundServices };
  }

  /** One line per host interface, e.g. `char device redirected to /dev/pts/3 (label charserial0)`. */
  describe(): string[] {
    return [...this.devices.values()].flatMap((d) => d.where.split('\n'));
  }

  /**
   * Stop every device and release every fd and timer. Idempotent. With `drainMs`, output
   * still queued for a slow reader first gets that long to leave (a guest's last words).
   */
  async stop(options: { readonly drainMs?: number } = {}): Promise<void> {
    const drainMs = options.drainMs ?? 0;
    if (drainMs > 0 && this.#stopping === undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([...this.devices.values()].map((d) => d.drained())),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs))),
      ]);
      clearTimeout(timer);
    }
    clearInterval(this.#keepAlive);
    this.#keepAlive = undefined;
    this.#stopping ??= stopAll([...this.devices.values()], this.#domainLog, false);
    await this.#stopping;
  }
}

async function stopAll(devices: Chardev[], domainLog: RotatingLog | undefined, abort: boolean): Promise<void> {
  // Reverse order, like teardown of anything built up step by step.
  await Promise.allSettled([...devices].reverse().map((d) => d.stop(abort)));
  domainLog?.close(abort);
}

export async function startDomain(loaded: LoadedDomain, options: DomainOptions = {}): Promise<Domain> {
  const name = options.name ?? loaded.def.name ?? 'domain';
  const platform = options.platform ?? linuxPlatform;
  const rotation: RotationOptions = { ...DEFAULT_ROTATION, ...options.rotation };
  const ptyPollMs = options.ptyPollMs ?? DEFAULT_PTY_POLL_MS;
  const started: Chardev[] = [];
  let domainLog: RotatingLog | undefined;
  const devices = new Map<string, Chardev>();
  try {
    for (const { dev, alias } of hostDevices(loaded.def)) {
      const id = chardevId(alias);
      const chardev = new Chardev(alias, id, dev);
      started.push(chardev);
      // Before the factory runs: a client backend may report while it is still connecting.
      if (options.onError !== undefined) chardev.setErrorFallback(options.onError);
      const backend = await createBackend({
        alias,
        id,
        dev,
        driver: loaded.driver,
        hub: chardev.hub,
        platform,
        ptyPollMs,
        events: {
          receive: (chunk) => chardev.receive(chunk),
          opened: () => chardev.opened(),
          closed: () => chardev.closed(),
          break: () => chardev.breakReceived(),
          error: (err) => chardev.reportError(err),
        },
        domainLog: () => {
          if (domainLog === undefined) {
            if (options.logDir === undefined) {
              throw new ChardevError('ERR_USAGE', `${id}: a stdio device writes the domain log, but no log directory was given`);
            }
            domainLog = new RotatingLog(id, path.join(options.logDir, `${name}.log`), rotation);
          }
          return domainLog;
        },
      });
      chardev.attach(backend);
      devices.set(alias, chardev);
      if (backend.openAtStart) chardev.opened();
    }
  } catch (err) {
    await stopAll(started, domainLog, true);
    throw err;
  }
  return new Domain(name, devices, domainLog);
}
