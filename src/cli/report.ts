/**
 * What `chardev run` and `chardev qemu` say while they run, by level: `--quiet` keeps only
 * warnings and errors (stderr), the default adds where each host interface is (stdout),
 * `--verbose` adds what happens (clients coming and going, signals, the stop).
 */

export type Verbosity = 'quiet' | 'normal' | 'verbose';

export interface Reporter {
  /**
   * stdout is a terminal: only then is a secret (the web console's token) printed, so it
   * never lands in a log file or the journal.
   */
  readonly terminal: boolean;
  /** Where things are; not with --quiet. */
  info(line: string): void;
  /** What happens; only with --verbose. */
  detail(line: string): void;
  /** Always, on stderr. */
  warn(line: string): void;
}

export interface ReporterOptions {
  readonly write: (s: string) => void;
  readonly writeErr: (s: string) => void;
  readonly terminal: boolean;
  readonly verbosity: Verbosity;
}

export function makeReporter(o: ReporterOptions): Reporter {
  return {
    terminal: o.terminal,
    info: (line) => {
      if (o.verbosity !== 'quiet') o.write(`${line}\n`);
    },
    detail: (line) => {
      if (o.verbosity === 'verbose') o.write(`${line}\n`);
    },
    warn: (line) => o.writeErr(`${line}\n`),
  };
}

/** `--quiet` / `--verbose` to a level; both at once is a usage error (the caller says so). */
export function verbosityOf(flags: { quiet?: boolean; verbose?: boolean }): Verbosity | undefined {
  if (flags.quiet === true && flags.verbose === true) return undefined;
  return flags.quiet === true ? 'quiet' : flags.verbose === true ? 'verbose' : 'normal';
}
