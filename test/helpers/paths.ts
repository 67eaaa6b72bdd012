import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** shared/ sits beside the checkout, in CI too. */
export const SHARED = join(ROOT, '..', 'shared');
export const LIBVIRT_DATA = join(SHARED, 'conformance', 'libvirt-9.0.0');
