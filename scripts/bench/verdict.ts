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
 * What the floors say about a target that was not met: a floor is the same work done by
 * something that is not chardev (bare Node, a kernel-only relay) in the same run. If none of
 * them meets the target either, the machine (or the runtime) is the limit and no relay of
 * that kind would meet it here; if one does, the gap is chardev's.
 */
export interface FloorFigure {
  readonly name: string;
  readonly ratio: number | null;
}

export interface GapVerdict {
  /** `machine`: no floor met the target; `chardev`: one did; `unknown`: no floor measured. */
  readonly whose: 'machine' | 'chardev' | 'unknown';
  readonly text: string;
}

export function gapVerdict(t: Target, floors: readonly FloorFigure[], chardevRatio: number | null = null): GapVerdict {
  const measured = floors.filter((f) => f.ratio !== null && Number.isFinite(f.ratio));
  if (t.on !== 'ratio' || measured.length === 0) return { whose: 'unknown', text: 'no floor measured for this row' };
  const list = measured.map((f) => `${f.name} ${(f.ratio as number).toFixed(2)}×`).join('; ');
  const meeting = measured.filter((f) => meets(t, f.ratio) === true);
  // The floor nearest the target: the highest ratio for a ≥ target, the lowest for a ≤ one.
  const best = measured.reduce((a, b) => ((t.op === '>=' ? (b.ratio as number) > (a.ratio as number) : (b.ratio as number) < (a.ratio as number)) ? b : a));
  // chardev's figure as a share of the best floor's, oriented so that 100 % means "as good".
  const fraction =
    chardevRatio !== null && Number.isFinite(chardevRatio) && best.ratio !== null && best.ratio !== 0 && chardevRatio !== 0
      ? t.op === '>='
        ? chardevRatio / best.ratio
        : best.ratio / chardevRatio
      : undefined;
  const share =
    fraction === undefined
      ? ''
      : fraction >= 1
        ? `; chardev does as well as the best floor (${best.name}) or better`
        : `; chardev is at ${(fraction * 100).toFixed(0)} % of the best floor (${best.name})`;
  if (meeting.length === 0) {
    return {
      whose: 'machine',
      text: `floors in the same run: ${list}; none of them meets ${targetText(t)} either, so the limit is shared by every relay of these kinds on this machine, not chardev's code alone${share}`,
    };
  }
  return {
    whose: 'chardev',
    text: `floors in the same run: ${list}; ${meeting.map((f) => f.name).join(' and ')} ${meeting.length === 1 ? 'meets' : 'meet'} ${targetText(t)}, so the remaining gap is chardev's${share}`,
  };
}
