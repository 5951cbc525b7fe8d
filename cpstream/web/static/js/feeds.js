// The streams the whole page shares, opened once and kept across views: the
// instances (a Map every view and the header read) and the message events
// (which views and the header's counts follow). One socket of each kind.

import { Listeners } from "./listeners.js";
import { POLL_MS } from "./live.js";
import { applyInstanceFrame } from "./model.js";

/**
 * `/ws/instances` as a Map by id. `want(includeArchived)` asks for archived
 * ones too (the server answers with a fresh snapshot; frames before it are
 * ignored); `subscribe(fn)` hears every frame applied, after the Map changed.
 */
export class InstanceFeed {
  /** `open(path, handlers)` opens a LiveStream; `fetchList(includeArchived)` polls REST. */
  constructor(open, fetchList) {
    this.open = open;
    this.fetchList = fetchList;
    this.instances = new Map();
    this.includeArchived = false;
    this.ready = false;
    this.stream = null;
    this._awaiting = null; // the include_archived of the snapshot we wait for
    this._listeners = new Listeners();
  }

  start() {
    this.stream = this.open("/ws/instances", {
      resume: "seq",
      onOpen: (live) => {
        this._awaiting = null;
        if (this.includeArchived && live.send({ type: "set_include_archived", value: true })) {
          this._awaiting = true;
        }
      },
      onFrame: (frame) => this._apply(frame),
      poll: {
        fetch: () => this.fetchList(this.includeArchived),
        apply: (list) => {
          this._awaiting = null;
          this._apply({
            type: "snapshot",
            instances: list,
            include_archived: this.includeArchived,
            polled: true,
          });
        },
        everyMs: POLL_MS.instances,
      },
    });
    return this;
  }

  subscribe(fn) {
    return this._listeners.add(fn);
  }

  /** Whether the Map is the server's state for the current `includeArchived`. */
  get settled() {
    return this.ready && this._awaiting === null;
  }

  /** Show archived instances or not; a no-op when that is already so. */
  want(includeArchived) {
    if (includeArchived === this.includeArchived) return;
    this.includeArchived = includeArchived;
    if (this.stream.send({ type: "set_include_archived", value: includeArchived })) {
      this._awaiting = includeArchived;
    } else {
      this.stream.refresh();
    }
  }

  /** While polling, poll now (the operator just changed something). */
  refresh() {
    this.stream?.refresh();
  }

  _apply(frame) {
    if (this._awaiting !== null) {
      if (frame.type !== "snapshot" || frame.include_archived !== this._awaiting) return;
      this._awaiting = null;
    }
    applyInstanceFrame(this.instances, frame, this.includeArchived);
    if (frame.type === "snapshot") this.ready = true;
    this._listeners.emit(frame);
  }
}

/**
 * An unfiltered event stream (`/ws/messages`) whose frames go to every
 * subscriber. While it polls, each poll tick reaches them as a `snapshot`
 * with `polled: true`: their cue to fetch what they show again, as after a resync.
 */
export class EventFeed {
  constructor(open, path, everyMs = POLL_MS.messages) {
    this.open = open;
    this.path = path;
    this.everyMs = everyMs;
    this.stream = null;
    this._listeners = new Listeners();
  }

  start() {
    this.stream = this.open(this.path, {
      resume: "seq",
      onFrame: (frame) => this._listeners.emit(frame),
      poll: {
        fetch: async () => null,
        apply: () => this._listeners.emit({ type: "snapshot", polled: true, recent_events: [] }),
        everyMs: this.everyMs,
      },
    });
    return this;
  }

  subscribe(fn) {
    return this._listeners.add(fn);
  }
}
