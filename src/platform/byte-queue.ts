/**
 * The bounded user-space queue behind every ByteWriter (real and fake), so
 * both apply the same drop policy: a write that does not fit is cut at the
 * limit, the tail is counted as dropped, and bytes once accepted stay queued.
 */
export const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024;

export class ByteQueue {
  readonly maxBytes: number;
  #chunks: Buffer[] = [];
  #queued = 0;
  #dropped = 0;

  constructor(maxBytes: number = DEFAULT_MAX_QUEUED_BYTES) {
    if (!Number.isInteger(maxBytes) || maxBytes < 1) {
      throw new RangeError(`maxQueuedBytes must be a positive integer, got ${maxBytes}`);
    }
    this.maxBytes = maxBytes;
  }

  get queuedBytes(): number {
    return this.#queued;
  }

  get droppedBytes(): number {
    return this.#dropped;
  }

  /** Queue what fits of `data` (a copy: callers reuse their buffers); returns how much was taken. */
  accept(data: Uint8Array): number {
    const take = Math.max(0, Math.min(data.length, this.maxBytes - this.#queued));
    this.#dropped += data.length - take;
    if (take === 0) return 0;
    this.#chunks.push(Buffer.from(data.subarray(0, take)));
    this.#queued += take;
    return take;
  }

  /** The oldest queued chunk, if any. */
  head(): Buffer | undefined {
    return this.#chunks[0];
  }

  /** Forget the first `n` bytes of the head chunk (they were written). */
  consumeHead(n: number): void {
    const head = this.#chunks[0];
    if (head === undefined) return;
    this.#queued -= n;
    if (n < head.length) this.#chunks[0] = head.subarray(n);
    else this.#chunks.shift();
  }

  /** Everything queued, emptying the queue. */
  takeAll(): Buffer[] {
    const chunks = this.#chunks;
    this.#chunks = [];
    this.#queued = 0;
    return chunks;
  }

  clear(): void {
    this.takeAll();
  }
}
