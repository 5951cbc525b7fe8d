// The message counts of the header and the messages view: fetched from
// /api/messages/stats when message events say they changed, at most once a second.

import { Listeners } from "./listeners.js";
import { Throttle } from "./throttle.js";

export const STATS_EVERY_MS = 1000;
const CHANGES = new Set(["message_event", "snapshot", "resumed"]);

export class MessageStats {
  /** `fetchStats()` resolves to `{by_status, in_flight, dead_letter}`. */
  constructor(fetchStats, env = globalThis) {
    this.fetchStats = fetchStats;
    this.value = null;
    this._round = 0; // the last request made
    this._applied = 0; // the request whose answer is shown
    this._listeners = new Listeners();
    this._throttle = new Throttle(() => this._fetch(), STATS_EVERY_MS, env);
  }

  subscribe(fn) {
    return this._listeners.add(fn);
  }

  /** A frame of the message stream: an event, a (re)connect or a poll tick means new counts. */
  onFrame(frame) {
    if (CHANGES.has(frame.type)) this.refresh();
  }

  refresh() {
    this._throttle.call();
  }

  async _fetch() {
    const round = ++this._round;
    let value;
    try {
      value = await this.fetchStats();
    } catch {
      return; // the header keeps the last counts; the indicator tells about the outage
    }
    if (round < this._applied) return; // a later request's answer is shown already
    this._applied = round;
    this.value = value;
    this._listeners.emit(value);
  }
}
