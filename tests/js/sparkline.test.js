// The sparkline geometry: the time range, where each sample lands, gaps, scales.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  MIN_SPAN_MS,
  SPARK,
  pathPoints,
  spanText,
  sparkPath,
  sparkScale,
  sparkWindow,
} from "../../cpstream/web/static/js/sparkline.js";
import { USAGE_WINDOW_MS } from "../../cpstream/web/static/js/usage.js";

const END = 1_000_000_000;
const series = (values, step = 2000) =>
  values.map((cpu, i) => ({ t: END - (values.length - 1 - i) * step, cpu }));
const range = (start) => ({ start, end: END, max: 100 });

test("a scale from zero tops at the peak, never below the floor, never at 0", () => {
  assert.deepEqual(sparkScale([3, 7, 5], { floor: 100 }), { min: 0, max: 100 });
  assert.deepEqual(sparkScale([30, 170, 5], { floor: 100 }), { min: 0, max: 170 });
  assert.deepEqual(sparkScale([0, 0]), { min: 0, max: 1 });
  assert.deepEqual(sparkScale([]), { min: 0, max: 1 });
  assert.deepEqual(sparkScale([null, 4]), { min: 0, max: 4 });
});

test("a scale of the values' own range holds them all, a flat series in the middle", () => {
  const mib = 1024 * 1024;
  for (const values of [[50 * mib, 50.5 * mib, 52 * mib], [10, 90], [7, 7, 7], [0], [-5, 5]]) {
    const { min, max } = sparkScale(values, { fromZero: false });
    for (const v of values) assert.ok(v > min && v < max, `${v} in (${min}, ${max})`);
  }
  const flat = sparkScale([50 * mib, 50 * mib], { fromZero: false });
  assert.equal((flat.min + flat.max) / 2, 50 * mib);
  assert.ok(flat.max - flat.min >= mib, "a flat series is not blown up to the box");
  const grows = [50 * mib, 51 * mib, 52 * mib].map((rss, i) => ({ t: END - (2 - i) * 2000, rss }));
  const d = sparkPath(grows, "rss", {
    start: END - 4000,
    end: END,
    ...sparkScale([50 * mib, 52 * mib], { fromZero: false }),
  });
  const ys = pathPoints(d).map(([, y]) => y);
  assert.ok(ys[0] - ys[2] > SPARK.height / 2, `a 4 % growth fills most of the box: ${ys}`);
});

test("the range ends at the newest point and spans 1 to 10 minutes", () => {
  assert.deepEqual(sparkWindow(series([1, 2, 3])), { start: END - MIN_SPAN_MS, end: END });
  const twoMinutes = series(Array(61).fill(1));
  assert.deepEqual(sparkWindow(twoMinutes), { start: END - 120_000, end: END });
  const long = series(Array(1000).fill(1));
  assert.deepEqual(sparkWindow(long), { start: END - USAGE_WINDOW_MS, end: END });
  assert.equal(spanText(40_000), "last 40 s");
  assert.equal(spanText(120_000), "last 2 min");
});

test("rising values draw a line that rises to the right, inside the box", () => {
  const values = [0, 5, 20, 40, 60, 80, 100];
  const d = sparkPath(series(values), "cpu", range(END - 12_000));
  const points = pathPoints(d);
  assert.equal(points.length, values.length);
  assert.match(d, /^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+){6}$/);
  for (let i = 1; i < points.length; i += 1) {
    assert.ok(points[i][0] > points[i - 1][0], "x grows with time");
    assert.ok(points[i][1] < points[i - 1][1], "y falls (the line rises) with the value");
  }
  assert.deepEqual(points[0], [0, SPARK.height - SPARK.pad], "0 at the bottom left");
  assert.deepEqual(points.at(-1), [SPARK.width, SPARK.pad], "the top at the top right");
});

test("samples before the range are left out; a value over the scale is clipped", () => {
  const old = { t: END - 60_001, cpu: 50 };
  const d = sparkPath([old, ...series([10, 250])], "cpu", range(END - 60_000));
  const points = pathPoints(d);
  assert.equal(points.length, 2);
  assert.equal(points[1][1], SPARK.pad);
  for (const [x] of points) assert.ok(x >= 0 && x <= SPARK.width);
});

test("a gap or a missing value starts a new segment; a lone point is a dot", () => {
  const before = series([10, 20], 2000).map((p) => ({ ...p, t: p.t - 30_000 }));
  const after = series([30, null, 40], 2000);
  const d = sparkPath([...before, ...after], "cpu", range(END - 60_000));
  assert.equal(d.match(/M/g).length, 3);
  assert.match(d, /^M[^M]*L[^M]*M[\d.]+,[\d.]+h0M[\d.]+,[\d.]+h0$/);
  assert.equal(sparkPath([], "cpu", range(END - 60_000)), "");
});
