/**
 * What the readers of a guest's output (`OutputPump`, `GuestOutput`) need from a device,
 * as interfaces: `Chardev` implements them, and the readers depend on these rather than on
 * the class, which constructs a `GuestOutput` itself (`pipeFrom`): no import cycle.
 */
import type { ClientChange, ClientInfo } from './hub.ts';

/** Something feeding the device from an fd (`GuestOutput`). */
export interface OutputSource {
  close(): void;
  /** Finish what moves outside the device now (a kernel-path run) and count it, before a client change. */
  settle(): void;
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
}

/** Something feeding the guest with the device's input (`GuestInput`). */
export interface InputSource {
  /** Finish what moves outside the device now (a kernel-path run) and count it, before a client change or other input. */
  settle(): void;
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
}
