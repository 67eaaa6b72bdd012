/**
 * The server side of a telnet serial console, as QEMU's char-socket does it for
 * `-chardev socket,telnet=on,server=on`: a fixed greeting that puts the client in
 * character-at-a-time binary mode, then IAC stripping on input. No option negotiation
 * is tracked: QEMU ignores the client's replies, and guests and users expect exactly
 * QEMU's console, so we mirror it rather than implement RFC 854 fully.
 *
 * Two deliberate differences from QEMU's tcp_chr_process_IAC_bytes:
 *  - QEMU consumes three bytes for every command it does not know, so `IAC NOP x` or
 *    `IAC GA x` loses the data byte `x`. Here only WILL/WONT/DO/DONT take an option
 *    byte; every other command is two bytes.
 *  - QEMU has no notion of subnegotiation and passes `IAC SB … IAC SE` payload (e.g. a
 *    client's NAWS window size) to the guest as data. Here it is stripped, up to a bound.
 *
 * Output (guest to client) needs no codec: QEMU writes guest bytes as they are, so a
 * guest's 0xFF goes out un-doubled and a client may read it as IAC. We keep that so a
 * client sees byte-for-byte what it would see from QEMU.
 */

const IAC = 0xff;
const SE = 0xf0;
const BREAK = 0xf3;
const SB = 0xfa;
const WILL = 0xfb;
const DONT = 0xfe;

/** QEMU's greeting, byte for byte: IAC WILL ECHO, IAC WILL SGA, IAC WILL BINARY, IAC DO BINARY. */
const GREETING = [IAC, WILL, 0x01, IAC, WILL, 0x03, IAC, WILL, 0x00, IAC, 0xfd, 0x00] as const;

/**
 * The greeting a telnet server sends on accept, shared by every connection. A Buffer
 * cannot be frozen, so treat it as read-only; {@link telnetServerGreeting} gives a copy
 * for a caller that needs to own its bytes.
 */
export const TELNET_SERVER_GREETING: Buffer = Buffer.from(GREETING);

/** A private copy of {@link TELNET_SERVER_GREETING}. */
export function telnetServerGreeting(): Buffer {
  return Buffer.from(GREETING);
}

/**
 * Bytes after `IAC SB` that are discarded while waiting for `IAC SE`. A client that
 * never ends its subnegotiation must not silence the console for good: after this many
 * bytes the subnegotiation is abandoned and the next byte is parsed as ordinary input.
 * If the last discarded byte was an IAC, it stays pending as an IAC of ordinary input.
 * Nothing of the payload is stored, so this bounds lost input, not memory.
 */
export const TELNET_SUBNEGOTIATION_LIMIT = 4096;

/** Where decoded input goes: guest-bound bytes, and BREAK in order with them. */
export interface TelnetSink {
  /**
   * Never empty. May be a view into the chunk given to {@link TelnetDecoder.feed}, so
   * it is only as stable as that chunk (socket chunks are never reused).
   */
  data(chunk: Buffer): void;
  /** `IAC BREAK`: QEMU raises a serial break on the guest's side. */
  break(): void;
}

// Parser states (plain numbers: the project uses no enums).
const DATA = 0;
/** Saw IAC. */
const COMMAND = 1;
/** Saw IAC WILL/WONT/DO/DONT: one option byte follows. */
const OPTION = 2;
const SUBNEG = 3;
/** Saw IAC inside a subnegotiation. */
const SUBNEG_IAC = 4;
type State = typeof DATA | typeof COMMAND | typeof OPTION | typeof SUBNEG | typeof SUBNEG_IAC;

/**
 * Strips telnet commands from a client's input. State persists across `feed` calls, so
 * a command may be split at any byte; a new connection needs a new decoder.
 */
export class TelnetDecoder {
  readonly #sink: TelnetSink;
  #state: State = DATA;
  /** Bytes consumed since `IAC SB`. */
  #subnegBytes = 0;

  constructor(sink: TelnetSink) {
    this.#sink = sink;
  }

  feed(chunk: Buffer): void {
    // Runs of data between commands are collected and handed over as one buffer, so a
    // sink sees one call per chunk (per BREAK) however many commands were interleaved.
    const runs: Buffer[] = [];
    let runStart = this.#state === DATA ? 0 : -1;
    const endRun = (end: number): void => {
      if (runStart >= 0 && end > runStart) runs.push(chunk.subarray(runStart, end));
      runStart = -1;
    };
    const flush = (): void => {
      if (runs.length === 0) return;
      const out = runs.length === 1 ? runs[0]! : Buffer.concat(runs);
      runs.length = 0;
      this.#sink.data(out);
    };

    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      switch (this.#state) {
        case DATA:
          if (b === IAC) {
            endRun(i);
            this.#state = COMMAND;
          }
          break;
        case COMMAND:
          this.#state = DATA;
          if (b === IAC) {
            runStart = i; // the escaped 0xFF starts the next run
          } else if (b === BREAK) {
            // Data before the BREAK must reach the guest before it (QEMU raises the
            // event before delivering the chunk's data; we keep stream order).
            flush();
            this.#sink.break();
            runStart = i + 1;
          } else if (b === SB) {
            this.#state = SUBNEG;
            this.#subnegBytes = 0;
          } else if (b >= WILL && b <= DONT) {
            this.#state = OPTION;
          } else {
            runStart = i + 1;
          }
          break;
        case OPTION:
          this.#state = DATA;
          runStart = i + 1;
          break;
        case SUBNEG:
        case SUBNEG_IAC:
          this.#subnegBytes++;
          if (this.#state === SUBNEG_IAC) {
            // IAC SE ends it; IAC IAC is an escaped payload byte; any other IAC x is
            // malformed and, like the rest of the payload, discarded.
            if (b === SE) {
              this.#state = DATA;
              runStart = i + 1;
              break;
            }
            this.#state = SUBNEG;
          } else if (b === IAC) {
            this.#state = SUBNEG_IAC;
          }
          if (this.#subnegBytes >= TELNET_SUBNEGOTIATION_LIMIT) {
            if (this.#state === SUBNEG_IAC) {
              this.#state = COMMAND;
            } else {
              this.#state = DATA;
              runStart = i + 1;
            }
          }
          break;
      }
    }
    endRun(chunk.length);
    flush();
  }
}
