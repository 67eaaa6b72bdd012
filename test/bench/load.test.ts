/** Other work's CPU while the bench runs: parsed from /proc/PID/stat, the bench's own groups left out. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OtherCpuMeter, parseStat } from '../../scripts/bench/load.ts';

test('a stat line: pid, process group, utime + stime, whatever the command name holds', () => {
  const line = '4242 (node (a) b) S 1 4240 4240 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 11 0 100 0 0';
  assert.deepEqual(parseStat(line), { pid: 4242, pgrp: 4240, ticks: 175 });
  assert.equal(parseStat('garbage'), undefined);
});

test("only other groups' CPU counts, as cores over the run and over the busiest window", () => {
  const ours = (pgrp: number): boolean => pgrp === 1;
  const m = new OtherCpuMeter(ours);
  m.sample(
    [
      { pid: 10, pgrp: 1, ticks: 0 },
      { pid: 20, pgrp: 2, ticks: 1000 },
    ],
    0,
  );
  // 10 s: ours burns 2 cores (not counted), the other 0.5 core, and a new process 0.1 core.
  m.sample(
    [
      { pid: 10, pgrp: 1, ticks: 2000 },
      { pid: 20, pgrp: 2, ticks: 1500 },
      { pid: 30, pgrp: 3, ticks: 100 },
    ],
    10,
  );
  // 10 s more: only the other, 1.5 cores.
  m.sample(
    [
      { pid: 10, pgrp: 1, ticks: 4000 },
      { pid: 20, pgrp: 2, ticks: 3000 },
    ],
    20,
  );
  const r = m.result(10);
  assert.equal(r.windowSeconds, 10);
  assert.ok(Math.abs(r.meanCores - (600 + 1500) / 100 / 20) < 1e-9);
  assert.ok(Math.abs(r.maxCores - 1.5) < 1e-9);
});

test('a busy tail counts, and the busiest window is never below the average', () => {
  const m = new OtherCpuMeter(() => false);
  let ticks = 0;
  m.sample([{ pid: 1, pgrp: 1, ticks }], 0);
  for (let t = 2; t <= 12; t += 2) {
    ticks += t <= 10 ? 0 : 400; // idle for 10 s, then 2 cores for the last 2 s
    m.sample([{ pid: 1, pgrp: 1, ticks }], t);
  }
  const r = m.result(10);
  assert.ok(Math.abs(r.meanCores - 4 / 12) < 1e-9);
  assert.ok(Math.abs(r.maxCores - 0.4) < 1e-9);
});

test('a run shorter than the window is one window', () => {
  const m = new OtherCpuMeter(() => false);
  m.sample([{ pid: 1, pgrp: 1, ticks: 0 }], 0);
  m.sample([{ pid: 1, pgrp: 1, ticks: 100 }], 4);
  assert.ok(Math.abs(m.result(10).maxCores - 0.25) < 1e-9);
  assert.equal(new OtherCpuMeter(() => false).result().meanCores, 0);
});
