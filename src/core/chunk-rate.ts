/**
 * Tells a program's exchange of small chunks (a test harness, an agent, a script talking to
 * the guest: many chunks per millisecond) from a person typing or a guest printing now and
 * then, for the readers of both directions of a piped guest (`GuestOutput`, `GuestInput`).
 *
 * Why: a round trip on the JavaScript path costs two event-loop turns of Node's stream
 * machinery; the data-plane thread moves the same byte with a poll return and a splice.
 * Measured on the bench's 1-byte round trip through `cat` (2026-12, 2 cores, p50): ~35 µs on
 * libuv's path both ways (socat ~30.5 µs), ~32 µs with both directions on the thread, but
 * 42–48 µs with only one of them there, since every round trip then wakes both threads. So
 * a busy exchange moves to the thread only where both directions can (`duplexKernelPath`);
 * a run ends after its grace of quiet, as a burst's does, and the next keystroke goes by
 * libuv again.
 */

/** Chunks this close together (ms) count as one busy exchange; a person typing is 50 ms or more apart. */
export const BUSY_GAP_MS = 1;
/** This many chunks in a row, each within BUSY_GAP_MS of the one before, make an exchange busy. */
export const BUSY_CHUNKS = 8;

export class ChunkRate {
  #lastMs = Number.NEGATIVE_INFINITY;
  #run = 0;

  /**
   * A chunk arrived at `nowMs` (performance.now()). True on every BUSY_CHUNKS-th chunk of a
   * busy run, then the count starts again: a caller whose move was refused asks again only
   * BUSY_CHUNKS chunks later, not on every chunk.
   */
  busy(nowMs: number): boolean {
    this.#run = nowMs - this.#lastMs <= BUSY_GAP_MS ? this.#run + 1 : 1;
    this.#lastMs = nowMs;
    if (this.#run < BUSY_CHUNKS) return false;
    this.#run = 0;
    return true;
  }
}
