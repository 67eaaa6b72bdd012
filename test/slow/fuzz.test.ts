/**
 * SLOW SUITE — fuzzing, 60 s by default (CI runs it with everything else).
 *
 * Half the time: loadDomain on random and mutated documents (libvirt's own
 * test documents read in place, a few of ours, the small hostile ones; edits
 * from byte flips to spliced pieces and repeated elements). Only a
 * ConfigError may ever come out, and its message is one line.
 *
 * The other half: the telnet decoder on random byte streams heavy in IAC and
 * command bytes, fed whole and in random pieces. It never throws, never
 * delivers an empty buffer, never outputs more bytes than it was given, and
 * the pieces decode as the whole does.
 *
 * The loop runs in a worker thread; if it stops making progress for 20 s the
 * worker is stopped and the input in hand is reported (and saved).
 *
 * CHARDEV_FUZZ_MS   total duration in ms (default 60000, split evenly)
 * CHARDEV_FUZZ_SEED PRNG seed, to replay a run (printed with the results)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { FuzzJob, FuzzResult } from './fuzz-worker.ts';

const TOTAL_MS = Number(process.env.CHARDEV_FUZZ_MS ?? 60_000);
const SEED = process.env.CHARDEV_FUZZ_SEED !== undefined ? Number(process.env.CHARDEV_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 32);
const STALL_MS = 20_000;
/** Longest generated input, in UTF-16 code units (the worker keeps the one in hand in shared memory). */
const MAX_INPUT = 256 * 1024;

function saveInput(name: string, data: string | Buffer): string {
  const file = join(mkdtempSync(join(tmpdir(), 'chardev-fuzz-')), name);
  writeFileSync(file, data);
  return file;
}

test(`fuzz: the XML loader and the telnet decoder under random input (${TOTAL_MS} ms, seed ${SEED})`, { timeout: TOTAL_MS + 5 * 60_000 }, async (t) => {
  assert.ok(Number.isFinite(TOTAL_MS) && TOTAL_MS > 0, 'CHARDEV_FUZZ_MS must be a positive number');
  assert.ok(Number.isInteger(SEED), 'CHARDEV_FUZZ_SEED must be an integer');
  const progress = new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT);
  const current = new SharedArrayBuffer(MAX_INPUT * 2);
  const job: FuzzJob = { xmlMs: TOTAL_MS / 2, telnetMs: TOTAL_MS / 2, seed: SEED >>> 0, progress, current };
  const counters = new Int32Array(progress);
  const started = performance.now();

  const worker = new Worker(new URL('./fuzz-worker-boot.mjs', import.meta.url), { workerData: job });
  const result = await new Promise<FuzzResult | { type: 'stall'; phase: number; input: string | Buffer } | { type: 'error'; error: string }>((resolve) => {
    let last = -1;
    let lastChange = performance.now();
    const watchdog = setInterval(() => {
      const n = Atomics.load(counters, 1);
      if (n !== last) {
        last = n;
        lastChange = performance.now();
        return;
      }
      if (performance.now() - lastChange < STALL_MS) return;
      clearInterval(watchdog);
      const phase = Atomics.load(counters, 0);
      const len = Atomics.load(counters, 2);
      const input = phase === 1 ? String.fromCharCode(...new Uint16Array(current, 0, len)) : Buffer.from(new Uint8Array(current, 0, len));
      void worker.terminate();
      resolve({ type: 'stall', phase, input });
    }, 250);
    worker.once('message', (m: FuzzResult) => {
      clearInterval(watchdog);
      resolve(m);
    });
    worker.once('error', (e) => {
      clearInterval(watchdog);
      resolve({ type: 'error', error: e.stack ?? String(e) });
    });
  });
  await worker.terminate();
  const seconds = (performance.now() - started) / 1000;

  if (result.type === 'stall') {
    const what = result.phase === 1 ? 'loadDomain' : 'the telnet decoder';
    const file = saveInput(result.phase === 1 ? 'hang.xml' : 'hang.bin', result.input);
    assert.fail(`${what} made no progress for ${STALL_MS / 1000} s (seed ${SEED}); the input is in ${file}`);
  }
  if (result.type === 'error') assert.fail(`the fuzz worker died (seed ${SEED}): ${result.error}`);
  if (result.type === 'failure') {
    const file = result.phase === 'xml' ? saveInput('failure.xml', result.input) : saveInput('failure.bin', Buffer.from(result.input, 'base64'));
    assert.fail(`${result.phase === 'xml' ? 'loadDomain' : 'the telnet decoder'} failed (seed ${SEED}); the input is in ${file}:\n${result.error}`);
  }

  t.diagnostic(`fuzz: ${result.xml} XML documents, ${result.telnet} telnet streams in ${seconds.toFixed(1)} s`);
  const codes = Object.entries(result.xmlCodes)
    .sort((a, b) => b[1] - a[1])
    .map(([c, n]) => `${c} ${n}`)
    .join(', ');
  t.diagnostic(
    `seed ${SEED}; ${result.seeds} seed documents; XML: ${result.xmlAccepted} accepted, refused ${codes}; slowest ${result.slowestXmlMs.toFixed(0)} ms; ` +
      `telnet: ${(result.telnetBytes / 1024 / 1024).toFixed(1)} MiB, slowest stream ${result.slowestTelnetMs.toFixed(0)} ms`,
  );
  assert.ok(result.xml > 0 && result.telnet > 0, 'the fuzzer ran no iterations');
  // Mutation must reach past the XML parser, or the loader's own checks go unexercised.
  assert.ok(result.xmlAccepted > 0, 'no mutated document was ever accepted');
  assert.ok(
    (result.xmlCodes.ERR_CONFIG_INVALID ?? 0) + (result.xmlCodes.ERR_CONFIG_MISSING ?? 0) + (result.xmlCodes.ERR_CONFIG_UNSUPPORTED ?? 0) > 0,
    'no document got past the XML parser to be refused by the model',
  );
});
