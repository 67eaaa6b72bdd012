/**
 * One run of the bench as data: what `--json` prints, what `--write-docs` renders, and what
 * `--docs-from FILE` reads back. Everything a reader needs to judge the figures travels with
 * them: the machine, its load before and after, and the versions compared.
 */
import type { OtherCpu } from './load.ts';
import type { Row } from './measurements.ts';

export interface Versions {
  readonly chardev: string;
  /** `git describe`-like: the commit measured, `+dirty` when the work tree had changes. */
  readonly commit: string;
  readonly socat: string;
  readonly node: string;
  readonly python: string;
  /** The C compiler that built the C floors (compiled.ts); absent when none did, and in reports from before them. */
  readonly cc?: string;
  /** Why this run has no C floors (no compiler, a failed build). */
  readonly cFloorsSkipped?: string;
}

export interface Machine {
  readonly cores: number;
  readonly cpu: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  /** 1, 5 and 15 minute load averages when the run started and when it ended. */
  readonly loadBefore: readonly number[];
  readonly loadAfter: readonly number[];
  readonly openFilesLimit: { readonly soft: number | null; readonly hard: number | null };
  /** CPU that processes other than the bench's used during the run (load.ts); absent in reports from before it was measured. */
  readonly otherCpu?: OtherCpu;
}

export interface RunError {
  readonly id: string;
  readonly error: string;
  readonly lostBytes: boolean;
}

export interface BenchReport {
  readonly mode: 'quick' | 'full';
  readonly reps: number;
  /** ISO 8601, UTC, when the run started. */
  readonly date: string;
  /** How to run it again. */
  readonly command: string;
  readonly seconds: number;
  readonly versions: Versions;
  readonly machine: Machine;
  readonly rows: readonly Row[];
  readonly errors: readonly RunError[];
}
