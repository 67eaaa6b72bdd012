/**
 * What the benchmark driver (scripts/bench.ts) and the chardev host process
 * (scripts/bench/host.ts) say to each other: one JSON argument in, JSON lines out on the
 * host's stdout, `stop` lines in on its stdin.
 */

/** Where guest output goes in a stream measurement. `log`: a null device with `<log file>`. */
export type StreamBackend = 'tcp' | 'unix' | 'pty' | 'file' | 'log';

export interface StreamConfig {
  readonly kind: 'stream';
  readonly backend: StreamBackend;
  /**
   * The guest: a command whose stdout is the guest's output (it must not exit before
   * `bytes`). It is never paced by the host: its output goes to `device.write` as a
   * frontend's does (QEMU's flow control: what the device refuses waits for 'writable',
   * the guest's stdout paused meanwhile).
   */
  readonly guest: readonly string[];
  readonly bytes: number;
  /** Start the guest once this many clients are attached (0: at once). */
  readonly clients: number;
  /**
   * The guest exits after its last byte, and the clock ends only once it has exited too (the
   * file rows: `cat`'s clock ends at its pipeline's exit, after the guest's; measurements.ts
   * fileWrite).
   */
  readonly untilGuestExits?: boolean;
  /** `<cd:clients max>`; above the XML's bound it is set on the loaded model (see fan-out). */
  readonly maxClients?: number;
  /** tcp/unix: the device also has `<log file='DIR/chardev.log'/>`. */
  readonly log?: boolean;
  /** tcp/unix: the device also has `<cd:history size=…>`. */
  readonly historyBytes?: number;
  /** Scratch directory for socket paths and files. */
  readonly dir: string;
}

export interface EchoConfig {
  readonly kind: 'echo';
  /** The echoing guest, e.g. ['cat']. */
  readonly guest: readonly string[];
}

export interface IdleConfig {
  readonly kind: 'idle';
  readonly devices: number;
  readonly dir: string;
  /** Wait after start before the idle window: V8 keeps collecting the start-up's garbage for a few seconds. */
  readonly settleMs: number;
  readonly idleMs: number;
}

/**
 * The floor: the same guest relayed by a few lines of bare Node with no chardev code —
 * `child.stdout.pipe(socket)` for a server, `fs.writeSync` per chunk for a file, both pipes
 * for the echo — so a shortfall against socat splits into what Node itself costs and what
 * chardev adds.
 */
export interface FloorConfig {
  readonly kind: 'floor';
  /** `echo`: a TCP server whose client input goes to the guest's stdin and its stdout back (`bytes` unused). */
  readonly backend: 'tcp' | 'unix' | 'file' | 'echo';
  readonly guest: readonly string[];
  readonly bytes: number;
  readonly dir: string;
  /** As StreamConfig's: the clock ends once the guest has exited too (`file`). */
  readonly untilGuestExits?: boolean;
}

/**
 * Client → guest: a tcp or unix server device whose input goes to the guest's stdin, wired
 * as `chardev run` wires it (`guestInputSocket` + `GuestInput`). With `floor`, bare Node
 * instead: `socket.pipe(child.stdin)`, no chardev code.
 */
export interface InputConfig {
  readonly kind: 'input';
  readonly backend: 'tcp' | 'unix';
  /** The guest: reads its stdin (peers.ts GUEST_PY `read`). */
  readonly guest: readonly string[];
  readonly dir: string;
  readonly floor?: boolean;
}

export type HostConfig = StreamConfig | EchoConfig | IdleConfig | FloorConfig | InputConfig;

export interface ReadyMessage {
  readonly event: 'ready';
  readonly port?: number;
  readonly path?: string;
}

/** A stream measurement's guest finished writing; for file/log the measurement itself. */
export interface WrittenMessage {
  readonly event: 'written';
  /** From the guest's release to its last byte accepted by chardev. */
  readonly seconds: number;
  readonly bytes: number;
  /** How often the guest waited for its client: a full socket under splice, or `write` taking less than it was given (its stdout not read until 'writable'). */
  readonly pauses: number;
  /** Of `bytes`, how many the kernel moved by splice (GuestOutput's kernel path); absent for the floor. */
  readonly spliced?: number;
  /** How often GuestOutput changed path (kernel ↔ JavaScript). */
  readonly pathSwitches?: number;
}

export interface ClientFigures {
  readonly role: string;
  readonly bytesSent: number;
  readonly bytesMissed: number;
}

export interface ResultMessage {
  readonly event: 'result';
  readonly bytesFromGuest: number;
  readonly dropped: number;
  /** Every client the device had, in attach order: final figures of those that left, current ones of the rest. */
  readonly clients: readonly ClientFigures[];
  /** CPU of the chardev process from the guest's release (µs). */
  readonly cpuUserUs: number;
  readonly cpuSystemUs: number;
  readonly rssBytes: number;
  /** Peak RSS (VmHWM). */
  readonly peakRssBytes: number;
  /** Minor page faults since the guest's release: fresh memory for every chunk shows here. */
  readonly minorFaults: number;
  /** Input rows: bytes the device delivered to the guest, and of those how many the kernel moved (GuestInput's splice). */
  readonly bytesToGuest?: number;
  readonly splicedToGuest?: number;
}

export interface IdleMessage {
  readonly event: 'idle';
  readonly devices: number;
  readonly listening: number;
  readonly startMs: number;
  readonly rssBeforeBytes: number;
  readonly rssAfterBytes: number;
  readonly heapDeltaBytes: number;
  readonly externalDeltaBytes: number;
  readonly idleCpuUs: number;
  /** The same window per thread (schedstat): the event loop's thread vs V8's and libuv's helpers. */
  readonly mainThreadMs: number;
  readonly otherThreadsMs: number;
  readonly idleMs: number;
  /** How long the host waited before the window: the fixed settle, then until quiet. */
  readonly settledMs: number;
  readonly fdSoft: number | null;
  readonly fdHard: number | null;
  readonly fdsOpen: number;
}

export interface ErrorMessage {
  readonly event: 'error';
  readonly message: string;
}

export type HostMessage = ReadyMessage | WrittenMessage | ResultMessage | IdleMessage | ErrorMessage;
