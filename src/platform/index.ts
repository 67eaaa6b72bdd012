/**
 * The platform seam. Runtime code takes a `Platform` (the real `linuxPlatform`, or a
 * `FakePlatform` of src/testing.ts in unit tests) and never imports koffi, fs ioctls or tty itself.
 */
export {
  PlatformError,
  errnoName,
  errnoNumber,
  type BreakFlags,
  type ByteReader,
  type ByteReaderHandlers,
  type ByteWriter,
  type ByteWriterOptions,
  type Parity,
  type Platform,
  type PlatformErrorInit,
  type PtyHandle,
  type SerialLine,
  type WindowSize,
} from './platform.ts';
export { LINUX_BAUD_CONSTANTS, isStandardBaud } from './baud.ts';
export { FdWriter } from './fd-writer.ts';
export { ByteQueue, DEFAULT_MAX_QUEUED_BYTES } from './byte-queue.ts';
export { PtyReader } from './fd-reader.ts';
export { LinuxPlatform } from './linux.ts';
export { tuneAllocatorForStreaming } from './tuning.ts';

import { LinuxPlatform } from './linux.ts';

/** The process-wide real platform. koffi loads on its first native call, not on import. */
export const linuxPlatform: LinuxPlatform = new LinuxPlatform();
export { releaseFreedHeap, tuneAllocator } from './tuning.ts';
export { sdNotify, notifyAddress, type NotifyResult } from './sd-notify.ts';
export { NativeUnavailableError, currentLibc, detectLibc, elfInterpreter, nativeProblem, platformName, type LibcFamily, type LibcInfo } from './native.ts';
