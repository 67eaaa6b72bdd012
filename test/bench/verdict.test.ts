/** The bench's own verdict: targets as data, met / not met, per-repetition ratios, what the floors say. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LEVEL_WITHIN, atLeastRatio, atMostRatio, atMostValue, gapVerdict, judge, median, meets, ratios, targetText } from '../../scripts/bench/verdict.ts';

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

test("the gap is the machine's only when no floor meets the target and chardev is level with the best floor or better", () => {
  const t = atLeastRatio(1);
  const floors = [
    { name: 'bare Node', ratio: 0.5 },
    { name: 'kernel-only relay', ratio: 0.9 },
  ];
  // Level with the best floor, within LEVEL_WITHIN.
  const level = gapVerdict(t, floors, 0.9 * (1 - LEVEL_WITHIN / 2));
  assert.equal(level.whose, 'machine');
  assert.match(
    level.text,
    /bare Node 0\.50× \(below ≥ 1\.0×; chardev does better than it\); kernel-only relay 0\.90× \(below ≥ 1\.0×; chardev is level with it \(within 5 %\)\)/,
  );
  assert.match(
    level.text,
    /none of them meets ≥ 1\.0×, and chardev is level with the best of them \(kernel-only relay\) \(within 5 %\), so the remaining gap is the machine's/,
  );
  assert.equal(gapVerdict(t, floors, 0.95).whose, 'machine');
  // Behind the best floor beyond noise: that part is chardev's, and nothing is called the machine's.
  const behind = gapVerdict(t, floors, 0.45);
  assert.equal(behind.whose, 'chardev');
  assert.match(behind.text, /bare Node 0\.50× \(below ≥ 1\.0×; chardev is at 90 % of it\)/);
  assert.match(
    behind.text,
    /but kernel-only relay does better than chardev \(chardev is at 50 % of it\), so the gap from chardev's 0\.45× up to kernel-only relay's 0\.90× is chardev's \(82 % of the way from chardev to ≥ 1\.0×\)/,
  );
  // No compiled floor: the rest is not called anyone's.
  assert.match(behind.text, /none of them is compiled, so this run does not show whose it is/);
  assert.doesNotMatch(behind.text, /machine's/);
  // A floor that meets the target: the gap is chardev's.
  const ours = gapVerdict(
    t,
    [
      { name: 'bare Node', ratio: 0.5 },
      { name: 'kernel-only relay', ratio: 1.4 },
    ],
    0.7,
  );
  assert.equal(ours.whose, 'chardev');
  assert.match(ours.text, /kernel-only relay 1\.40× \(meets ≥ 1\.0×; chardev is at 50 % of it\)/);
  assert.match(ours.text, /kernel-only relay meets ≥ 1\.0× on this machine in the same run, so the remaining gap is chardev's/);
});

test("a peer that is itself a relay doing the same work meets a ≥ 1.0× target, so the gap is never the machine's", () => {
  // cat > file: every floor below, chardev level with the best of them.
  const floors = [
    { name: 'bare Node fs.writeSync', ratio: 0.54 },
    { name: 'kernel-only splice to the file', ratio: 0.79 },
  ];
  const file = gapVerdict(atLeastRatio(1), floors, 0.78, { name: 'cat > file' });
  assert.equal(file.whose, 'chardev');
  assert.match(file.text, /the peer, cat > file, is itself a relay doing the same work and meets ≥ 1\.0× by definition \(1\.00×\)/);
  assert.match(file.text, /cat > file meets ≥ 1\.0× on this machine in the same run, so the remaining gap is chardev's/);
  assert.doesNotMatch(file.text, /machine's|shared by every relay/);
  // Without the peer's word the same figures read as the machine's.
  assert.equal(gapVerdict(atLeastRatio(1), floors, 0.78).whose, 'machine');
  // A target the peer does not meet by itself (≥ 10× one client) is not decided by the peer.
  assert.equal(gapVerdict(atLeastRatio(10), [{ name: 'tee relay', ratio: 2 }], 2, { name: 'one client' }).whose, 'machine');
});

test("fan-out: a floor better than chardev, none meeting ≥ 10×, leaves the gap up to it chardev's", () => {
  const v = gapVerdict(
    atLeastRatio(10),
    [
      { name: 'minimal fan-out relay', ratio: 2.58 },
      { name: 'kernel-only fan-out relay', ratio: 1.9 },
    ],
    1.75,
  );
  assert.equal(v.whose, 'chardev');
  assert.match(v.text, /minimal fan-out relay 2\.58× \(below ≥ 10×; chardev is at 68 % of it\)/);
  assert.match(v.text, /kernel-only fan-out relay 1\.90× \(below ≥ 10×; chardev is at 92 % of it\)/);
  assert.match(v.text, /the rest, from there to ≥ 10×, no floor here closes either/);
});

test("a compiled floor below the target makes the rest of the gap the machine's, and the text says how much is chardev's", () => {
  // The fan-out case: a C relay under chardev's rules at 2.5×, chardev at 2.1×, the target 10×.
  const floors = [
    { name: 'kernel-only fan-out relay (Python)', ratio: 2.2 },
    { name: 'kernel-only fan-out relay in C', ratio: 2.5, compiled: true },
    { name: 'lossless fan-out relay in C', ratio: 3.5, compiled: true, otherRules: 'the guest waits for every viewer' },
  ];
  const v = gapVerdict(atLeastRatio(10), floors, 2.1);
  assert.equal(v.whose, 'chardev');
  assert.match(
    v.text,
    /but kernel-only fan-out relay in C does better than chardev \(chardev is at 84 % of it\), so the gap from chardev's 2\.10× up to kernel-only fan-out relay in C's 2\.50× is chardev's \(5 % of the way from chardev to ≥ 10×\)/,
  );
  assert.match(
    v.text,
    /the rest, from there to ≥ 10×, is the machine's for this work: a compiled relay doing the same work under chardev's rules \(kernel-only fan-out relay in C, 2\.50×\) does not reach ≥ 10× either/,
  );
  // Level with the compiled floor: all of it is the machine's, shown by that floor.
  const level = gapVerdict(atLeastRatio(10), floors, 2.45);
  assert.equal(level.whose, 'machine');
  assert.match(
    level.text,
    /so the remaining gap is the machine's for this work: a compiled relay doing the same work under chardev's rules \(kernel-only fan-out relay in C, 2\.50×\)/,
  );
  assert.doesNotMatch(level.text, /as far as these floors show/);
  // A Python floor better than the C one still decides how much is chardev's; the C one, that the rest is the machine's.
  const pyBest = gapVerdict(
    atLeastRatio(0.8),
    [
      { name: 'py', ratio: 0.7 },
      { name: 'c', ratio: 0.65, compiled: true },
    ],
    0.5,
  );
  assert.equal(pyBest.whose, 'chardev');
  assert.match(
    pyBest.text,
    /so the gap from chardev's 0\.50× up to py's 0\.70× is chardev's \(67 % of the way from chardev to ≥ 0\.8×\); the rest, from there to ≥ 0\.8×, is the machine's for this work: a compiled relay doing the same work under chardev's rules \(c, 0\.65×\)/,
  );
});

test("interpreted floors alone, a compiled floor under other rules, or one that did not run, prove the machine's limit only as far as they go", () => {
  const python = [{ name: 'kernel-only relay (Python)', ratio: 0.9 }];
  const level = gapVerdict(atLeastRatio(1), python, 0.9);
  assert.equal(level.whose, 'machine');
  assert.match(
    level.text,
    /the remaining gap is the machine's for this work, as far as these floors show \(none of them compiled: each pays an interpreter's or a runtime's cost per call, so a relay in C might do better\)/,
  );
  // A compiled floor working under other rules is not the machine's limit for chardev's work.
  const lenient = gapVerdict(atLeastRatio(1), [...python, { name: 'lossless in C', ratio: 0.95, compiled: true, otherRules: 'the guest waits' }], 0.9);
  assert.match(lenient.text, /none of them compiled/);
  // A C floor that was not built (no compiler) has no figure and proves nothing.
  const skipped = gapVerdict(atLeastRatio(1), [...python, { name: 'kernel-only relay in C', ratio: null, compiled: true }], 0.9);
  assert.match(skipped.text, /none of them compiled/);
  assert.doesNotMatch(skipped.text, /kernel-only relay in C/);
});

test('a floor under other rules is shown and compared but decides nothing', () => {
  const lenient = { name: 'lossless relay', ratio: 2.38, otherRules: 'the guest waits for every viewer' };
  const v = gapVerdict(atLeastRatio(10), [lenient, { name: 'kernel-only fan-out relay', ratio: 1.67 }], 1.79);
  assert.equal(v.whose, 'machine');
  assert.match(v.text, /lossless relay 2\.38× \(below ≥ 10×; chardev is at 75 % of it; other rules: the guest waits for every viewer\)/);
  assert.match(v.text, /chardev does better than the best of them \(kernel-only fan-out relay\)/);
  // Without it the lenient floor would decide, and the gap up to it would be chardev's.
  assert.equal(
    gapVerdict(
      atLeastRatio(10),
      [
        { name: lenient.name, ratio: lenient.ratio },
        { name: 'k', ratio: 1.67 },
      ],
      1.79,
    ).whose,
    'chardev',
  );
  // Even meeting the target, it does not make the gap chardev's; alone, it decides nothing.
  assert.equal(gapVerdict(atLeastRatio(1), [{ ...lenient, ratio: 1.5 }], 0.8).whose, 'unexplained');
});

test('≤ targets: the best floor is the lowest, and lower is better', () => {
  const cpu = gapVerdict(
    atMostRatio(1),
    [
      { name: 'kernel-only relay', ratio: 1.2 },
      { name: 'x', ratio: 1.5 },
    ],
    2.4,
  );
  assert.equal(cpu.whose, 'chardev');
  assert.match(cpu.text, /kernel-only relay 1\.20× \(below ≤ 1\.0×; chardev is at 50 % of it\)/);
  assert.match(cpu.text, /but kernel-only relay does better than chardev/);
  const level = gapVerdict(atMostRatio(1.1), [{ name: 'bare Node', ratio: 1.9 }], 1.5);
  assert.equal(level.whose, 'machine');
  assert.match(level.text, /chardev does better than the best of them \(bare Node\)/);
});

test('no floor, or no figure, decides nothing', () => {
  const t = atLeastRatio(1);
  assert.equal(gapVerdict(t, []).whose, 'unknown');
  assert.equal(gapVerdict(t, [{ name: 'n', ratio: null }]).whose, 'unknown');
  assert.equal(gapVerdict(atMostValue(16), [{ name: 'n', ratio: 0.5 }]).whose, 'unknown');
  assert.equal(gapVerdict(t, [{ name: 'n', ratio: 0.5 }], null).whose, 'unexplained');
  assert.equal(gapVerdict(t, [{ name: 'n', ratio: 0.5 }], NaN).whose, 'unexplained');
});

test("only a compiled floor below the target, with chardev level with the best floor or better, proves the gap is the machine's", () => {
  const c = { name: 'relay in C', ratio: 0.46, compiled: true };
  const py = { name: 'relay in Python', ratio: 0.42 };
  // Level with the C floor (within 5 %): proven.
  assert.equal(gapVerdict(atLeastRatio(0.8), [py, c], 0.45).proven, true);
  // Behind it by more than that: chardev's, not proven.
  const behind = gapVerdict(atLeastRatio(0.8), [py, c], 0.43);
  assert.equal(behind.whose, 'chardev');
  assert.equal(behind.proven, false);
  // Level with interpreted floors only: the machine's as far as they show, not proven.
  const interpreted = gapVerdict(atLeastRatio(0.8), [py], 0.42);
  assert.equal(interpreted.whose, 'machine');
  assert.equal(interpreted.proven, false);
  // A peer doing the same work meets a ≥ 1.0× target: never proven.
  assert.equal(gapVerdict(atLeastRatio(1), [{ ...c, ratio: 0.9 }], 0.95, { name: 'cat > file' }).proven, false);
  // No floor: nothing proven.
  assert.equal(gapVerdict(atLeastRatio(1), [], 0.9).proven, false);
});
