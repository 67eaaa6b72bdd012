/**
 * The wire between `chardev console` and a running domain (its `NAME.console` socket).
 *
 * Client → server: one JSON line (ConsoleHello), then raw input bytes for the guest — or,
 * when the hello said `frames` and the reply confirmed it, frames like the server's: DATA
 * (input), BREAK (empty) and RESIZE (the terminal's size), so a BREAK and a window change
 * never mix with input.
 * Server → client: one JSON line (ConsoleReply); after `ok`, frames of
 * [type u8][length u32 big-endian][payload], so notices never mix with guest output.
 */

export interface ConsoleHello {
  /** Alias or chardev id; absent: the domain's first serial (or console). */
  readonly device?: string;
  readonly readonly?: boolean;
  readonly force?: boolean;
  /** Shown to other clients in role notices, e.g. `console pid 4242`. */
  readonly label?: string;
  /** The client sends frames (FRAME_DATA, FRAME_BREAK, FRAME_RESIZE) instead of raw bytes. */
  readonly frames?: boolean;
}

export type ConsoleReply =
  | {
      readonly ok: true;
      readonly domain: string;
      readonly device: string;
      readonly label: string;
      readonly role: 'writer' | 'viewer';
      readonly frames?: boolean;
    }
  | { readonly ok: false; readonly error: string };

export const FRAME_DATA = 0;
export const FRAME_NOTICE = 1;
/** The server ends the session; the payload says why. */
export const FRAME_CLOSE = 2;
/** Client → server: a serial BREAK for the guest; no payload. */
export const FRAME_BREAK = 3;
/** Client → server: the terminal's size, columns then rows, each u16 big-endian. */
export const FRAME_RESIZE = 4;
export type FrameType = typeof FRAME_DATA | typeof FRAME_NOTICE | typeof FRAME_CLOSE | typeof FRAME_BREAK | typeof FRAME_RESIZE;

export function encodeResize(size: { readonly cols: number; readonly rows: number }): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(Math.max(0, Math.min(0xffff, Math.trunc(size.cols))), 0);
  b.writeUInt16BE(Math.max(0, Math.min(0xffff, Math.trunc(size.rows))), 2);
  return encodeFrame(FRAME_RESIZE, b);
}

/** A RESIZE frame's payload, or undefined when it is not 4 bytes. */
export function decodeResize(payload: Buffer): { cols: number; rows: number } | undefined {
  return payload.length === 4 ? { cols: payload.readUInt16BE(0), rows: payload.readUInt16BE(2) } : undefined;
}

/** A hello or reply line longer than this is not ours. */
export const MAX_LINE_BYTES = 4096;
/** Frames are cut to this size; the reader never buffers more than one. */
export const MAX_FRAME_BYTES = 1024 * 1024;

export function encodeFrame(type: FrameType, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out.writeUInt8(type, 0);
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}

/** Incremental frame reader: feed chunks, get whole frames in order. */
export class FrameDecoder {
  #pending: Buffer = Buffer.alloc(0);
  readonly #onFrame: (type: number, payload: Buffer) => void;

  constructor(onFrame: (type: number, payload: Buffer) => void) {
    this.#onFrame = onFrame;
  }

  /** Throws on a frame longer than MAX_FRAME_BYTES: the peer is not speaking this protocol. */
  feed(chunk: Buffer): void {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    while (this.#pending.length >= 5) {
      const length = this.#pending.readUInt32BE(1);
      if (length > MAX_FRAME_BYTES) throw new Error(`frame of ${length} bytes is larger than ${MAX_FRAME_BYTES}`);
      if (this.#pending.length < 5 + length) return;
      const type = this.#pending.readUInt8(0);
      const payload = this.#pending.subarray(5, 5 + length);
      this.#pending = this.#pending.subarray(5 + length);
      this.#onFrame(type, payload);
    }
  }
}

/** Split the first line off a stream: resolves with the line and whatever came after it. */
export class LineReader {
  #buf: Buffer = Buffer.alloc(0);

  /** Returns [line, rest] once a newline arrived; throws past MAX_LINE_BYTES. */
  feed(chunk: Buffer): [string, Buffer] | undefined {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    const nl = this.#buf.indexOf(0x0a);
    if (nl < 0) {
      if (this.#buf.length > MAX_LINE_BYTES) throw new Error(`first line longer than ${MAX_LINE_BYTES} bytes`);
      return undefined;
    }
    return [this.#buf.subarray(0, nl).toString('utf8'), this.#buf.subarray(nl + 1)];
  }
}
