/**
 * chardev as a library: load a domain's character devices from libvirt XML,
 * start their host interfaces, and drive each device from the guest side.
 *
 *   const domain = await open(xml, { logDir: '/var/log/chardev' });
 *   const serial = domain.device('serial0');
 *   serial.on('data', (bytes) => guest.receive(bytes));
 *   serial.write(Buffer.from('hello\n'));
 *   await domain.stop();
 */
import { loadDomain, type LoadedDomain, type LoadOptions } from './config/domain.ts';
import './backends/index.ts';
import { startDomain, type Domain, type DomainOptions } from './core/domain.ts';

export interface OpenOptions extends DomainOptions {
  /** How to load `xmlText` (file name for messages, driver options); ignored for a LoadedDomain. */
  readonly load?: LoadOptions;
}

/** Start every host device of a domain document (or an already loaded one); all-or-nothing. */
export async function open(domain: string | LoadedDomain, options: OpenOptions = {}): Promise<Domain> {
  const loaded = typeof domain === 'string' ? loadDomain(domain, options.load ?? {}) : domain;
  return startDomain(loaded, options);
}

export { loadDomain, type LoadedDomain, type LoadOptions } from './config/domain.ts';
export { formatDomain, type FormatOptions } from './config/format.ts';
export { hostDevices, namedDevices, chardevId, deviceAlias, type NamedDevice } from './config/names.ts';
export type { ChrDeviceDef, ChrSourceDef, ChrType, DomainChardevsDef, LiveState, LogDef } from './config/types.ts';
export { buildQemuArgs, formatQemuArgs } from './qemu/command.ts';
export { ChardevError, ConfigError, type ChardevErrorCode } from './errors.ts';
export { Chardev, WRITER_IN_FLIGHT_BYTES, type ChardevCounters, type ChardevEvent, type ChardevEvents } from './core/chardev.ts';
export type { TerminalSize } from './core/hub.ts';
export { OutputPump, type OutputSource } from './core/output-pump.ts';
export { GuestOutput, GUEST_PIPE_BYTES, guestPipe, startDataPlane, type GuestOutputOptions, type GuestOutputPath } from './core/guest-output.ts';
export { GuestInput, guestInputPipe, guestInputSocket, type GuestInputOptions } from './core/guest-input.ts';
export type { PipeEnds } from './platform/splice.ts';
export { Domain, startDomain, DEFAULT_PTY_POLL_MS, type DomainOptions } from './core/domain.ts';
export { DEFAULT_ROTATION } from './core/rotating-log.ts';
export type { RotationOptions } from './core/rotating-log.ts';
export { tuneAllocatorForStreaming } from './platform/tuning.ts';
export { startWebServer, type WebServer, type WebServerOptions } from './web/server.ts';
export { VERSION } from './version.ts';
