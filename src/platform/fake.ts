/**
 * In-memory Platform for unit tests of the runtime core: no kernel, no koffi, fully
 * deterministic. It models what the core reacts to:
 *
 * - ptys: a "client" can connect (ptyHasReader flips to true), send bytes to the host
 *   (delivered to active readers), read what the host wrote, and disconnect (readers get
 *   onHangup, like EIO on a real master). Host output written while nobody is connected
 *   stays in the pty for the next client, as with a real pty.
 * - devices: paths registered with addDevice, each optionally a tty and/or a parallel port,
 *   so serial/parallel/pipe backends can be driven without hardware. A tty can be read, as
 *   on the real platform: its far end sends bytes and hangs up like a pty client.
 * - writers: per-fd "writable" switch to simulate EAGAIN backpressure and the drop policy.
 *
 * Differences from the real thing, on purpose: data and hang-ups are delivered
 * synchronously (simpler tests); writers flush synchronously while the fd is writable.
 */
import { isStandardBaud } from './baud.ts';
import {
  PlatformError,
  type BreakFlags,
  type ByteReader,
  type ByteReaderHandlers,
  type ByteWriter,
  type ByteWriterOptions,
  type Platform,
  type PtyHandle,
  type SerialLine,
  type WindowSize,
} from './platform.ts';
import { ByteQueue } from './byte-queue.ts';

export interface FakeDeviceOptions {
  readonly tty?: boolean;
  readonly parallel?: boolean;
  /**
   * A parallel port's peripheral speaks IEEE 1284 reverse modes, so readParallel gets what
   * it sends; without it, readParallel fails with EIO as ppdev's negotiation does.
   */
  readonly reverse?: boolean;
}

/** Serial settings recorded by setSerialRaw, for assertions. */
export interface FakeSerialSettings {
  readonly baud: number;
  readonly dataBits: 5 | 6 | 7 | 8;
  readonly parity: 'none' | 'even' | 'odd';
  readonly stopBits: 1 | 2;
}

/** Sink shared by everything that can be written to. */
interface Endpoint {
  /** Bytes the host wrote, not yet taken by the test. */
  output: Buffer[];
  writable: boolean;
  writers: Set<FakeWriter>;
}

export interface FakeDevice {
  readonly path: string;
  readonly tty: boolean;
  readonly parallel: boolean;
  /** Whether the parallel port is currently claimed. */
  readonly claimed: boolean;
  /** Last setSerialRaw settings, if any. */
  readonly serial: FakeSerialSettings | undefined;
  /** Everything the host wrote to the device so far (and clears it). */
  takeOutput(): Buffer;
  /** Simulate EAGAIN (false) or let queued bytes through (true); a busy peripheral on a parallel port. */
  setWritable(writable: boolean): void;
  /**
   * Parallel port: the peripheral takes `bytes` more, then is busy (writeParallel returns
   * short, then 0) until the next setRoom; undefined takes everything (the default).
   */
  setRoom(bytes: number | undefined): void;
  /** Parallel port: the next writeParallel fails with this errno (e.g. 'EIO'), and every one after. */
  failWrites(code: string): void;
  /** Parallel port: the length of every writeParallel call that took bytes, in order. */
  readonly writeSizes: readonly number[];
  /**
   * Far end → host bytes (a tty, or a parallel port with `reverse`). Delivered to unpaused
   * readers now, or held until one reads.
   */
  send(data: Uint8Array): void;
  /** The far end hangs up (EOF on the line): active readers get onHangup. */
  hangup(): void;
  /** Readers the host has open on the tty, for assertions. */
  readonly readers: ReadonlySet<FakeReaderState>;
}

/** What a test can see of a reader the host opened. */
export interface FakeReaderState {
  readonly paused: boolean;
  readonly closed: boolean;
}

export interface FakePty {
  readonly masterFd: number;
  readonly slavePath: string;
  readonly connected: boolean;
  /** A client opens the slave. */
  connect(): void;
  /** The last client closes the slave: active readers get onHangup. */
  disconnect(): void;
  /** Client → host bytes. Delivered to unpaused readers now, or held until one reads. */
  send(data: Uint8Array): void;
  /** Host → client bytes written so far (and clears them), like a client reading. */
  takeOutput(): Buffer;
  setWritable(writable: boolean): void;
  /** The size set with setWindowSize (0×0 at first). */
  readonly size: WindowSize;
  /** The slave's BREAK handling, as the program on it would set it (default: `stty sane`'s BRKINT). */
  breakFlags: BreakFlags;
  /** How many times the slave's foreground process group was sent SIGINT. */
  readonly interrupts: number;
  /** How many times both queues were flushed. */
  readonly flushes: number;
}

type FdTarget = { readonly kind: 'pty'; readonly pty: FakePtyImpl } | { readonly kind: 'device'; readonly device: FakeDeviceImpl };

function newEndpoint(): Endpoint {
  return { output: [], writable: true, writers: new Set() };
}

function take(endpoint: Endpoint): Buffer {
  const out = Buffer.concat(endpoint.output);
  endpoint.output = [];
  return out;
}

function setWritable(endpoint: Endpoint, writable: boolean): void {
  endpoint.writable = writable;
  if (writable) for (const w of [...endpoint.writers]) w.flush();
}

/** Far end → host side of a pty or tty: the kernel's input queue and the readers on it. */
class Input {
  readonly readers = new Set<FakeReader>();
  /** Bytes no reader has taken yet. */
  pending: Buffer[] = [];
  reader(handlers: ByteReaderHandlers): FakeReader {
    const reader = new FakeReader(this, handlers);
    this.readers.add(reader);
    return reader;
  }
  send(data: Uint8Array): void {
    this.pending.push(Buffer.from(data));
    this.deliver();
  }
  deliver(): void {
    for (const r of this.readers) {
      if (r.paused || this.pending.length === 0) continue;
      const chunk = Buffer.concat(this.pending);
      this.pending = [];
      r.push(chunk);
    }
  }
  hangup(): void {
    for (const r of [...this.readers]) r.hangup();
  }
}

class FakeDeviceImpl implements FakeDevice {
  readonly endpoint = newEndpoint();
  readonly input = new Input();
  claimed = false;
  serial: FakeSerialSettings | undefined;
  room: number | undefined;
  writeError: string | undefined;
  readonly writeSizes: number[] = [];
  constructor(
    readonly path: string,
    readonly tty: boolean,
    readonly parallel: boolean,
    readonly reverse: boolean,
  ) {}
  setRoom(bytes: number | undefined): void {
    this.room = bytes;
  }
  failWrites(code: string): void {
    this.writeError = code;
  }
  takeOutput(): Buffer {
    return take(this.endpoint);
  }
  setWritable(writable: boolean): void {
    setWritable(this.endpoint, writable);
  }
  send(data: Uint8Array): void {
    if (!this.tty && !(this.parallel && this.reverse)) {
      throw new Error(`fake device ${this.path}: send() on a device that is not a tty or a parallel port with a reverse channel`);
    }
    this.input.send(data);
  }
  hangup(): void {
    this.input.hangup();
  }
  get readers(): ReadonlySet<FakeReaderState> {
    return this.input.readers;
  }
}

class FakePtyImpl implements FakePty {
  readonly endpoint = newEndpoint();
  readonly input = new Input();
  connected = false;
  size: WindowSize = { cols: 0, rows: 0 };
  breakFlags: BreakFlags = { ignbrk: false, brkint: true, parmrk: false, noflsh: false };
  interrupts = 0;
  flushes = 0;
  constructor(
    readonly masterFd: number,
    readonly slavePath: string,
  ) {}
  connect(): void {
    this.connected = true;
  }
  disconnect(): void {
    if (!this.connected) return;
    this.connected = false;
    this.input.hangup();
  }
  send(data: Uint8Array): void {
    if (!this.connected) throw new Error(`fake pty ${this.slavePath}: send() without connect()`);
    this.input.send(data);
  }
  takeOutput(): Buffer {
    return take(this.endpoint);
  }
  setWritable(writable: boolean): void {
    setWritable(this.endpoint, writable);
  }
}

class FakeReader implements ByteReader, FakeReaderState {
  paused = false;
  closed = false;
  constructor(
    private readonly input: Input,
    private readonly handlers: ByteReaderHandlers,
  ) {}
  push(chunk: Buffer): void {
    this.handlers.onData(chunk);
  }
  hangup(): void {
    this.finish();
    this.handlers.onHangup?.();
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    if (this.closed) return;
    this.paused = false;
    this.input.deliver();
  }
  close(): void {
    this.finish();
  }
  private finish(): void {
    this.closed = true;
    this.input.readers.delete(this);
  }
}

class FakeWriter implements ByteWriter {
  readonly #queue: ByteQueue;
  #backpressured = false;
  #closed = false;
  #waiters: Array<() => void> = [];
  constructor(
    private readonly endpoint: Endpoint,
    private readonly options: ByteWriterOptions,
  ) {
    this.#queue = new ByteQueue(options.maxQueuedBytes);
    endpoint.writers.add(this);
  }
  get queuedBytes(): number {
    return this.#queue.queuedBytes;
  }
  get droppedBytes(): number {
    return this.#queue.droppedBytes;
  }
  get closed(): boolean {
    return this.#closed;
  }
  write(data: Uint8Array): number {
    if (this.#closed) return 0;
    const n = this.#queue.accept(data);
    if (n < data.length) this.#backpressured = true;
    if (n === 0) return 0;
    if (!this.endpoint.writable) this.#backpressured = true;
    this.flush();
    return n;
  }
  flush(): void {
    if (this.#closed || !this.endpoint.writable || this.#queue.queuedBytes === 0) return;
    this.endpoint.output.push(...this.#queue.takeAll());
    this.#settle();
    if (this.#backpressured) {
      this.#backpressured = false;
      this.options.onDrain?.();
    }
  }
  drained(): Promise<void> {
    if (this.#closed || this.#queue.queuedBytes === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.clear();
    this.endpoint.writers.delete(this);
    this.#settle();
  }
  /** Simulates a hard write error (e.g. EIO from a vanished device). */
  fail(code: string): void {
    const err = new PlatformError({ code, syscall: 'write', path: 'fake', description: code });
    this.close();
    this.options.onError?.(err);
  }
  #settle(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const resolve of w) resolve();
  }
}

export class FakePlatform implements Platform {
  #nextFd = 1000;
  #nextPty = 0;
  readonly #fds = new Map<number, FdTarget>();
  readonly #ptys = new Map<number, FakePtyImpl>();
  readonly #devices = new Map<string, FakeDeviceImpl>();
  readonly #fifos = new Set<string>();

  // ---- test controls -------------------------------------------------------------------

  /** Register a path that openDevice can open. */
  addDevice(path: string, options: FakeDeviceOptions = {}): FakeDevice {
    const device = new FakeDeviceImpl(path, options.tty ?? false, options.parallel ?? false, options.reverse ?? false);
    this.#devices.set(path, device);
    return device;
  }

  device(path: string): FakeDevice {
    const d = this.#devices.get(path);
    if (d === undefined) throw new Error(`fake: no device ${path}`);
    return d;
  }

  /** The pty for a master fd (any dup of it works too) or a slave path. */
  pty(key: number | string): FakePty {
    if (typeof key === 'string') {
      for (const p of this.#ptys.values()) if (p.slavePath === key) return p;
      throw new Error(`fake: no pty ${key}`);
    }
    const target = this.#fds.get(key);
    if (target?.kind !== 'pty') throw new Error(`fake: fd ${key} is not a pty master`);
    return target.pty;
  }

  /** FIFOs created with mkfifo. */
  get fifos(): ReadonlySet<string> {
    return this.#fifos;
  }

  /** Fds currently open (leak checks). */
  get openFds(): readonly number[] {
    return [...this.#fds.keys()];
  }

  // ---- Platform --------------------------------------------------------------------------

  openPty(): PtyHandle {
    const masterFd = this.#nextFd++;
    const pty = new FakePtyImpl(masterFd, `/dev/pts/fake${this.#nextPty++}`);
    this.#ptys.set(masterFd, pty);
    this.#fds.set(masterFd, { kind: 'pty', pty });
    return { masterFd, slavePath: pty.slavePath };
  }

  ptyUnreadBytes(slavePath: string): number {
    for (const pty of this.#ptys.values()) {
      if (pty.slavePath === slavePath) return pty.endpoint.output.reduce((n, b) => n + b.length, 0);
    }
    throw new PlatformError({ code: 'ENOENT', syscall: 'open', path: slavePath, description: 'No such file or directory' });
  }

  /** The fake has no sockets: real ones are Node's, and their kernel queues are not faked. */
  socketUnreadBytes(fd: number): number {
    void fd;
    return 0;
  }

  ptyHasReader(masterFd: number): boolean {
    return this.#ptyOf(masterFd, 'poll').connected;
  }

  setWindowSize(fd: number, size: WindowSize): void {
    this.#ptyOf(fd, 'ioctl(TIOCSWINSZ)').size = { cols: size.cols, rows: size.rows };
  }

  windowSize(fd: number): WindowSize {
    return this.#ptyOf(fd, 'ioctl(TIOCGWINSZ)').size;
  }

  ptyBreakFlags(masterFd: number): BreakFlags {
    return this.#ptyOf(masterFd, 'tcgetattr').breakFlags;
  }

  signalPtyForeground(masterFd: number): void {
    this.#ptyOf(masterFd, 'ioctl(TIOCSIG)').interrupts += 1;
  }

  flushPty(masterFd: number): void {
    this.#ptyOf(masterFd, 'tcflush').flushes += 1;
  }

  openDevice(path: string): number {
    const device = this.#devices.get(path);
    if (device === undefined) {
      throw new PlatformError({ code: 'ENOENT', syscall: 'open', path, description: 'No such file or directory' });
    }
    const fd = this.#nextFd++;
    this.#fds.set(fd, { kind: 'device', device });
    return fd;
  }

  dup(fd: number): number {
    const target = this.#target(fd, 'fcntl(F_DUPFD_CLOEXEC)');
    const copy = this.#nextFd++;
    this.#fds.set(copy, target);
    return copy;
  }

  close(fd: number): void {
    this.#target(fd, 'close');
    this.#fds.delete(fd);
  }

  mkfifo(path: string, _mode: number): void {
    if (this.#fifos.has(path) || this.#devices.has(path)) {
      throw new PlatformError({ code: 'EEXIST', syscall: 'mkfifo', path, description: 'File exists' });
    }
    this.#fifos.add(path);
  }

  isatty(fd: number): boolean {
    const t = this.#fds.get(fd);
    if (t === undefined) return false;
    return t.kind === 'pty' || t.device.tty;
  }

  setSerialRaw(fd: number, baud = 115200, line: SerialLine = {}): void {
    const t = this.#target(fd, 'tcgetattr');
    const path = t.kind === 'pty' ? t.pty.slavePath : t.device.path;
    if (!this.isatty(fd)) {
      throw new PlatformError({ code: 'ENOTTY', syscall: 'tcgetattr', path, description: 'Inappropriate ioctl for device' });
    }
    if (!isStandardBaud(baud)) {
      throw new PlatformError({ code: 'EINVAL', syscall: 'cfsetspeed', path, description: `unsupported baud rate ${baud}` });
    }
    if (t.kind === 'device') {
      t.device.serial = {
        baud,
        dataBits: line.dataBits ?? 8,
        parity: line.parity ?? 'none',
        stopBits: line.stopBits ?? 1,
      };
    }
  }

  isParallelPort(fd: number): boolean {
    const t = this.#fds.get(fd);
    return t?.kind === 'device' && t.device.parallel;
  }

  claimParallel(fd: number): void {
    const t = this.#target(fd, 'ioctl(PPCLAIM)');
    if (t.kind === 'device' && t.device.parallel) {
      t.device.claimed = true;
      return;
    }
    const path = t.kind === 'pty' ? t.pty.slavePath : t.device.path;
    throw new PlatformError({
      code: 'ENOTTY',
      syscall: 'ioctl(PPCLAIM)',
      path,
      description: 'Inappropriate ioctl for device',
      message: `not a parallel port: Inappropriate ioctl for device (ioctl PPCLAIM on ${path})`,
    });
  }

  releaseParallel(fd: number): void {
    const t = this.#target(fd, 'ioctl(PPRELEASE)');
    if (t.kind !== 'device' || !t.device.parallel) {
      throw new PlatformError({ code: 'ENOTTY', syscall: 'ioctl(PPRELEASE)', path: String(fd), description: 'Inappropriate ioctl for device' });
    }
    t.device.claimed = false;
  }

  writeParallel(fd: number, data: Uint8Array): number {
    const device = this.#claimedPort(fd, 'write');
    if (device.writeError !== undefined) {
      throw new PlatformError({ code: device.writeError, syscall: 'write', path: device.path, description: device.writeError });
    }
    if (!device.endpoint.writable) return 0;
    // ppdev moves at most PP_BUFFER_SIZE (1024) bytes per non-blocking write.
    const n = Math.min(data.length, 1024, device.room ?? Infinity);
    if (n === 0) return 0;
    if (device.room !== undefined) device.room -= n;
    device.endpoint.output.push(Buffer.from(data.subarray(0, n)));
    device.writeSizes.push(n);
    return n;
  }

  readParallel(fd: number, max: number): Buffer {
    const device = this.#claimedPort(fd, 'read');
    if (!device.reverse) {
      throw new PlatformError({ code: 'EIO', syscall: 'read', path: device.path, description: 'Input/output error' });
    }
    const pending = Buffer.concat(device.input.pending);
    device.input.pending = pending.length > max ? [pending.subarray(max)] : [];
    return pending.subarray(0, max);
  }

  openPtyReader(masterFd: number, handlers: ByteReaderHandlers): ByteReader {
    const t = this.#fds.get(masterFd);
    // Like the real platform, any tty can be read. A tty.ReadStream starts reading on a later
    // tick, so nothing is delivered here: a pause() right after creation holds every byte.
    if (t?.kind === 'device' && t.device.tty) return t.device.input.reader(handlers);
    const pty = this.#ptyOf(masterFd, 'read');
    const reader = pty.input.reader(handlers);
    pty.input.deliver();
    return reader;
  }

  openWriter(fd: number, options: ByteWriterOptions = {}): ByteWriter {
    const t = this.#target(fd, 'write');
    return new FakeWriter(t.kind === 'pty' ? t.pty.endpoint : t.device.endpoint, options);
  }

  /** Makes every writer on this fd's endpoint fail with `code` (onError, then closed). */
  failWriters(fd: number, code: string): void {
    const t = this.#target(fd, 'write');
    const endpoint = t.kind === 'pty' ? t.pty.endpoint : t.device.endpoint;
    for (const w of [...endpoint.writers]) w.fail(code);
  }

  #target(fd: number, syscall: string): FdTarget {
    const t = this.#fds.get(fd);
    if (t === undefined) {
      throw new PlatformError({ code: 'EBADF', syscall, path: `fd ${fd}`, description: 'Bad file descriptor' });
    }
    return t;
  }

  /** ppdev refuses read/write with EINVAL until the port is claimed. */
  #claimedPort(fd: number, syscall: string): FakeDeviceImpl {
    const t = this.#target(fd, syscall);
    if (t.kind !== 'device' || !t.device.parallel || !t.device.claimed) {
      const path = t.kind === 'pty' ? t.pty.slavePath : t.device.path;
      throw new PlatformError({ code: 'EINVAL', syscall, path, description: 'Invalid argument' });
    }
    return t.device;
  }

  #ptyOf(fd: number, syscall: string): FakePtyImpl {
    const t = this.#target(fd, syscall);
    if (t.kind !== 'pty') {
      throw new PlatformError({ code: 'ENOTTY', syscall, path: t.device.path, description: 'not a pty master' });
    }
    return t.pty;
  }
}
