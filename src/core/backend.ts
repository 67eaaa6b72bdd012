/**
 * The seam between the runtime core and one host interface (backend).
 *
 * A backend is created from its device definition so that a domain can start
 * all-or-nothing: either every factory returns, or the ones already created are
 * stopped with `abort: true` and the error propagates. Stopping may be asynchronous
 * because sockets wrapping FIFOs release their fd when libuv closes the handle.
 */
import type { ChrDeviceDef } from '../config/types.ts';
import type { DriverOptions } from '../config/postparse.ts';
import type { Platform } from '../platform/index.ts';
import type { ChardevError } from '../errors.ts';
import type { KernelFile, RotatingLog } from './rotating-log.ts';
import type { Hub } from './hub.ts';

/** What a backend reports to its chardev (QEMU's qemu_chr_be_* calls). */
export interface BackendEvents {
  /** Host → guest bytes. Only called while input is enabled (see Backend.setReading). */
  readonly receive: (chunk: Buffer) => void;
  /** CHR_EVENT_OPENED: a client appeared (or the backend opened at creation). */
  readonly opened: () => void;
  /** CHR_EVENT_CLOSED: the client went away, or input hit EOF. */
  readonly closed: () => void;
  /** A serial break arrived from the host side. */
  readonly break: () => void;
  /** A run-time failure of this backend; reported once per cause. */
  readonly error: (err: ChardevError) => void;
  /**
   * After `write` refused bytes (returned short): the backend can take output again (QEMU's
   * qemu_chr_fe_add_watch(G_IO_OUT)). Backends that never refuse need not call it.
   */
  readonly writable?: () => void;
}

export interface BackendContext {
  /** Device alias, e.g. `serial0`. */
  readonly alias: string;
  /** Chardev id, e.g. `charserial0`; every message a backend produces starts with it. */
  readonly id: string;
  readonly dev: ChrDeviceDef;
  /** The run's qemu.conf-style settings (TLS default, credentials directory, verify). */
  readonly driver: DriverOptions;
  readonly platform: Platform;
  readonly events: BackendEvents;
  /** How often a pty without a client is polled for one (QEMU: 1000 ms). */
  readonly ptyPollMs: number;
  /** Everyone attached to the device; backends with clients (servers, pty) attach them here. */
  readonly hub: Hub;
  /** The domain log shared by every stdio device of the domain (opened on first use). */
  readonly domainLog: () => RotatingLog;
}

export interface Backend {
  /** query-chardev's filename: `pty:/dev/pts/N`, otherwise the bare type name. */
  readonly filename: string;
  /** One line saying where the host interface is, e.g. `char device redirected to … (label …)`. */
  readonly where: string;
  /** The pty slave path, for live XML. */
  readonly ptyPath?: string;
  /** The port actually bound, for live XML where the XML said `service='0'`. */
  readonly boundService?: string | undefined;
  /** Emits `opened` at creation (file, pipe, dev, stdio) rather than when a client comes. */
  readonly openAtStart: boolean;
  /**
   * Guest → host. Returns how many bytes were accepted, like a non-blocking write(2);
   * never throws and never buffers without bound.
   *
   * Who writes what, in one place: the chardev gives every accepted byte to the hub, and
   * the hub sends it to every client attached there (socket peers, the pty's reader,
   * browser tabs, `chardev console` sockets), each within its own bound. So a backend
   * whose host side is hub clients (socket, pty, vc) writes nothing here: it only says
   * whether anybody could take the bytes, counting them dropped when nobody could. A
   * backend with a host side of its own (file, pipe, dev, stdio, udp, parallel) writes
   * them there, and its refusals hold the guest.
   */
  write(data: Uint8Array): number;
  /**
   * Bytes the backend accepted (or reported as written) but threw away (no client, a full
   * client queue), since start. Bytes `write` refused are not counted here: the frontend may
   * retry them, and tells the device with `Chardev.discard` when it gives up instead.
   */
  readonly droppedBytes: number;
  /** Resolves once output accepted so far has left user space (or cannot anymore). */
  drained?(): Promise<void>;
  /** Output the backend accepted and still holds in user space (its own writer's queue, not the hub's). */
  readonly pendingBytes?: number;
  /**
   * The file that keeps every byte written (a `file` device), for guest output moved by
   * splice(2) while nobody is attached (`Chardev.kernelTarget`). Undefined: not now.
   */
  kernelFile?(): KernelFile | undefined;
  /** Every byte written is thrown away and nothing counts it (a `null` device): its `<log>` is all that keeps the output. */
  readonly discardsOutput?: boolean;
  /** Input flow control (QEMU's can_read): while false, bytes wait in the kernel. */
  setReading(reading: boolean): void;
  /**
   * Release every fd and timer. `abort` means the domain failed to start: also remove
   * what this backend created on disk, so a failed start leaves nothing behind.
   */
  stop(abort: boolean): Promise<void>;
}

/**
 * Network backends must bind or connect before the domain counts as started, and Node
 * does both asynchronously; a factory that fails must release what it created itself.
 */
export type BackendFactory = (ctx: BackendContext) => Backend | Promise<Backend>;
