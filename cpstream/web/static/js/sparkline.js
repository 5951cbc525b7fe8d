// Sparklines in SVG, drawn by our own code: the geometry is pure (tested in
// Node), `Sparkline` only puts it into an <svg> element.

import { SAMPLE_INTERVAL_MS, USAGE_WINDOW_MS } from "./usage.js";

const SVG = "http://www.w3.org/2000/svg";

export const SPARK = Object.freeze({
  width: 120,
  height: 32,
  pad: 2,
  // Samples further apart than this are not joined: the process was not running between them.
  gapMs: 3 * SAMPLE_INTERVAL_MS + 500,
});
export const MIN_SPAN_MS = 60_000;

const round = (n) => Math.round(n * 10) / 10;

/**
 * The time range drawn: it ends at the newest point and starts at the oldest
 * one, but spans at least `minMs` (a young series is not stretched thin) and
 * at most `windowMs`.
 */
export function sparkWindow(points, windowMs = USAGE_WINDOW_MS, minMs = MIN_SPAN_MS) {
  if (points.length === 0) return { start: -minMs, end: 0 };
  const end = points[points.length - 1].t;
  const start = Math.min(end - minMs, Math.max(end - windowMs, points[0].t));
  return { start, end };
}

/**
 * The value range drawn. From zero (`fromZero`, as for CPU %: the height
 * itself means something) up to the peak, never below `floor`; otherwise the
 * values' own range with a margin (as for memory: the trend shows, the
 * figures say how much), a flat series in the middle.
 */
export function sparkScale(values, { floor = 0, fromZero = true } = {}) {
  const numbers = values.filter((v) => typeof v === "number");
  if (fromZero) return { min: 0, max: Math.max(floor, ...numbers) || 1 };
  if (numbers.length === 0) return { min: 0, max: 1 };
  const lo = Math.min(...numbers);
  const hi = Math.max(...numbers);
  // A band at least 2 % of the value wide, so that noise does not fill the box.
  const half = Math.max(hi - lo, Math.abs(hi) * 0.02, 1) * 0.6;
  return { min: (hi + lo) / 2 - half, max: (hi + lo) / 2 + half };
}

/**
 * The SVG path of `points[i][key]` over time: x runs from `start` to `end`,
 * y from `max` (top) to `min` (bottom, 0 by default). A missing value or a gap
 * longer than `gapMs` starts a new segment; a lone point is drawn as a dot.
 */
export function sparkPath(points, key, { start, end, max, min = 0, ...options }) {
  const { width, height, pad, gapMs } = { ...SPARK, ...options };
  const span = height - 2 * pad;
  const parts = [];
  let previous = null;
  let segment = 0;
  const closeDot = () => {
    if (segment === 1) parts.push("h0");
  };
  for (const point of points) {
    const value = point[key];
    if (typeof value !== "number" || point.t < start || point.t > end) {
      closeDot();
      previous = null;
      segment = 0;
      continue;
    }
    const x = round(((point.t - start) / (end - start)) * width);
    const clipped = Math.min(Math.max(value, min), max);
    const y = round(height - pad - ((clipped - min) / (max - min)) * span);
    if (previous === null || point.t - previous > gapMs) {
      closeDot();
      parts.push(`M${x},${y}`);
      segment = 1;
    } else {
      parts.push(`L${x},${y}`);
      segment += 1;
    }
    previous = point.t;
  }
  closeDot();
  return parts.join("");
}

/** The points of a path from `sparkPath`, as `[x, y]` pairs (for tests and labels). */
export function pathPoints(d) {
  return [...d.matchAll(/[ML](-?[\d.]+),(-?[\d.]+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
}

/** "last 40 s", "last 3 min": how much time a sparkline spans. */
export function spanText(ms) {
  return ms < 60_000 ? `last ${Math.round(ms / 1000)} s` : `last ${Math.round(ms / 60_000)} min`;
}

/** One sparkline in a <figure>: a caption with its span, an <svg> with the line. */
export class Sparkline {
  /** `key`: the point field drawn; `scale`: `sparkScale`'s options; `format`: the label's. */
  constructor({ key, label, scale = {}, format }) {
    this.key = key;
    this.label = label;
    this.scale = scale;
    this.format = format;
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("class", `spark spark-${key}`);
    this.svg.setAttribute("viewBox", `0 0 ${SPARK.width} ${SPARK.height}`);
    this.svg.setAttribute("preserveAspectRatio", "none");
    this.svg.setAttribute("role", "img");
    this.line = document.createElementNS(SVG, "path");
    this.line.setAttribute("class", "spark-line");
    this.svg.append(this.line);
    this.span = document.createElement("span");
    this.span.className = "spark-span";
    const caption = document.createElement("figcaption");
    caption.append(label, this.span);
    this.el = document.createElement("figure");
    this.el.className = "spark-box";
    this.el.append(caption, this.svg);
    this.update([]);
  }

  update(points) {
    const values = points.map((p) => p[this.key]).filter((v) => typeof v === "number");
    const { min, max } = sparkScale(values, this.scale);
    const { start, end } = sparkWindow(points);
    this.line.setAttribute("d", sparkPath(points, this.key, { start, end, min, max }));
    this.span.textContent = points.length ? ` \u00b7 ${spanText(end - start)}` : "";
    this.svg.setAttribute(
      "aria-label",
      values.length
        ? `${this.label}, ${spanText(end - start)}: now ${this.format(values.at(-1))},` +
            ` peak ${this.format(Math.max(...values))}`
        : `${this.label}: no samples yet`,
    );
  }
}
