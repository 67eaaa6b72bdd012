#!/usr/bin/env node
// Launcher: runs the TypeScript sources through tsx's loader, so `npx chardev`
// works straight after `npm ci` with no build step and no global install.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
