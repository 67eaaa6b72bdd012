/** The bench's own verdict: targets as data, met / not met, per-repetition ratios, what the floors say. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { atLeastRatio, atMostRatio, atMostValue, gapVerdict, judge, median, meets, ratios, targetText } from '../../scripts/bench/verdict.ts';

test('targets print as the spec states them', () => {
  assert.equal(targetText(atLeastRatio(1)), '≥ 1.0×');
  assert.equal(targetText(atLeastRatio(0.8)), '≥ 0.8×');
  assert.equal(targetText(atMostRatio(1.3)), '≤ 1.3×');
  assert.equal(targetText(atLeastRatio(10)), '≥ 10×');
  assert.equal(targetText(atLeastRatio(0.95, 'every byte')), 'every byte, ≥ 0.95×');
  assert.equal(targetText(atMostValue(16), 'KiB'), '≤ 16 KiB');
  assert.equal(targetText(atMostValue(0.5), '% of a core'), '≤ 0.5 % of a core');
});

test('met is the bound applied to the ratio or the value, bounds inclusive', () => {
  assert.equal(judge(atLeastRatio(1), { chardev: 5, ratio: 1 }), true);
  assert.equal(judge(atLeastRatio(1), { chardev: 5, ratio: 0.99 }), false);
  assert.equal(judge(atMostRatio(1.1), { chardev: 5, ratio: 1.1 }), true);
  assert.equal(judge(atMostRatio(1.1), { chardev: 5, ratio: 1.2 }), false);
  // A value target ignores the ratio.
  assert.equal(judge(atMostValue(16), { chardev: 10.4, ratio: 0.01 }), true);
  assert.equal(judge(atMostValue(16), { chardev: 16.1, ratio: 0.01 }), false);
});

test('no figure is no verdict, never a pass', () => {
  assert.equal(meets(atLeastRatio(1), null), null);
  assert.equal(meets(atLeastRatio(1), NaN), null);
  assert.equal(judge(atMostValue(16), { chardev: null, ratio: 2 }), null);
});

test('ratios pair repetitions, and the median of them is not the ratio of medians', () => {
  const chardev = [100, 300, 200];
  const socat = [100, 600, 100];
  assert.deepEqual(ratios(chardev, socat), [1, 0.5, 2]);
  assert.equal(median(ratios(chardev, socat)), 1);
  assert.equal(median(chardev) / median(socat), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  // A side that did not run in one repetition leaves that repetition out.
  assert.equal(median([NaN, 1, 3]), 2);
});

test('the floors decide whose the gap is', () => {
  const t = atLeastRatio(1);
  const machine = gapVerdict(
    t,
    [
      { name: 'bare Node', ratio: 0.5 },
      { name: 'kernel-only relay', ratio: 0.9 },
    ],
    0.45,
  );
  assert.equal(machine.whose, 'machine');
  assert.match(machine.text, /bare Node 0\.50×; kernel-only relay 0\.90×/);
  assert.match(machine.text, /50 % of the best floor \(kernel-only relay\)/);
  const ours = gapVerdict(
    t,
    [
      { name: 'bare Node', ratio: 0.5 },
      { name: 'kernel-only relay', ratio: 1.4 },
    ],
    0.7,
  );
  assert.equal(ours.whose, 'chardev');
  assert.match(ours.text, /kernel-only relay meets ≥ 1\.0×, so the remaining gap is chardev's/);
  // For a ≤ target (CPU per GiB) the best floor is the lowest.
  const cpu = gapVerdict(
    atMostRatio(1),
    [
      { name: 'kernel-only relay', ratio: 1.2 },
      { name: 'x', ratio: 1.5 },
    ],
    2.4,
  );
  assert.equal(cpu.whose, 'machine');
  assert.match(cpu.text, /50 % of the best floor \(kernel-only relay\)/);
  assert.match(gapVerdict(atMostRatio(1.1), [{ name: 'bare Node', ratio: 1.9 }], 1.5).text, /chardev does as well as the best floor \(bare Node\) or better/);
  assert.equal(gapVerdict(t, []).whose, 'unknown');
  assert.equal(gapVerdict(t, [{ name: 'n', ratio: null }]).whose, 'unknown');
  assert.equal(gapVerdict(atMostValue(16), [{ name: 'n', ratio: 0.5 }]).whose, 'unknown');
});
