import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tuneAllocatorForStreaming } from '../../src/platform/index.ts';

// glibc's mallopt through koffi: if the binding or a parameter number were wrong, mallopt
// returns 0 (or the call throws) and the daemon would silently run untuned.
test('the allocator settings for streaming apply on this glibc machine', () => {
  assert.equal(tuneAllocatorForStreaming(), true);
  // Idempotent: `chardev run` and an embedder may both call it.
  assert.equal(tuneAllocatorForStreaming(), true);
});
