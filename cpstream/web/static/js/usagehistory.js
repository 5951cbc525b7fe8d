// The last ten minutes of usage per instance, for the sparklines: seeded from
// GET /api/instances/NAME/usage when a view first shows the instance, then
// extended by every sample the instances stream carries. Bounded per instance.

import { Listeners } from "./listeners.js";
import { SAMPLE_INTERVAL_MS, mergePoints, pointOf } from "./usage.js";

export const SEED_CONCURRENCY = 4;
// A (re)connect after this long without a sample missed some: fetch the series again.
const MISSED_AFTER_MS = 2.5 * SAMPLE_INTERVAL_MS;

export class UsageHistory {
  /** `fetchSeries(name)` resolves to the usage route's answer (`{samples: [...]}`). */
  constructor(fetchSeries, { now = () => Date.now(), concurrency = SEED_CONCURRENCY } = {}) {
    this.fetchSeries = fetchSeries;
    this.now = now;
    this.concurrency = concurrency;
    this._series = new Map(); // id -> points, oldest first
    this._names = new Map(); // id -> name, for every id a view asked for
    this._seeded = new Set(); // ids whose series came from the route (or is on its way)
    this._queue = [];
    this._running = 0;
    this._lastSample = null;
    this._listeners = new Listeners();
  }

  /** The points of instance `id`, oldest first (empty when there are none). */
  points(id) {
    return this._series.get(id) ?? [];
  }

  /** Hear `fn(id)` whenever the series of `id` changed. */
  subscribe(fn) {
    return this._listeners.add(fn);
  }

  /** A view shows instance `id`: fetch its series once (and again after missed samples). */
  ensure(id, name) {
    this._names.set(id, name);
    if (this._seeded.has(id)) return;
    this._seeded.add(id);
    this._queue.push(id);
    this._pump();
  }

  /** Apply what an instances-stream frame says about usage; `instances` is the feed's Map. */
  onInstanceFrame(frame, instances) {
    if (frame.type === "usage_changed") {
      for (const entry of frame.instances ?? []) this._add(entry.id, entry.usage);
      return;
    }
    if (frame.type === "snapshot" || frame.type === "resumed") {
      for (const id of [...this._series.keys()]) if (!instances.has(id)) this._forget(id);
      const missed = this._lastSample === null || this.now() - this._lastSample > MISSED_AFTER_MS;
      if (missed && !frame.polled) this._reseed();
      for (const instance of instances.values()) this._add(instance.id, instance.usage);
      return;
    }
    if (frame.type === "instance_deleted") this._forget(frame.id);
    else if (frame.usage) this._add(frame.id, frame.usage);
  }

  _add(id, usage) {
    const point = pointOf(usage);
    if (!point) return;
    this._lastSample = this.now();
    const before = this._series.get(id) ?? [];
    const last = before[before.length - 1];
    if (last && last.t === point.t && last.cpu === point.cpu && last.rss === point.rss) return;
    this._series.set(id, mergePoints(before, [point]));
    this._listeners.emit(id);
  }

  _forget(id) {
    this._series.delete(id);
    this._names.delete(id);
    this._seeded.delete(id);
  }

  _reseed() {
    for (const id of this._seeded) if (!this._queue.includes(id)) this._queue.push(id);
    this._pump();
  }

  _pump() {
    while (this._running < this.concurrency && this._queue.length > 0) {
      const id = this._queue.shift();
      const name = this._names.get(id);
      if (name === undefined) continue;
      this._running += 1;
      this._seed(id, name).finally(() => {
        this._running -= 1;
        this._pump();
      });
    }
  }

  async _seed(id, name) {
    let answer;
    try {
      answer = await this.fetchSeries(name);
    } catch {
      this._seeded.delete(id); // the next view that shows it tries again
      return;
    }
    if (!this._names.has(id) || !Array.isArray(answer?.samples)) return;
    const points = answer.samples.map(pointOf);
    this._series.set(id, mergePoints(this._series.get(id) ?? [], points));
    this._listeners.emit(id);
  }
}
