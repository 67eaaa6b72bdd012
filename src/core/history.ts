/**
 * The last N bytes a guest wrote on one device, kept so a client that attaches late sees
 * what scrolled by before it came (what conserver and ttyd users ask for). A fixed
 * buffer used as a ring: appending never allocates and memory never exceeds `sizeBytes`.
 */
export class HistoryRing {
  readonly sizeBytes: number;
  readonly #buf: Buffer;
  /** Where the next byte goes. */
  #head = 0;
  /** Bytes held, at most sizeBytes. */
  #length = 0;
  /** Every byte ever appended; lets a reader tell how much it missed. */
  #total = 0;

  constructor(sizeBytes: number) {
    if (!Number.isInteger(sizeBytes) || sizeBytes < 1) throw new RangeError(`history size must be a positive integer, got ${sizeBytes}`);
    this.sizeBytes = sizeBytes;
    this.#buf = Buffer.alloc(sizeBytes);
  }

  get length(): number {
    return this.#length;
  }

  /** Bytes appended since creation (monotonic). */
  get totalBytes(): number {
    return this.#total;
  }

  append(data: Uint8Array): void {
    this.#total += data.length;
    let src = data;
    // Only the tail can survive; copying the rest would be overwritten anyway.
    if (src.length > this.sizeBytes) src = src.subarray(src.length - this.sizeBytes);
    const first = Math.min(src.length, this.sizeBytes - this.#head);
    this.#buf.set(src.subarray(0, first), this.#head);
    if (first < src.length) this.#buf.set(src.subarray(first), 0);
    this.#head = (this.#head + src.length) % this.sizeBytes;
    this.#length = Math.min(this.sizeBytes, this.#length + src.length);
  }

  /**
   * The guest wrote `totalBytes` more, of which `tail` is the end (at least the last
   * `sizeBytes` of them, or all): the same ring as appending all `totalBytes`, for output
   * that went past the heap (a kernel-path run, its tail read back from the log).
   */
  appendTail(tail: Uint8Array, totalBytes: number): void {
    this.append(tail);
    this.#total += Math.max(0, totalBytes - tail.length);
  }

  /** A copy of what is held, oldest first. */
  snapshot(): Buffer {
    const start = (this.#head - this.#length + this.sizeBytes) % this.sizeBytes;
    if (start + this.#length <= this.sizeBytes) return Buffer.from(this.#buf.subarray(start, start + this.#length));
    return Buffer.concat([this.#buf.subarray(start), this.#buf.subarray(0, this.#head)]);
  }

  /** Take up to `maxBytes` of the oldest bytes out (QMP's ringbuf-read). */
  read(maxBytes: number): Buffer {
    const n = Math.max(0, Math.min(maxBytes, this.#length));
    const start = (this.#head - this.#length + this.sizeBytes) % this.sizeBytes;
    const out = Buffer.alloc(n);
    const first = Math.min(n, this.sizeBytes - start);
    this.#buf.copy(out, 0, start, start + first);
    if (first < n) this.#buf.copy(out, first, 0, n - first);
    this.#length -= n;
    return out;
  }
}
