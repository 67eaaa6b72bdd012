/** The generated docs: the page and the README's summary come from a report, nothing typed by hand. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  README_BEGIN,
  README_END,
  floorsOf,
  performancePage,
  readmeSummary,
  replaceBetweenMarkers,
  rowsTable,
  terminalText,
} from '../../scripts/bench/docs.ts';
import { fanOutCompleteness, floorRow, judged, type Row } from '../../scripts/bench/measurements.ts';
import type { BenchReport } from '../../scripts/bench/report.ts';
import { atLeastRatio, atMostValue } from '../../scripts/bench/verdict.ts';

const rows: Row[] = [
  judged({ id: 'bulk-tcp', figure: 'bulk, TCP', unit: 'MB/s', chardev: 1500, peer: 1000, peerName: 'socat TCP-LISTEN', ratio: 1.5, goal: atLeastRatio(1) }),
  judged({
    id: 'log',
    figure: '<log file> tee | null device',
    unit: 'MB/s',
    chardev: 500,
    peer: 1000,
    peerName: 'cat > file',
    ratio: 0.5,
    goal: atLeastRatio(1),
    note: 'lossless',
  }),
  floorRow(['log'], { id: 'floor-log-node', figure: '  floor: bare Node', unit: 'MB/s', chardev: 600, peer: 1000, peerName: 'cat > file', ratio: 0.6 }),
  judged({ id: 'idle-memory', figure: 'memory per idle device', unit: 'KiB', chardev: 10.4, peer: 846, peerName: 'socat', ratio: 0.01, goal: atMostValue(16) }),
];

const report: BenchReport = {
  mode: 'full',
  reps: 3,
  date: '2026-12-03T13:00:00Z',
  command: 'npm run bench',
  seconds: 250,
  versions: { chardev: '0.1.0', commit: 'abc1234567', socat: '1.7.4.4', node: 'v20.20.2', python: '3.11.7' },
  machine: {
    cores: 2,
    cpu: 'AMD EPYC',
    memoryGiB: 23.5,
    kernel: 'Linux 6.1',
    loadBefore: [0.1, 0.2, 0.3],
    loadAfter: [1.5, 0.9, 0.5],
    openFilesLimit: { soft: 1024, hard: 4096 },
  },
  rows,
  errors: [],
};

test('met / not met comes from the rows, floors carry none', () => {
  assert.deepEqual(
    rows.map((r) => [r.id, r.target, r.met]),
    [
      ['bulk-tcp', '≥ 1.0×', true],
      ['log', '≥ 1.0×', false],
      ['floor-log-node', '(floor)', null],
      ['idle-memory', '≤ 16 KiB', true],
    ],
  );
  assert.deepEqual(floorsOf(rows, 'log'), [{ name: 'bare Node', ratio: 0.6 }]);
  // A compiled floor says so, and one under other rules too: the verdict weighs both (verdict.ts).
  const more = [
    ...rows,
    floorRow(['log'], {
      id: 'floor-log-c',
      figure: '  floor: in C',
      unit: 'MB/s',
      chardev: 700,
      peer: 1000,
      peerName: 'cat > file',
      ratio: 0.7,
      floorCompiled: true,
    }),
    floorRow(['log'], {
      id: 'floor-log-x',
      figure: '  floor: lenient',
      unit: 'MB/s',
      chardev: 900,
      peer: 1000,
      peerName: 'cat > file',
      ratio: 0.9,
      floorRules: 'other',
    }),
  ];
  assert.deepEqual(floorsOf(more, 'log'), [
    { name: 'bare Node', ratio: 0.6 },
    { name: 'in C', ratio: 0.7, compiled: true },
    { name: 'lenient', ratio: 0.9, otherRules: 'other' },
  ]);
});

test('the page holds the run, the machine, the command, every row, the gaps and the notes', () => {
  const page = performancePage(report, '## Notes\n\nWritten by hand.\n');
  assert.match(page, /\*\*2 of 3 targets met\*\*/);
  assert.match(page, /started 2026-12-03T13:00:00Z/);
  assert.match(page, /Command: `npm run bench`/);
  assert.match(page, /load average \(1, 5, 15 min\) 0\.1 0\.2 0\.3 at the start, 1\.5 0\.9 0\.5 at the end/);
  assert.match(page, /socat 1\.7\.4\.4 \(peer\), Node v20\.20\.2, Python 3\.11\.7/);
  // The compiler of the C floors is recorded with the other versions, or why there were none.
  assert.doesNotMatch(page, /C floors/);
  const withCc = performancePage({ ...report, versions: { ...report.versions, cc: 'cc (Debian 12.2.0-14) 12.2.0' } }, '');
  assert.match(withCc, /Python 3\.11\.7 \(readers, clients, the Python floors\), cc \(Debian 12\.2\.0-14\) 12\.2\.0 \(the C floors, -O2\)\./);
  const without = performancePage({ ...report, versions: { ...report.versions, cFloorsSkipped: 'no C compiler (cc) found' } }, '');
  assert.match(without, /; no C floors: no C compiler \(cc\) found\./);
  assert.match(page, /quiet at the start \(load 0\.1 on 2 cores\)/);
  const busy = performancePage({ ...report, machine: { ...report.machine, loadBefore: [3.2, 2, 1] } }, '');
  assert.match(busy, /busy at the start \(load 3\.2 on 2 cores\)/);
  // What other processes used during the run decides, when the report has it.
  const measured = (meanCores: number, maxCores: number): BenchReport => ({
    ...report,
    machine: { ...report.machine, otherCpu: { meanCores, maxCores, windowSeconds: 10 } },
  });
  assert.match(performancePage(measured(0.05, 0.3), ''), /quiet: other processes used 0\.05 of 2 cores on average during the run, up to 0\.30 over 10 s/);
  assert.match(performancePage(measured(0.05, 1.2), ''), /busy: other processes used 0\.05 of 2 cores/);
  assert.match(
    readmeSummary(measured(0.6, 1.2), 'p.md'),
    /busy: other processes used 0\.60 of 2 cores on average during the run, up to 1\.20 over 10 s; chardev/,
  );
  // Markdown: no raw tag, no stray cell border, floors without their indentation.
  assert.match(page, /\| &lt;log file> tee \\\| null device \| 500 MB\/s \| 1000 MB\/s \(cat > file\) \| 0\.50× \| ≥ 1\.0× \| NOT MET \|/);
  assert.match(page, /\| floor: bare Node \| 600 MB\/s/);
  assert.match(page, /bare Node 0\.60× \(below ≥ 1\.0×; chardev is at 83 % of it\); none of them meets ≥ 1\.0×, but bare Node does better than chardev/);
  assert.doesNotMatch(page, /machine's for this work/);
  // The same row whose peer is a relay doing the same work: the peer meets the target, so the gap is chardev's.
  const sameWork = rows.map((r) => (r.id === 'log' ? { ...r, peerDoesSameWork: true } : r));
  const samePage = performancePage({ ...report, rows: sameWork }, '');
  assert.match(samePage, /the peer, cat > file, is itself a relay doing the same work and meets ≥ 1\.0× by definition/);
  assert.match(samePage, /cat > file meets ≥ 1\.0× on this machine in the same run, so the remaining gap is chardev's/);
  assert.match(page, /## Notes\n\nWritten by hand\./);
  assert.doesNotMatch(page, /Failed measurements/);
});

test("a target not met where a compiled floor doing the same work falls short too, chardev level with it, is called the machine's limit", () => {
  const cFloor = floorRow(['log'], {
    id: 'floor-log-c',
    figure: '  floor: in C',
    unit: 'MB/s',
    chardev: 610,
    peer: 1000,
    peerName: 'cat > file',
    ratio: 0.61,
    floorCompiled: true,
  });
  // chardev's log row level with bare Node (0.60×) and the C floor (0.61×).
  const level = rows.map((r) => (r.id === 'log' ? judged({ ...r, chardev: 600, ratio: 0.6, goal: atLeastRatio(1) }) : r));
  const proven: BenchReport = { ...report, rows: [...level, cFloor] };
  const page = performancePage(proven, '');
  assert.match(
    page,
    /\*\*2 of 3 targets met; of the 1 not met, 1 is the machine's limit as this run measured it \(a relay in C doing the same work under chardev's rules is below the target too, and chardev is level with it or better\)\*\* in this run/,
  );
  assert.match(page, /\| 0\.60× \| ≥ 1\.0× \| NOT MET \(the machine's limit\) \|/);
  assert.match(readmeSummary(proven, 'p.md'), /\| ≥ 1\.0× \| NOT MET \(the machine's limit\) \|/);
  assert.match(terminalText(proven), /targets: 2 of 3 targets met; of the 1 not met, 1 is the machine's limit/);
  // A compiled floor well ahead of chardev leaves the gap chardev's: plain NOT MET, and no claim in the summary.
  const ahead: BenchReport = { ...report, rows: [...level, { ...cFloor, ratio: 0.7 }] };
  assert.match(performancePage(ahead, ''), /\*\*2 of 3 targets met\*\* in this run/);
  assert.doesNotMatch(performancePage(ahead, ''), /NOT MET \(the machine's limit\) \||machine's limit as this run/);
});

test('failures show on the page, the summary and the terminal', () => {
  const failed: BenchReport = { ...report, errors: [{ id: 'fanout', error: 'x: got 1 of 2 bytes', lostBytes: true }] };
  assert.match(performancePage(failed, ''), /\*\*BYTES LOST\*\* \(no figure\) `fanout`/);
  assert.match(readmeSummary(failed, 'docs/performance.md'), /BYTES LOST: `fanout`/);
  assert.match(terminalText(failed), /FAILED fanout, BYTES LOST \(no figure\)/);
});

test('the README summary lists judged rows only, and links the page', () => {
  const s = readmeSummary(report, 'docs/performance.md');
  assert.match(s, /2 of 3 targets met \(full run, 2026-12-03/);
  assert.match(s, /\[docs\/performance\.md\]\(docs\/performance\.md\)/);
  assert.doesNotMatch(s, /bare Node/);
  assert.match(s, /\| memory per idle device \| 10\.4 KiB \| ≤ 16 KiB \| met \|/);
  assert.match(s, /\| bulk, TCP \| 1\.50× \(1500 MB\/s\) \| ≥ 1\.0× \| met \|/);
});

test('the README is rewritten between its markers only, idempotently', () => {
  const readme = `# x\n\n## Performance\n\nintro\n\n${README_BEGIN}\nold table\n${README_END}\n\n## Next\n`;
  const once = replaceBetweenMarkers(readme, 'new table\n');
  assert.equal(once, `# x\n\n## Performance\n\nintro\n\n${README_BEGIN}\nnew table\n${README_END}\n\n## Next\n`);
  assert.equal(replaceBetweenMarkers(once, 'new table'), once);
  assert.throws(() => replaceBetweenMarkers('# no markers\n', 'x'), /markers are missing/);
  assert.throws(() => replaceBetweenMarkers(`${README_END}\n${README_BEGIN}\n`, 'x'), /out of order/);
  assert.throws(() => replaceBetweenMarkers(`${README_BEGIN}\n${README_END}\n${README_BEGIN}\n${README_END}\n`, 'x'), /more than once/);
});

test('the terminal table pads its columns and keeps floors indented', () => {
  const lines = rowsTable(rows).split('\n');
  assert.equal(new Set(lines.map((l) => l.length)).size, 1);
  assert.match(lines[4] ?? '', /^\| {3}floor: bare Node /);
});

test('a fan-out aggregate is made of what each live client received: whole streams counted, the rest missed', () => {
  assert.deepEqual(fanOutCompleteness([100, 100, 40, 0], 100), { whole: 2, missedBytes: 160 });
  assert.deepEqual(fanOutCompleteness([100, 100], 100), { whole: 2, missedBytes: 0 });
});
