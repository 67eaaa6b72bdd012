/**
 * When the data-plane thread's runs report progress to the main thread, shared by the loop's
 * runs (data-plane-worker.ts) and the fan-out runs (data-plane-fanout.ts).
 */

/** Most time between two progress reports of a run that moves bytes. */
export const REPORT_MS = 20;
/**
 * A run whose source has been empty this long reports what it moved at once: the guest
 * paused or finished, and whoever waits for its last byte (`onMoved`) should not wait
 * REPORT_MS. A streaming guest refills the pipe within microseconds, so this costs no
 * message per chunk.
 */
export const QUIET_REPORT_MS = 1;

/** What `reportAt` reads of a run. */
export interface ReportClock {
  readonly reportedAt: number;
  /** While waiting for the source: when the grace runs out (performance.now()). */
  readonly idleAt: number | undefined;
  readonly graceMs: number;
}

/** When the run's unreported bytes are due to be reported. */
export function reportAt(run: ReportClock): number {
  const regular = run.reportedAt + REPORT_MS;
  return run.idleAt === undefined ? regular : Math.min(regular, run.idleAt - run.graceMs + QUIET_REPORT_MS);
}
