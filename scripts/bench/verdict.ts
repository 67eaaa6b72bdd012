/**
 * Targets and the bench's own verdict on them: a row states its target as data, and
 * whether it is met is computed here from the run's figures, never typed by hand.
 * Pure functions (no I/O), unit-tested in test/bench/verdict.test.ts.
 */

/**
 * What a row's target bounds: the ratio to its peer (`ratio`, e.g. ≥ 1.0× socat) or
 * chardev's own figure (`value`, e.g. ≤ 16 KiB).
 */
export interface Target {
  readonly on: 'ratio' | 'value';
  readonly op: '>=' | '<=';
  readonly bound: number;
  /** For `value` targets: the bound's unit as printed (defaults to the row's unit). */
  readonly unit?: string;
  /** A condition beyond the bound, said in words (e.g. "every byte"); it is checked by the measurement itself, which fails the run otherwise. */
  readonly also?: string;
}

export function atLeastRatio(bound: number, also?: string): Target {
  return { on: 'ratio', op: '>=', bound, ...(also !== undefined ? { also } : {}) };
}

export function atMostRatio(bound: number, also?: string): Target {
  return { on: 'ratio', op: '<=', bound, ...(also !== undefined ? { also } : {}) };
}

export function atLeastValue(bound: number, unit?: string): Target {
  return { on: 'value', op: '>=', bound, ...(unit !== undefined ? { unit } : {}) };
}

export function atMostValue(bound: number, unit?: string): Target {
  return { on: 'value', op: '<=', bound, ...(unit !== undefined ? { unit } : {}) };
}

/** `≥ 1.0×`, `≤ 1.3×`, `≤ 16 KiB`, with the extra condition first when there is one. */
export function targetText(t: Target, rowUnit = ''): string {
  const op = t.op === '>=' ? '≥' : '≤';
  const bound = t.on === 'ratio' ? `${op} ${formatBound(t.bound)}×` : `${op} ${formatBound(t.bound)} ${t.unit ?? rowUnit}`.trimEnd();
  return t.also !== undefined ? `${t.also}, ${bound}` : bound;
}

function formatBound(x: number): string {
  return Number.isInteger(x) && x >= 10 ? String(x) : x.toFixed(Number.isInteger(x * 10) ? 1 : 2);
}

/** Whether `x` satisfies the target's bound; null when there is no figure to judge. */
export function meets(t: Target, x: number | null): boolean | null {
  if (x === null || !Number.isFinite(x)) return null;
  return t.op === '>=' ? x >= t.bound : x <= t.bound;
}

/** The verdict for a row: its ratio or its value against the target. */
export function judge(t: Target, figures: { readonly chardev: number | null; readonly ratio: number | null }): boolean | null {
  return meets(t, t.on === 'ratio' ? figures.ratio : figures.chardev);
}

/** Median; NaN for none. Ratios are taken per repetition first, then this, so one noisy repetition moves neither side alone. */
export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Per-repetition ratios a[i] / b[i] (pairs from the same repetition only). */
export function ratios(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) out.push((a[i] as number) / (b[i] as number));
  return out;
}

/**
 * What the floors say about a target that was not met. A floor is the same work done by
 * something that is not chardev (bare Node, a kernel-only relay, a minimal relay) in the same
 * run. The text says, from the figures alone, which floors are below the target and which
 * meet it, and where chardev stands against each; it calls the gap the machine's only when
 * no floor (nor a peer doing the same work) meets the target and chardev is level with or
 * better than the best floor. Where a floor or the peer meets it, the gap is chardev's; where
 * chardev is behind the best floor, that part of the gap is chardev's (the text says how
 * much), and the rest is the machine's only if a compiled floor (C, no runtime between its
 * work and the kernel) doing the work under chardev's rules was measured and is below the
 * target too; otherwise this run does not explain it. A floor in an interpreter pays its own
 * cost per call, so floors that are all interpreted prove less, and the text says so.
 */
export interface FloorFigure {
  readonly name: string;
  readonly ratio: number | null;
  /**
   * Set when the floor works under rules chardev may not follow (e.g. a fan-out relay that
   * makes the guest wait for every viewer, which the spec forbids): it is listed and compared,
   * but decides nothing about whose the gap is.
   */
  readonly otherRules?: string;
  /** Compiled (C, -O2): below a target it shows what this machine does for the work, with no runtime's cost in it. */
  readonly compiled?: boolean;
}

/** The peer, when it is itself a relay doing the same work (socat's relay, `cat > file`): at 1.0× of itself by definition. */
export interface SameWorkPeer {
  readonly name: string;
}

export interface GapVerdict {
  /**
   * `machine`: no floor nor same-work peer meets the target and chardev is level with the
   * best floor or better; `chardev`: one of them meets it, or the best floor does better
   * than chardev; `unexplained`: floors measured but chardev's figure is missing;
   * `unknown`: no floor measured.
   */
  readonly whose: 'machine' | 'chardev' | 'unexplained' | 'unknown';
  /**
   * The run proves the whole gap is the machine's, as issue 16's "done when" asks: `whose` is
   * `machine` and a compiled floor doing the work under chardev's rules is below the target
   * too. Interpreted floors alone do not prove it (a relay in C might do better).
   */
  readonly proven: boolean;
  readonly text: string;
}

/**
 * Two figures within this share of each other are called level: repeated runs of the same
 * side on this shared 2-core machine spread by a few percent (docs/performance-notes.md).
 */
export const LEVEL_WITHIN = 0.05;

/** How chardev stands against one figure, oriented so that "better" means nearer the target's good side. */
function standing(t: Target, chardev: number, other: number): { rel: number; word: 'better' | 'level' | 'worse' } {
  const rel = t.op === '>=' ? chardev / other : other / chardev;
  return { rel, word: rel > 1 + LEVEL_WITHIN ? 'better' : rel >= 1 - LEVEL_WITHIN ? 'level' : 'worse' };
}

function standingText(s: { rel: number; word: 'better' | 'level' | 'worse' }, name = 'it'): string {
  if (s.word === 'better') return `chardev does better than ${name}`;
  if (s.word === 'level') return `chardev is level with ${name} (within ${(LEVEL_WITHIN * 100).toFixed(0)} %)`;
  return `chardev is at ${(s.rel * 100).toFixed(0)} % of ${name}`;
}

export function gapVerdict(t: Target, floors: readonly FloorFigure[], chardevRatio: number | null = null, peer?: SameWorkPeer): GapVerdict {
  const measured = floors.filter((f): f is FloorFigure & { ratio: number } => f.ratio !== null && Number.isFinite(f.ratio) && f.ratio !== 0);
  if (t.on !== 'ratio' || measured.length === 0) return { whose: 'unknown', proven: false, text: 'no floor measured for this row' };
  const target = targetText(t);
  const chardev = chardevRatio !== null && Number.isFinite(chardevRatio) && chardevRatio !== 0 ? chardevRatio : undefined;
  const parts = measured.map((f) => {
    const where = meets(t, f.ratio) === true ? `meets ${target}` : `below ${target}`;
    const rules = f.otherRules !== undefined ? `; other rules: ${f.otherRules}` : '';
    return `${f.name} ${f.ratio.toFixed(2)}× (${where}${chardev !== undefined ? `; ${standingText(standing(t, chardev, f.ratio))}` : ''}${rules})`;
  });
  // Only floors doing the work under chardev's own rules decide whose the gap is.
  const deciding = measured.filter((f) => f.otherRules === undefined);
  // The peer sits at 1.0× of itself; when it does the same work and that meets the target, a relay here does.
  const peerMeets = peer !== undefined && meets(t, 1) === true;
  const peerText = peerMeets ? `; the peer, ${peer.name}, is itself a relay doing the same work and meets ${target} by definition (1.00×)` : '';
  const list = `floors in the same run: ${parts.join('; ')}${peerText}`;
  const meeting = [...deciding.filter((f) => meets(t, f.ratio) === true).map((f) => f.name), ...(peerMeets ? [peer.name] : [])];
  if (meeting.length > 0) {
    return {
      whose: 'chardev',
      proven: false,
      text: `${list}; ${meeting.join(' and ')} ${meeting.length === 1 ? 'meets' : 'meet'} ${target} on this machine in the same run, so the remaining gap is chardev's`,
    };
  }
  if (deciding.length === 0) {
    return { whose: 'unexplained', proven: false, text: `${list}; no floor here works under chardev's rules, so this run does not say whose the gap is` };
  }
  // No floor meets the target: the best of them (highest ratio for ≥, lowest for ≤) decides.
  const best = deciding.reduce((a, b) => ((t.op === '>=' ? b.ratio > a.ratio : b.ratio < a.ratio) ? b : a));
  if (chardev === undefined) {
    return {
      whose: 'unexplained',
      proven: false,
      text: `${list}; none of them meets ${target}, and without chardev's figure this run does not say whose the gap is`,
    };
  }
  const s = standing(t, chardev, best.ratio);
  // The best compiled floor under chardev's rules: the machine's limit for the work, as measured.
  const compiled = deciding
    .filter((f) => f.compiled === true)
    .reduce<(typeof deciding)[number] | undefined>((a, b) => (a === undefined || (t.op === '>=' ? b.ratio > a.ratio : b.ratio < a.ratio) ? b : a), undefined);
  const shown =
    compiled !== undefined
      ? `a compiled relay doing the same work under chardev's rules (${compiled.name}, ${compiled.ratio.toFixed(2)}×) does not reach ${target} either`
      : undefined;
  if (s.word !== 'worse') {
    return {
      whose: 'machine',
      proven: shown !== undefined,
      text:
        shown !== undefined
          ? `${list}; none of them meets ${target}, and ${standingText(s, `the best of them (${best.name})`)}, so the remaining gap is the machine's for this work: ${shown}`
          : `${list}; none of them meets ${target}, and ${standingText(s, `the best of them (${best.name})`)}, so the remaining gap is the machine's for this work, as far as these floors show (none of them compiled: each pays an interpreter's or a runtime's cost per call, so a relay in C might do better)`,
    };
  }
  // How much of the gap (chardev's figure to the target, in ratio units) lies between chardev and the best floor.
  const share = Math.abs(best.ratio - chardev) / Math.abs(t.bound - chardev);
  const ours = `so the gap from chardev's ${chardev.toFixed(2)}× up to ${best.name}'s ${best.ratio.toFixed(2)}× is chardev's (${(share * 100).toFixed(0)} % of the way from chardev to ${target})`;
  return {
    whose: 'chardev',
    proven: false,
    text:
      shown !== undefined
        ? `${list}; none of them meets ${target}, but ${best.name} does better than chardev (${standingText(s, 'it')}), ${ours}; the rest, from there to ${target}, is the machine's for this work: ${shown}`
        : `${list}; none of them meets ${target}, but ${best.name} does better than chardev (${standingText(s, 'it')}), ${ours}; the rest, from there to ${target}, no floor here closes either, and none of them is compiled, so this run does not show whose it is`,
  };
}
