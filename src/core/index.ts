/** The runtime core: start a domain's host interfaces and talk to them from the guest side. */
export { Chardev, type ChardevCounters, type ChardevEvent, type ChardevEvents } from './chardev.ts';
export { Domain, startDomain, DEFAULT_PTY_POLL_MS, type DomainOptions } from './domain.ts';
export { RotatingLog, DEFAULT_ROTATION } from './rotating-log.ts';
export { OUTPUT_FILE_MODE } from './files.ts';
export type { Backend, BackendContext, BackendEvents, BackendFactory, RotationOptions } from './backend.ts';
