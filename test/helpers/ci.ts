/**
 * Tests that need something this machine may lack (root, a tool): outside CI they skip and
 * say why; under CI (`CI` set, as .ci/run does) they run, and the missing piece is a failure —
 * so nothing CI is meant to check can be skipped there without anyone noticing.
 * (test/qemu/guest-kit.ts applies the same rule to the real-guest kit.)
 */
import assert from 'node:assert/strict';

export const inCi = process.env['CI'] !== undefined && process.env['CI'] !== '';

/** node:test options: skip with `reason` outside CI; run in CI (then call `required`). */
export function needs(reason: string | undefined): { skip?: string } {
  return reason !== undefined && !inCi ? { skip: reason } : {};
}

/** At the start of a test that `needs` something: in CI its absence fails the test with the reason. */
export function required(reason: string | undefined): void {
  if (reason !== undefined) assert.fail(`CI must provide this (CI is set): ${reason}`);
}
