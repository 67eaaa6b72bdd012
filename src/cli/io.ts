/** Shared CLI plumbing: reading documents and turning errors into one line. */
import { readFileSync } from 'node:fs';
import { ChardevError } from '../errors.ts';
import { loadDomain, type LoadedDomain, type LoadOptions } from '../config/domain.ts';
import { decodeDocument } from '../config/xml.ts';

/** An error the CLI reports as one line on stderr, with an exit status. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** Read and load a domain document; FILE '-' is standard input. */
export function readDomain(file: string, options: Omit<LoadOptions, 'file'> = {}): LoadedDomain {
  let bytes: Buffer;
  try {
    bytes = file === '-' ? readFileSync(0) : readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const reason = err.code === 'ENOENT' ? 'No such file or directory' : err.code === 'EISDIR' ? 'Is a directory' : err.code === 'EACCES' ? 'Permission denied' : err.message;
    throw new CliError(`${file}: cannot read: ${reason}`);
  }
  const name = file === '-' ? '<stdin>' : file;
  return loadDomain(decodeDocument(bytes, name), { ...options, file: name });
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
  return e instanceof CliError ? e.exitCode : 1;
}
