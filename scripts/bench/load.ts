/**
 * How busy the machine was with other work while the bench ran. The load average cannot
 * say: the bench's own processes are most of it. So every few seconds the CPU time of every
 * process is read from /proc, and what processes outside the bench's own process groups
 * used is summed (the driver's group, and the group of every process it started: procs.ts
 * starts each in a group of its own, and what those start stays in it).
 */
import * as fs from 'node:fs';

/** USER_HZ: /proc/PID/stat counts CPU time in these ticks per second on Linux. */
const CLK_TCK = 100;

export interface ProcSample {
  readonly pid: number;
  readonly pgrp: number;
  /** utime + stime, in clock ticks. */
  readonly ticks: number;
}

/** One /proc/PID/stat line; undefined if it is not one. */
export function parseStat(text: string): ProcSample | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const pid = Number(text.slice(0, text.indexOf(' ')));
  // After the command (which may hold spaces and parentheses): state ppid pgrp … utime stime (fields 3, 4, 5, … 14, 15).
  const f = text.slice(close + 2).split(' ');
  const pgrp = Number(f[2]);
  const ticks = Number(f[11]) + Number(f[12]);
  return Number.isInteger(pid) && Number.isInteger(pgrp) && Number.isFinite(ticks) ? { pid, pgrp, ticks } : undefined;
}

export interface OtherCpu {
  /** Other processes' CPU over the whole run, in cores (1.0: one core busy all along). */
  readonly meanCores: number;
  /** The highest over any window of `windowSeconds`. */
  readonly maxCores: number;
  readonly windowSeconds: number;
}

/**
 * Accumulates other processes' CPU between samples. Pure: `sample` takes what /proc said
 * and when; a process seen for the first time after the first sample counts in full (it
 * started since), one that ended between samples loses its last interval.
 */
export class OtherCpuMeter {
  readonly #ours: (pgrp: number) => boolean;
  #prev: Map<number, number> | undefined;
  #lastSeconds = 0;
  #firstSeconds = 0;
  #totalTicks = 0;
  #intervals: Array<{ seconds: number; ticks: number }> = [];

  constructor(ours: (pgrp: number) => boolean) {
    this.#ours = ours;
  }

  sample(procs: readonly ProcSample[], atSeconds: number): void {
    const now = new Map<number, number>();
    let ticks = 0;
    for (const p of procs) {
      if (this.#ours(p.pgrp)) continue;
      now.set(p.pid, p.ticks);
      if (this.#prev !== undefined) ticks += Math.max(0, p.ticks - (this.#prev.get(p.pid) ?? 0));
    }
    if (this.#prev === undefined) this.#firstSeconds = atSeconds;
    else {
      this.#totalTicks += ticks;
      this.#intervals.push({ seconds: atSeconds - this.#lastSeconds, ticks });
    }
    this.#prev = now;
    this.#lastSeconds = atSeconds;
  }

  result(windowSeconds = 10): OtherCpu {
    const span = this.#lastSeconds - this.#firstSeconds;
    const mean = span > 0 ? this.#totalTicks / CLK_TCK / span : 0;
    const n = this.#intervals.length;
    // Windows of consecutive intervals at least `windowSeconds` long, starting at each
    // interval and ending at each (so the head and the tail are both covered).
    const window = (from: number, step: 1 | -1): number | undefined => {
      let s = 0;
      let t = 0;
      for (let j = from; j >= 0 && j < n && s < windowSeconds; j += step) {
        s += this.#intervals[j]?.seconds ?? 0;
        t += this.#intervals[j]?.ticks ?? 0;
      }
      return s >= windowSeconds ? t / CLK_TCK / s : undefined;
    };
    // The busiest window is at least the average (a run shorter than a window is one window).
    let max = mean;
    for (let i = 0; i < n; i++) max = Math.max(max, window(i, 1) ?? 0, window(i, -1) ?? 0);
    return { meanCores: mean, maxCores: max, windowSeconds };
  }
}

function readProcs(): ProcSample[] {
  const out: ProcSample[] = [];
  let names: string[];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return out;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = parseStat(fs.readFileSync(`/proc/${name}/stat`, 'utf8'));
      if (s !== undefined) out.push(s);
    } catch {
      // It ended between the listing and the read.
    }
  }
  return out;
}

/** This process's group (the driver's, shared by `npm run` and what it spawns without detaching). */
export function ownGroup(): number {
  try {
    return parseStat(fs.readFileSync('/proc/self/stat', 'utf8'))?.pgrp ?? -1;
  } catch {
    return -1;
  }
}

/** Samples every `intervalMs` until stopped; the timer does not keep the process alive. */
export function watchOtherCpu(ours: (pgrp: number) => boolean, intervalMs = 2000): { stop(): OtherCpu } {
  const meter = new OtherCpuMeter(ours);
  const t0 = performance.now();
  const tick = (): void => meter.sample(readProcs(), (performance.now() - t0) / 1000);
  tick();
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      tick();
      return meter.result();
    },
  };
}
