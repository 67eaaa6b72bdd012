/**
 * Standard serial speeds and their Linux `speed_t` (B*) values, from asm-generic/termbits.h
 * (the same values on x86, arm, arm64, riscv and loongarch; powerpc, mips, sparc and alpha
 * differ, and linux.ts refuses those rather than silently programming a wrong speed).
 */
export const LINUX_BAUD_CONSTANTS: ReadonlyMap<number, number> = new Map([
  [50, 0o1],
  [75, 0o2],
  [110, 0o3],
  [134, 0o4],
  [150, 0o5],
  [200, 0o6],
  [300, 0o7],
  [600, 0o10],
  [1200, 0o11],
  [1800, 0o12],
  [2400, 0o13],
  [4800, 0o14],
  [9600, 0o15],
  [19200, 0o16],
  [38400, 0o17],
  [57600, 0o10001],
  [115200, 0o10002],
  [230400, 0o10003],
  [460800, 0o10004],
  [500000, 0o10005],
  [576000, 0o10006],
  [921600, 0o10007],
  [1000000, 0o10010],
  [1152000, 0o10011],
  [1500000, 0o10012],
  [2000000, 0o10013],
  [2500000, 0o10014],
  [3000000, 0o10015],
  [3500000, 0o10016],
  [4000000, 0o10017],
]);

/** True when `baud` has a B-constant (no termios2 custom rates here). */
export function isStandardBaud(baud: number): boolean {
  return LINUX_BAUD_CONSTANTS.has(baud);
}
