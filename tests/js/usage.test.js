// Usage figures, exit reasons and the bounded series behind the sparklines.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  MAX_SAMPLES,
  USAGE_WINDOW_MS,
  exitIsBad,
  exitReason,
  formatBytes,
  formatCpu,
  mergePoints,
  pointOf,
} from "../../cpstream/web/static/js/usage.js";

test("an exit reads as its code or its signal, by name and number", () => {
  assert.equal(exitReason({ code: 3, at: "T" }), "exited 3");
  assert.equal(exitReason({ code: 0 }), "exited 0");
  assert.equal(exitReason({ signal: 9, at: "T" }), "killed by SIGKILL (9)");
  assert.equal(exitReason({ signal: "SIGKILL" }), "killed by SIGKILL (9)");
  assert.equal(exitReason({ signal: "15" }), "killed by SIGTERM (15)");
  assert.equal(exitReason({ signal: 64 }), "killed by signal 64");
  assert.equal(exitReason({ signal: "SIGRTMIN" }), "killed by SIGRTMIN");
  assert.equal(exitReason(null), "");
  assert.equal(exitReason({}), "");
});

test("CPU and memory read as short figures; nothing reads as a dash", () => {
  assert.equal(formatCpu(0), "0.0%");
  assert.equal(formatCpu(3.456), "3.5%");
  assert.equal(formatCpu(99.6), "100%");
  assert.equal(formatCpu(187.2), "187%");
  assert.equal(formatCpu(null), "\u2014");
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(3.4 * 1024), "3.4 KiB");
  assert.equal(formatBytes(45.25 * 1024 * 1024), "45.3 MiB");
  assert.equal(formatBytes(123.4 * 1024 * 1024), "123 MiB");
  assert.equal(formatBytes(1.5 * 1024 ** 3), "1.5 GiB");
  assert.equal(formatBytes(undefined), "\u2014");
  assert.equal(formatBytes(-1), "\u2014");
});

test("a sample becomes a point; one without a time is dropped", () => {
  const at = "2026-01-01T00:00:02.000000Z";
  assert.deepEqual(pointOf({ at, cpu: 12.5, rss: 1024, fds: 4 }), {
    t: Date.parse(at),
    cpu: 12.5,
    rss: 1024,
  });
  assert.deepEqual(pointOf({ at, cpu: "x" }), { t: Date.parse(at), cpu: null, rss: null });
  assert.equal(pointOf({ cpu: 1 }), null);
  assert.equal(pointOf(null), null);
});

/** A deterministic pseudo-random generator, so a failure can be replayed. */
function lcg(seed) {
  let x = seed;
  return () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

test("merged series are ordered, one point per time, within the window and the cap", () => {
  const random = lcg(7);
  for (let round = 0; round < 200; round += 1) {
    let series = [];
    const seen = new Map();
    for (let batch = 0; batch < 5; batch += 1) {
      const incoming = Array.from({ length: Math.floor(random() * 400) }, () => {
        const t = Math.floor(random() * 2 * USAGE_WINDOW_MS);
        return { t: t - (t % 500), cpu: random() * 100, rss: 1 };
      });
      for (const p of incoming) seen.set(p.t, p);
      series = mergePoints(series, incoming);
      for (let i = 1; i < series.length; i += 1) assert.ok(series[i - 1].t < series[i].t);
      assert.ok(series.length <= MAX_SAMPLES);
      if (series.length) {
        const newest = Math.max(...seen.keys());
        assert.equal(series.at(-1).t, newest);
        assert.ok(series[0].t >= newest - USAGE_WINDOW_MS);
        for (const p of series) assert.equal(p, seen.get(p.t), "the later point wins");
      }
    }
  }
});

test("merging keeps both inputs as they were and fills a hole", () => {
  const a = [{ t: 0, cpu: 1, rss: 1 }, { t: 6000, cpu: 3, rss: 1 }];
  const b = [{ t: 2000, cpu: 2, rss: 1 }];
  const merged = mergePoints(a, b);
  assert.deepEqual(merged.map((p) => p.t), [0, 2000, 6000]);
  assert.equal(a.length, 2);
  assert.equal(b.length, 1);
  assert.deepEqual(mergePoints([], []), []);
  assert.deepEqual(mergePoints([{ t: 0 }], [null]), [{ t: 0 }]);
});

test("a last exit is flagged after a crash or a failure, not after a stop", () => {
  const at = "T";
  const flagged = (status, last_exit) => exitIsBad({ status, last_exit });
  assert.equal(flagged("stopped", { signal: 15, at }), false, "a stop's SIGTERM");
  assert.equal(flagged("stopped", { signal: "SIGTERM", at }), false);
  assert.equal(flagged("stopped", { code: 0, at }), false);
  assert.equal(flagged("running", null), false);
  assert.equal(flagged("crashed", { signal: 15, at }), true, "a SIGTERM nobody asked for");
  assert.equal(flagged("crash_loop", { code: 0, at }), true);
  assert.equal(flagged("running", { code: 3, at }), true, "restarted after exiting 3");
  assert.equal(flagged("stopped", { signal: 9, at }), true, "killed after the stop timeout");
});
