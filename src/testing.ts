/**
 * `chardev/testing`: what a program built on chardev needs to test itself without a real
 * terminal or serial port. `FakePlatform` stands in for the operating system under a domain
 * (`open(xml, { platform: new FakePlatform() })`): ptys, serial lines and devices in memory,
 * with the same contract the real platform keeps. Not loaded by the library or the command.
 */
export { FakePlatform, type FakeDevice, type FakeDeviceOptions, type FakePty, type FakeReaderState, type FakeSerialSettings } from './platform/fake.ts';
export { PlatformError, type Platform } from './platform/platform.ts';
