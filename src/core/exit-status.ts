import * as os from 'node:os';

/** A child's exit status the way a shell reports it: the code, or 128 + the signal number. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal === null ? undefined : os.constants.signals[signal];
  return 128 + (n ?? 1);
}
