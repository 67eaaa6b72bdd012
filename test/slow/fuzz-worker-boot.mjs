// Worker threads do not get tsx's loader from the test's `--import tsx`:
// register it here, then run the TypeScript worker (as bin/chardev.js does).
import { register } from 'tsx/esm/api';

register();
await import('./fuzz-worker.ts');
