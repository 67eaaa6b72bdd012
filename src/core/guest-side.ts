/**
 * What the readers of a guest's output (`OutputPump`, `GuestOutput`) need from a device,
 * as interfaces: `Chardev` implements them, and the readers depend on these rather than on
 * the class, which constructs a `GuestOutput` itself (`pipeFrom`): no import cycle.
 */
import type { ClientChange, ClientInfo } from './hub.ts';
import type { FanoutViewerCount } from '../platform/data-plane.ts';

/** Something feeding the device from an fd (`GuestOutput`). */
export interface OutputSource {
  close(): void;
  /** Finish what moves outside the device now (a kernel-path run) and count it, before a client change. */
  settle(): void;
  /** A client's transport sent what it held (a viewer left out of a fan-out run may join it now). */
  clientDrained?(clientId: number): void;
  /** It may move output on the kernel path at all (a pipe, native calls, one device). */
  readonly kernelCapable?: boolean;
}

/**
 * A fan-out on the kernel path (data-plane-fanout.ts): the `KernelTarget` is the writer;
 * these are the viewers, each with its bounded queue or left out while Node still holds
 * bytes for it.
 */
export interface FanoutPlan {
  readonly writerQueueBytes: number;
  readonly viewers: readonly { readonly clientId: number; readonly fd: number | undefined; readonly queueBytes: number; readonly untold: number }[];
  readonly noticeBefore: string;
  readonly noticeAfter: string;
  /** The viewers' counts so far in this run (absolute per run): count them as `Hub.broadcast` would have. */
  progress(viewers: readonly FanoutViewerCount[]): void;
  /** The run ended: what the writer and viewers still had to go goes to their transports, in order. */
  leftovers(writer: Buffer | undefined, viewers: readonly (Buffer | undefined)[]): void;
  /**
   * The device's history, kept in a ring file of `bytes` (`FanoutSpec.history`); `ended`
   * brings the history up to date when the run ends (`FanoutResult.historyKept`, `historyLeft`).
   */
  readonly history?: { readonly fd: number; readonly bytes: number; ended(kept: number, left: Buffer | undefined): void };
}

/** A destination for guest output moved by the kernel (`Chardev.kernelTarget`). */
export interface KernelTarget {
  readonly fd: number;
  /** The writer client's socket or pty, or the file that keeps the output. */
  readonly kind: 'client' | 'file';
  /** Most bytes before the target must be asked for again (a log about to rotate); Infinity for no limit. */
  readonly roomBytes: number;
  /** The fd is a file other writers may append to: each transfer starts at its end. */
  readonly seekEnd: boolean;
  /** `n` bytes went there: count them as `write` would have. */
  commit(n: number): void;
  /** `roomBytes` ran out (the log rotates before the next byte). */
  full(): void;
  /**
   * A client's bytes the run took from the guest's pipe but did not write to `fd` (a pty
   * run's buffer, handed back when the run ended): send them to the client the run started
   * with, before anything newer, and count them as `commit` would.
   */
  unsent?(data: Buffer): void;
  /** Set: the writer is one of several clients, and these are the others. */
  readonly fanout?: FanoutPlan;
  /**
   * A `<log>` beside the client: every byte goes to this file first (tee(2)), then to `fd`.
   * `roomBytes` and `full` are then the log's; `commit` counts bytes that reached `fd`.
   */
  readonly tee?: KernelTee;
}

/** The log file of a tee run, and what the device must learn about it. */
export interface KernelTee {
  /** Opened without O_APPEND; each transfer starts at its end. */
  readonly fd: number;
  /** `fd` is a ring of this many bytes, not a log (`TeeRunSpec.ringBytes`). */
  readonly ringBytes?: number;
  /** `n` more bytes were appended to the log: the device accepted them from the guest. */
  logged(n: number): void;
  /** Bytes the run logged but did not move to `fd` (the client): the caller read them from the pipe; deliver them, never log them again. */
  unsent(data: Buffer): void;
  /** The run is over and logged `loggedBytes` in all (its history is brought up to date from the log). */
  ended(loggedBytes: number): void;
}

/** A device an `OutputPump` writes to: QEMU's `qemu_chr_fe_write` and its watch. */
export interface PumpDevice {
  readonly stopped: boolean;
  /** Take what fits of a chunk the caller never touches again; fewer bytes while a client is behind. */
  writeOwned(data: Buffer): number;
  /** Give up bytes `writeOwned` refused (counted as dropped). */
  discard(bytes: number): void;
  on(event: 'writable', listener: () => void): unknown;
  off(event: 'writable', listener: () => void): unknown;
}

/** A device a `GuestOutput` feeds from an fd, on the JavaScript path or the kernel's. */
export interface FedDevice extends PumpDevice {
  readonly type: string;
  addOutput(output: OutputSource): void;
  removeOutput(output: OutputSource): void;
  on(event: 'client', listener: (change: ClientChange, client: ClientInfo) => void): unknown;
  on(event: 'writable', listener: () => void): unknown;
  off(event: 'client', listener: (change: ClientChange, client: ClientInfo) => void): unknown;
  off(event: 'writable', listener: () => void): unknown;
  /** Where the kernel may move guest output now, if anywhere. */
  kernelTarget(): KernelTarget | undefined;
  /** Whether the kernel path could start once Node's own queue for the client has drained. */
  kernelPathAfterNode(): boolean;
  /** Whether both directions of a busy exchange could move on the data-plane thread now (`ChunkRate`). */
  duplexKernelPath?(): boolean;
}

/** Something feeding the guest with the device's input (`GuestInput`). */
export interface InputSource {
  /** Finish what moves outside the device now (a kernel-path run) and count it, before a client change or other input. */
  settle(): void;
  /** It may splice input to the guest at all (a socketpair or pipe, native calls, one device). */
  readonly kernelCapable?: boolean;
}

/** The writer client's socket as a source of input moved by the kernel (`Chardev.kernelSource`). */
export interface KernelSource {
  /** Nothing reads it but the caller until `release`. */
  readonly fd: number;
  /** `n` bytes reached the guest from there: count them as delivered input. */
  commit(n: number): void;
  /** Give the socket back to its transport. Idempotent. */
  release(): void;
}

/** A device whose input a `GuestInput` hands to the guest. */
export interface InputDevice {
  readonly type: string;
  readonly stopped: boolean;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'client', listener: (change: ClientChange, client: ClientInfo) => void): unknown;
  off(event: 'data', listener: (chunk: Buffer) => void): unknown;
  off(event: 'client', listener: (change: ClientChange, client: ClientInfo) => void): unknown;
  addInput(input: InputSource): void;
  removeInput(input: InputSource): void;
  /** The socket the kernel may move input from now, claimed, if `listener` is the only one and anything allows it. */
  kernelSource(listener: (chunk: Buffer) => void): KernelSource | undefined;
  /** Whether both directions of a busy exchange could move on the data-plane thread now (`ChunkRate`). */
  duplexKernelPath?(): boolean;
}
