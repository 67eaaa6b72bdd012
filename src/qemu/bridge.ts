/** QEMU's connection for one guest port, bridged to the port's devices with QEMU's flow control. */
import type * as net from 'node:net';
import type { Chardev } from '../core/chardev.ts';
import { OutputPump } from '../core/output-pump.ts';

/**
 * One guest port's connection from QEMU, bridged to its devices. Guest output flows as in
 * QEMU itself: while a device cannot take more (its client reads slowly, a pipe's reader
 * lags) QEMU's socket is not read, so QEMU's chardev sees a full socket and its frontend
 * waits (the 16550 holds its transmitter, virtio-serial throttles the port) until the
 * device says it is writable again. Device input is read only while QEMU's socket takes
 * it (the device's 'data' listener comes and goes with the socket's drain).
 */
export class PortBridge {
  readonly #devices: readonly Chardev[];
  #sock: net.Socket | undefined;
  #listening = false;
  #connected!: () => void;
  readonly connected = new Promise<void>((resolve) => (this.#connected = resolve));
  #closed: () => void = () => {};
  /** Resolves when QEMU's connection is gone (at once if it never came). */
  closed: Promise<void> = Promise.resolve();

  /** QEMU's `chardev-send-break` on this port's chardev; resolves when QEMU has answered. */
  readonly #sendBreak: () => Promise<void>;
  /**
   * Input and BREAKs waiting behind a BREAK QEMU has not answered yet, in order: a BREAK goes
   * by another socket (QMP), so what follows it must wait for it to be done.
   */
  readonly #queue: Array<Buffer | 'break'> = [];
  #draining = false;

  constructor(devices: readonly Chardev[], sendBreak: () => Promise<void>) {
    this.#devices = devices;
    this.#sendBreak = sendBreak;
    for (const d of devices) d.on('break', this.#onBreak);
  }

  /**
   * A BREAK from a device's writer: QEMU raises it at the port's frontend (a 16550's line
   * status) once the input written before it has been handed to QEMU's socket.
   */
  readonly #onBreak = (): void => {
    if (this.#sock === undefined) return;
    this.#queue.push('break');
    void this.#drainQueue();
  };

  async #drainQueue(): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let item = this.#queue.shift(); item !== undefined; item = this.#queue.shift()) {
        const sock = this.#sock;
        if (sock === undefined) {
          this.#queue.length = 0;
          break;
        }
        if (item !== 'break') {
          this.#write(sock, item);
          continue;
        }
        if (sock.writableLength > 0) {
          await new Promise<void>((resolve) => {
            sock.once('drain', resolve);
            sock.once('close', resolve);
          });
        }
        try {
          await this.#sendBreak();
        } catch {
          // QEMU gone or not answering: the BREAK is lost, as on a line nobody listens to.
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  get isConnected(): boolean {
    return this.#sock !== undefined;
  }

  /** QEMU connected. A second connection on the same socket is not QEMU's: refused. */
  accept(sock: net.Socket): void {
    if (this.#sock !== undefined) {
      sock.destroy();
      return;
    }
    this.#sock = sock;
    this.closed = new Promise<void>((resolve) => (this.#closed = resolve));
    const pump = new OutputPump(this.#devices, { pause: () => sock.pause(), resume: () => sock.resume() });
    // A chunk fresh from QEMU's socket, never reused: the devices may keep it.
    sock.on('data', (b: Buffer) => pump.push(b));
    sock.on('drain', () => this.#listen(true));
    sock.on('error', () => {});
    sock.on('close', () => {
      this.#listen(false);
      // What QEMU wrote and no device took yet goes with the connection, as in QEMU.
      pump.close();
      this.#sock = undefined;
      this.#closed();
    });
    this.#listen(true);
    this.#connected();
  }

  readonly #toGuest = (b: Buffer): void => {
    const sock = this.#sock;
    if (sock === undefined) return;
    if (this.#draining || this.#queue.length > 0) this.#queue.push(b);
    else this.#write(sock, b);
  };

  #write(sock: net.Socket, b: Buffer): void {
    if (!sock.write(b)) this.#listen(false);
  }

  #listen(on: boolean): void {
    if (on === this.#listening || (on && this.#sock === undefined)) return;
    this.#listening = on;
    for (const d of this.#devices) {
      if (on) d.on('data', this.#toGuest);
      else d.off('data', this.#toGuest);
    }
  }

  close(): void {
    for (const d of this.#devices) d.off('break', this.#onBreak);
    this.#sock?.destroy();
  }
}
