/**
 * Process-wide allocator settings for a relay that moves bulk data.
 *
 * Every chunk Node reads from a socket or pipe is a fresh 64 KiB allocation, freed again
 * once the chunk has been written on. With glibc's defaults the freed memory at the top of
 * the heap is handed back to the kernel (trim) as soon as 128 KiB are free, and the next
 * chunk faults its pages in again: profiles of `npm run bench` put ~30 % of a bulk relay's
 * time in the page-fault path (clear_page, madvise). Keeping a bounded amount of freed
 * memory in the heap makes the next chunk reuse already-mapped pages.
 *
 * Measured here (guest → UNIX socket relay, 1 GiB): minor faults ~70,000 → ~13,000,
 * throughput 250–340 → 560–900 MB/s. The cost is memory the process keeps after a burst:
 * at most TRIM_THRESHOLD_BYTES of freed heap stays mapped (idle devices do not grow it).
 *
 * This is a process-level choice, so the library never makes it by itself: `chardev run`
 * (the daemon) calls it, and an embedder may.
 */
import { libc } from './native.ts';

// malloc.h parameter numbers.
const M_TRIM_THRESHOLD = -1;
const M_TOP_PAD = -2;
const M_MMAP_THRESHOLD = -3;

/** Freed heap kept mapped instead of being returned to the kernel. */
export const TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024;
/** Extra heap obtained per growth, so a burst does not grow the heap chunk by chunk. */
export const TOP_PAD_BYTES = 16 * 1024 * 1024;
/**
 * Allocations at least this big get their own mapping (and are unmapped when freed);
 * read buffers and queued chunks stay below it and are recycled in the heap.
 */
export const MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024;

/**
 * Apply the settings above to this process's glibc allocator. Returns false where they do
 * not apply (no glibc, or koffi cannot load): the process then runs with the defaults.
 */
export function tuneAllocatorForStreaming(): boolean {
  return tuneAllocator() === undefined;
}

/** The same, saying why not in one line (e.g. `mallopt is not in this C library (musl, …)`); undefined when applied. */
export function tuneAllocator(): string | undefined {
  try {
    const c = libc();
    const ok =
      c.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) === 1 &&
      c.mallopt(M_TOP_PAD, TOP_PAD_BYTES) === 1 &&
      c.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) === 1;
    return ok ? undefined : 'mallopt refused the settings';
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Give the heap that start-up freed back to the kernel, once: with the trim threshold
 * above, glibc keeps it mapped (module loading leaves a few MiB of it). An idle daemon is
 * then its steady size. False where it does not apply (no glibc, no koffi).
 */
export function releaseFreedHeap(): boolean {
  try {
    libc().malloc_trim(0);
    return true;
  } catch {
    return false;
  }
}
