/**
 * chardev's one version: package.json's. Read once, at first import, from the package root
 * (one level above src/ in a checkout, above dist/ when installed).
 */
import { readFileSync } from 'node:fs';

function readVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    // A copy of the modules without their package.json (a bundler): still a version string.
    return '0.0.0';
  }
}

export const VERSION: string = readVersion();
