/**
 * A running domain: every host device started all-or-nothing, like QEMU creating its
 * chardevs before the guest runs. If one cannot start, the ones already started are
 * stopped (removing files they created) and the error, which names the device, is thrown.
 */
import * as path from 'node:path';
import type { LoadedDomain } from '../config/domain.ts';
import { aliasOfName, chardevId, hostDevices } from '../config/names.ts';
import type { DriverOptions } from '../config/postparse.ts';
import type { ChrDeviceDef, ChrSourceDef, LiveState } from '../config/types.ts';
import { createBackend } from './backend-registry.ts';
import { ChardevError } from '../errors.ts';
import { linuxPlatform, type Platform } from '../platform/index.ts';
import type { RotationOptions } from './rotating-log.ts';
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

/** How a device added to a running domain (Domain.add) is made. */
export interface AddDeviceOptions {
  /**
   * The device element its host interface is created for. `parallel` makes a `dev` source a
   * parallel port (PPCLAIM); anything else is created as a frontend-less `channel`.
   */
  readonly kind?: 'channel' | 'parallel';
  /** Keep the last N bytes of guest output, as `<cd:history size='N'/>` does (QMP's ringbuf). */
  readonly historyBytes?: number;
}

/** A device came or went after start (Domain.add / Domain.remove). */
export type DeviceChangeListener = (change: 'added' | 'removed', device: Chardev) => void;

/** What starting one more device needs; shared by startDomain and Domain.add. */
interface StartContext {
  readonly name: string;
  readonly driver: DriverOptions;
  readonly platform: Platform;
  readonly ptyPollMs: number;
  readonly rotation: RotationOptions;
  readonly options: DomainOptions;
  /** Opened by the first stdio device. */
  domainLog: RotatingLog | undefined;
}

/** QEMU-style identifier: a letter, then letters, digits, `-`, `.`, `_`. */
const ID_RE = /^[A-Za-z][A-Za-z0-9._-]*$/;

export class Domain {
  readonly name: string;
  /** Running devices by alias (`serial0`, `parallel0`, …), in libvirt's start order; added devices last. */
  readonly devices: ReadonlyMap<string, Chardev>;
  readonly #devices: Map<string, Chardev>;
  readonly #start: StartContext;
  /** Devices that Domain.add started (they have no element in the domain document). */
  readonly #added = new Set<Chardev>();
  /** Aliases being added right now. */
  readonly #adding = new Set<string>();
  readonly #watchers = new Set<DeviceChangeListener>();
  #stopping: Promise<void> | undefined;
  /**
   * A running domain keeps the process alive until stop(), as a listening
   * server does; the backends' own poll timers are unref'd.
   */
  #keepAlive: NodeJS.Timeout | undefined = setInterval(() => {}, 0x7fffffff);

  /** @internal Use startDomain(). */
  constructor(name: string, devices: Map<string, Chardev>, start: StartContext) {
    this.name = name;
    this.devices = devices;
    this.#devices = devices;
    this.#start = start;
  }

  /**
   * Start one more device (QMP's chardev-add), all-or-nothing. `id` is its chardev id as
   * given; its alias is `id` without a leading `char` (so `charfoo` and `foo` are one name).
   * The device has no guest frontend: it is created as a `channel` (or a `parallel`, see
   * AddDeviceOptions) that no document shows.
   */
  async add(id: string, source: ChrSourceDef, options: AddDeviceOptions = {}): Promise<Chardev> {
    const alias = aliasOfName(id);
    if (!ID_RE.test(id)) throw new ChardevError('ERR_USAGE', `'${id}' is not a valid chardev id (a letter, then letters, digits, '-', '.', '_')`);
    if (this.#stopping !== undefined) throw new ChardevError('ERR_USAGE', `${id}: domain ${this.name} is stopping`);
    if (this.#devices.has(alias) || this.#adding.has(alias) || [...this.#devices.values()].some((d) => d.id === id)) {
      throw new ChardevError('ERR_BACKEND_BUSY', `${id}: domain ${this.name} already has a device with this id or alias`);
    }
    const dev: ChrDeviceDef = {
      source,
      info: {},
      extensions: [],
      ext: options.historyBytes !== undefined ? { history: { sizeBytes: options.historyBytes } } : {},
      ...(options.kind === 'parallel' ? { kind: 'parallel', target: {} } : { kind: 'channel', target: { type: 'virtio' } }),
    };
    this.#adding.add(alias);
    try {
      const started: Chardev[] = [];
      let chardev: Chardev;
      try {
        chardev = await startDevice(this.#start, alias, id, dev, started);
      } catch (err) {
        await Promise.allSettled(started.map((c) => c.stop(true)));
        throw err;
      }
      if (this.#stopping !== undefined) {
        await chardev.stop(true);
        throw new ChardevError('ERR_USAGE', `${id}: domain ${this.name} stopped while the device was starting`);
      }
      this.#devices.set(alias, chardev);
      this.#added.add(chardev);
      for (const w of [...this.#watchers]) w('added', chardev);
      return chardev;
    } finally {
      this.#adding.delete(alias);
    }
  }

  /** Stop one device (alias or chardev id) and forget it (QMP's chardev-remove). */
  async remove(name: string): Promise<void> {
    const dev = this.#devices.get(name) ?? [...this.#devices.values()].find((d) => d.id === name) ?? this.device(name);
    this.#devices.delete(dev.alias);
    this.#added.delete(dev);
    try {
      await dev.stop();
    } finally {
      for (const w of [...this.#watchers]) w('removed', dev);
    }
  }

  /** True for a device Domain.add started, false for one of the domain document. */
  isAdded(device: Chardev): boolean {
    return this.#added.has(device);
  }

  /** Be told when devices are added or removed; returns the unsubscribe function. */
  watch(listener: DeviceChangeListener): () => void {
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  /** The device by alias or chardev id; throws ERR_USAGE naming what exists. */
  device(name: string): Chardev {
    const alias = aliasOfName(name);
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

  /**
   * The domain log `LOGDIR/NAME.log` (rotated like virtlogd), shared with the stdio devices;
   * opened on first use. Where an emulator's own stdout/stderr go, as under libvirt.
   */
  domainLog(): RotatingLog {
    return openDomainLog(this.#start);
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
   * still queued for a slow reader first leaves (a guest's last words): for as long as the
   * readers keep taking it, and `drainMs` more once they have taken nothing for that long.
   */
  async stop(options: { readonly drainMs?: number } = {}): Promise<void> {
    const drainMs = options.drainMs ?? 0;
    if (drainMs > 0 && this.#stopping === undefined) {
      const devices = [...this.devices.values()];
      const pending = (): number => devices.reduce((n, d) => n + d.pendingOutputBytes, 0);
      let done = false;
      const drained = Promise.all(devices.map((d) => d.drained())).then(() => (done = true));
      let last = pending();
      let progressAt = Date.now();
      while (!done && Date.now() - progressAt < drainMs) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.min(drainMs, DRAIN_CHECK_MS))))]);
        clearTimeout(timer);
        const now = pending();
        if (now < last) progressAt = Date.now();
        last = now;
      }
    }
    clearInterval(this.#keepAlive);
    this.#keepAlive = undefined;
    this.#stopping ??= stopAll([...this.devices.values()], this.#start, false);
    await this.#stopping;
  }
}

/** How often a draining stop looks whether the readers are still taking output. */
const DRAIN_CHECK_MS = 100;

async function stopAll(devices: Chardev[], start: StartContext, abort: boolean): Promise<void> {
  // Reverse order, like teardown of anything built up step by step.
  await Promise.allSettled([...devices].reverse().map((d) => d.stop(abort)));
  start.domainLog?.close(abort);
}

/** The shared domain log, opened by whoever needs it first. */
function openDomainLog(start: StartContext, id = start.name, who = 'the domain log'): RotatingLog {
  if (start.domainLog === undefined) {
    if (start.options.logDir === undefined) {
      throw new ChardevError('ERR_USAGE', `${id}: ${who}, but no log directory was given`);
    }
    // Whoever opens it first (a stdio device, or the emulator's own output), a write or
    // rotation failure goes to the domain's error sink: the log is the domain's, not a device's.
    const onError = start.options.onError;
    start.domainLog = new RotatingLog(id, path.join(start.options.logDir, `${start.name}.log`), start.rotation, {
      what: 'domain log',
      ...(onError !== undefined ? { onError } : {}),
    });
  }
  return start.domainLog;
}

/** Create one device and its backend; a created Chardev is pushed to `started` first, so a failure can stop it. */
async function startDevice(start: StartContext, alias: string, id: string, dev: ChrDeviceDef, started: Chardev[]): Promise<Chardev> {
  const { options } = start;
  const chardev = new Chardev(alias, id, dev);
  started.push(chardev);
  // Before the factory runs: a client backend may report while it is still connecting.
  if (options.onError !== undefined) chardev.setErrorFallback(options.onError);
  const backend = await createBackend({
    alias,
    id,
    dev,
    driver: start.driver,
    hub: chardev.hub,
    platform: start.platform,
    ptyPollMs: start.ptyPollMs,
    events: {
      receive: (chunk) => chardev.receive(chunk),
      opened: () => chardev.opened(),
      closed: () => chardev.closed(),
      break: () => chardev.breakReceived(),
      error: (err) => chardev.reportError(err),
      writable: () => chardev.writableAgain(),
    },
    domainLog: () => openDomainLog(start, id, 'a stdio device writes the domain log'),
  });
  chardev.attach(backend);
  if (backend.openAtStart) chardev.opened();
  return chardev;
}

export async function startDomain(loaded: LoadedDomain, options: DomainOptions = {}): Promise<Domain> {
  const start: StartContext = {
    name: options.name ?? loaded.def.name ?? 'domain',
    driver: loaded.driver,
    platform: options.platform ?? linuxPlatform,
    ptyPollMs: options.ptyPollMs ?? DEFAULT_PTY_POLL_MS,
    rotation: { ...DEFAULT_ROTATION, ...options.rotation },
    options,
    domainLog: undefined,
  };
  const started: Chardev[] = [];
  const devices = new Map<string, Chardev>();
  try {
    for (const { dev, alias } of hostDevices(loaded.def)) {
      devices.set(alias, await startDevice(start, alias, chardevId(alias), dev, started));
    }
  } catch (err) {
    await stopAll(started, start, true);
    throw err;
  }
  return new Domain(start.name, devices, start);
}
