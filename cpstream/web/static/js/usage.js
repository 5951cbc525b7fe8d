// Resource usage: reading a sample, formatting it, saying why a process ended,
// and keeping a bounded, time-ordered series of samples. No DOM.

import { FAILED } from "./model.js";

export const USAGE_WINDOW_MS = 10 * 60 * 1000;
export const SAMPLE_INTERVAL_MS = 2000;
// Ten minutes of 2 s samples, plus slack for a tick that came early.
export const MAX_SAMPLES = USAGE_WINDOW_MS / SAMPLE_INTERVAL_MS + 20;

const DASH = "\u2014";

// Linux signal numbers, for "killed by SIGKILL (9)" whichever of the two the server sent.
const SIGNALS = Object.freeze({
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  10: "SIGUSR1",
  11: "SIGSEGV",
  12: "SIGUSR2",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
  24: "SIGXCPU",
  25: "SIGXFSZ",
});
const SIGNAL_NUMBERS = Object.freeze(
  Object.fromEntries(Object.entries(SIGNALS).map(([n, name]) => [name, Number(n)])),
);

/** "exited 3", "killed by SIGKILL (9)"; "" when there is no exit to tell. */
export function exitReason(exit) {
  if (!exit || typeof exit !== "object") return "";
  const { signal } = exit;
  if (signal !== undefined && signal !== null) {
    let number = null;
    let name = null;
    if (typeof signal === "number") number = signal;
    else if (/^\d+$/.test(String(signal))) number = Number(signal);
    else name = String(signal);
    if (number !== null) name = SIGNALS[number] ?? null;
    else number = SIGNAL_NUMBERS[name] ?? null;
    if (name && number !== null) return `killed by ${name} (${number})`;
    return name ? `killed by ${name}` : `killed by signal ${number}`;
  }
  return Number.isInteger(exit.code) ? `exited ${exit.code}` : "";
}

/**
 * Whether the last exit deserves attention: the instance crashed, or it ended
 * with a failure code or a signal other than the SIGTERM of a stop.
 */
export function exitIsBad(instance) {
  const exit = instance.last_exit;
  if (!exit) return false;
  if (FAILED.has(instance.status)) return true;
  if (exit.signal !== undefined && exit.signal !== null) {
    return exit.signal !== 15 && exit.signal !== "SIGTERM";
  }
  return Number.isInteger(exit.code) && exit.code !== 0;
}

/** "0.4%", "12%", "198%" (of one core); a dash without a figure. */
export function formatCpu(cpu) {
  if (typeof cpu !== "number" || !Number.isFinite(cpu)) return DASH;
  return cpu < 10 ? `${cpu.toFixed(1)}%` : `${Math.round(cpu)}%`;
}

/** "512 B", "3.4 KiB", "45.2 MiB", "123 MiB", "1.2 GiB"; a dash without a figure. */
export function formatBytes(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes < 0) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${bytes} B`;
  return `${value < 100 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** A usage sample (`{at, cpu, rss, ...}`) as a series point `{t, cpu, rss}`; null if unusable. */
export function pointOf(sample) {
  if (!sample || typeof sample !== "object") return null;
  const t = Date.parse(sample.at);
  if (Number.isNaN(t)) return null;
  const number = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  return { t, cpu: number(sample.cpu), rss: number(sample.rss) };
}

/**
 * `series` with the `incoming` points merged in: ordered by time, one point
 * per time (the later one wins), only the last `windowMs` before the newest
 * point, at most `max` points. A new array; neither input changes.
 */
export function mergePoints(series, incoming, windowMs = USAGE_WINDOW_MS, max = MAX_SAMPLES) {
  const byTime = new Map();
  for (const point of series) byTime.set(point.t, point);
  for (const point of incoming) if (point) byTime.set(point.t, point);
  const merged = [...byTime.values()].sort((a, b) => a.t - b.t);
  if (merged.length === 0) return merged;
  const since = merged[merged.length - 1].t - windowMs;
  let first = merged.findIndex((p) => p.t >= since);
  first = Math.max(first, merged.length - max);
  return first > 0 ? merged.slice(first) : merged;
}
