/** Reading a domain document for a command: FILE or '-' (standard input), loaded as libvirt would. */
import { readFileSync } from 'node:fs';
import { loadDomain, type LoadedDomain, type LoadOptions } from '../config/domain.ts';
import { decodeDocument } from '../config/xml.ts';
import { CliError } from './io.ts';

/** Read and load a domain document; FILE '-' is standard input. */
export function readDomain(file: string, options: Omit<LoadOptions, 'file'> = {}): LoadedDomain {
  let bytes: Buffer;
  try {
    bytes = file === '-' ? readFileSync(0) : readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const reason =
      err.code === 'ENOENT'
        ? 'No such file or directory'
        : err.code === 'EISDIR'
          ? 'Is a directory'
          : err.code === 'EACCES'
            ? 'Permission denied'
            : err.message;
    throw new CliError(`${file}: cannot read: ${reason}`);
  }
  const name = file === '-' ? '<stdin>' : file;
  return loadDomain(decodeDocument(bytes, name), { ...options, file: name });
}
