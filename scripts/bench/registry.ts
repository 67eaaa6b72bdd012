/**
 * The bench's measurements, in the order they run. A measurement is registered once with
 * an id (what `--only` takes) and a function returning its rows; scripts/bench.ts registers
 * the built-in ones, and a module of rows of its own (say scripts/bench/daemon.ts) calls
 * `register` at load and needs one import line in scripts/bench.ts:
 *
 *   import './bench/daemon.ts';
 *
 * Its rows then appear in the table, the JSON, `--only` and the generated docs like any other.
 * A row states its target as data (`judged` in measurements.ts, verdict.ts) so the bench
 * computes met / not met itself.
 */
import type { Ctx, Row } from './measurements.ts';

export interface Measurement {
  /** What `--only` takes; unique. */
  readonly id: string;
  /** One line for `--help`. */
  readonly about: string;
  readonly run: (ctx: Ctx) => Promise<Row[]>;
}

const measurements: Measurement[] = [];

export function register(m: Measurement): void {
  if (measurements.some((x) => x.id === m.id)) throw new Error(`bench: measurement '${m.id}' registered twice`);
  measurements.push(m);
}

export function registered(): readonly Measurement[] {
  return measurements;
}
