/**
 * A BREAK for the program on a pty's slave. `tcsendbreak` on the master is no BREAK for the
 * slave (a pty has no line to hold in spacing state), so chardev does what the slave's line
 * discipline does when a serial port's driver reports one (n_tty, termios(3)), by the
 * slave's own settings:
 *
 * - IGNBRK: nothing;
 * - BRKINT: both queues are flushed (unless NOFLSH) and the foreground process group gets
 *   SIGINT — a shell drops the line being typed, a running command is interrupted;
 * - otherwise a NUL byte is read. With PARMRK a serial line reads `\377 \0 \0`; through a pty
 *   that mark cannot be made (the slave's line discipline escapes a `\377` written to the
 *   master as a data byte), so the NUL byte is what arrives there too.
 */
import type { Platform } from '../platform/index.ts';

export type PtyBreakResult = 'ignored' | 'interrupted' | 'nul';

export function deliverPtyBreak(platform: Platform, pty: { readonly masterFd: number }, input: (b: Buffer) => void): PtyBreakResult {
  const flags = platform.ptyBreakFlags(pty.masterFd);
  if (flags.ignbrk) return 'ignored';
  if (flags.brkint) {
    if (!flags.noflsh) platform.flushPty(pty.masterFd);
    platform.signalPtyForeground(pty.masterFd);
    return 'interrupted';
  }
  input(Buffer.from([0]));
  return 'nul';
}
