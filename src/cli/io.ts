/**
 * Shared CLI plumbing that every command needs at start: the error type, one line per
 * error, and the exit statuses. Kept free of the library's heavy modules, so `chardev
 * --help` and a command's argument errors load nothing else.
 *
 * Exit statuses (README "Exit status"):
 *   0    success
 *   1    the document was refused, or the operation failed (validate, dumpxml, console…)
 *   2    usage: a bad option, operand or combination
 *   125  run / qemu: chardev itself failed (the document, a device, the run directory…),
 *        so the guest's own statuses stay its own
 *   126  run: COMMAND was found but cannot be executed
 *   127  run: COMMAND (qemu: the QEMU binary) was not found
 *   any other: the guest's (COMMAND's, QEMU's) exit status; 128+N when it died of signal N
 */
import { ChardevError } from '../errors.ts';

export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_CHARDEV = 125;
export const EXIT_CANNOT_EXECUTE = 126;
export const EXIT_NOT_FOUND = 127;

/** An error the CLI reports as one line on stderr, with an exit status. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = EXIT_FAILED) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** The guest's own exit status, passed through; printed only if it has a message. */
export class GuestExit extends CliError {
  constructor(status: number, message = '') {
    super(message, status);
  }
}

/** One line for any error: our own messages as they are, anything else without a stack. */
export function errorLine(e: unknown): string {
  let line: string;
  if (e instanceof ChardevError || e instanceof CliError) line = e.message;
  else if (e instanceof Error) line = `internal error: ${e.message}`;
  else line = `internal error: ${String(e)}`;
  // One line whatever the message holds.
  return line.replace(/\r?\n/g, ' ');
}

export function exitCodeOf(e: unknown): number {
  return e instanceof CliError ? e.exitCode : EXIT_FAILED;
}

/**
 * For run and qemu: any failure that is not the guest's status nor a usage error becomes
 * chardev's own (125), so a guest that exits 1 and a document chardev refused differ.
 */
export function asChardevFailure(e: unknown): unknown {
  if (e instanceof GuestExit) return e;
  const code = exitCodeOf(e);
  if (code === EXIT_USAGE || code === EXIT_CANNOT_EXECUTE || code === EXIT_NOT_FOUND || code === EXIT_CHARDEV) return e;
  return new CliError(errorLine(e), EXIT_CHARDEV);
}

/** Where a command writes, and whether its stdout is a terminal (secrets are shown only there). */
export interface CliIo {
  readonly write: (s: string) => void;
  readonly writeErr: (s: string) => void;
  readonly terminal: boolean;
}
