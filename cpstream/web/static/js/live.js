// The pure logic of a live connection: backoff with jitter, failure counting,
// and the live / reconnecting / polling state machine. No DOM, no sockets, no
// timers, so it runs (and is tested) the same in Node and in the browser.

export const BACKOFF_STEPS_MS = Object.freeze([1000, 2000, 4000, 8000, 16000, 30000]);
export const FALLBACK_AFTER = 3;
export const PING_EVERY_MS = 30_000;
export const SILENCE_LIMIT_MS = 90_000;
export const POLL_MS = Object.freeze({
  instances: 5000,
  logs: 3000,
  messages: 5000,
  health: 15000,
});

// Close codes after which reconnecting cannot help (the request itself is wrong).
export const TERMINAL_CLOSE_CODES = Object.freeze([1008, 4400, 4404]);

export const Mode = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  POLLING: "polling",
  CLOSED: "closed",
});

/** Milliseconds to wait after the `failures`-th consecutive failure (1-based), jittered. */
export function backoffDelay(failures, random = Math.random) {
  if (!Number.isInteger(failures) || failures < 1) {
    throw new RangeError(`failures must be a positive integer, got ${failures}`);
  }
  const base = BACKOFF_STEPS_MS[Math.min(failures, BACKOFF_STEPS_MS.length) - 1];
  return base * (0.5 + random() * 0.5);
}

/**
 * One stream's connection state. The driver reports what happened to its
 * socket (`connected`, `frame`, `failed`, `closed`) and does what the answers say.
 */
export class Link {
  constructor({ fallbackAfter = FALLBACK_AFTER, random = Math.random } = {}) {
    this.fallbackAfter = fallbackAfter;
    this.random = random;
    this.mode = Mode.CONNECTING;
    this.failures = 0;
  }

  /** A socket opened: live again; `stopPolling` when this ends a polling spell. */
  connected() {
    if (this.mode === Mode.CLOSED) return { stopPolling: false };
    const stopPolling = this.mode === Mode.POLLING;
    this.mode = Mode.LIVE;
    return { stopPolling };
  }

  /** A server frame arrived: the connection works, so the backoff starts over. */
  frame() {
    if (this.mode !== Mode.CLOSED) this.failures = 0;
  }

  /**
   * A socket closed or failed to open without being asked to. Returns the delay
   * before the next attempt and whether polling must start now.
   */
  failed() {
    if (this.mode === Mode.CLOSED) return { delay: null, startPolling: false };
    this.failures += 1;
    const wasPolling = this.mode === Mode.POLLING;
    this.mode = this.failures >= this.fallbackAfter ? Mode.POLLING : Mode.RECONNECTING;
    return {
      delay: backoffDelay(this.failures, this.random),
      startPolling: this.mode === Mode.POLLING && !wasPolling,
    };
  }

  /** The stream is over (closed by its owner or refused for good): no more attempts. */
  closed() {
    const stopPolling = this.mode === Mode.POLLING;
    this.mode = Mode.CLOSED;
    return { stopPolling };
  }
}

/** The one mode the header shows for several streams: the worst of theirs. */
export function overallMode(modes) {
  for (const mode of [Mode.POLLING, Mode.RECONNECTING, Mode.CONNECTING, Mode.LIVE]) {
    if (modes.includes(mode)) return mode;
  }
  return Mode.CLOSED;
}

/**
 * Where a stream can resume after a reconnect. `seq` streams (/ws/instances,
 * /ws/messages) remember the last seq and the epoch and reconnect with
 * `since`/`epoch`; `cursor` streams (logs) remember the last cursor and
 * reconnect with `cursor`. `reset()` forgets it (the next connect starts over
 * with a snapshot), as after the view's state came from REST polling.
 */
export class Resume {
  constructor(kind) {
    if (kind !== "seq" && kind !== "cursor") throw new RangeError(`unknown resume kind ${kind}`);
    this.kind = kind;
    this.reset();
  }

  reset() {
    this.seq = null;
    this.epoch = null;
    this.cursor = null;
  }

  /** Note what a server frame says about the position. */
  see(frame) {
    if (this.kind === "cursor") {
      if (typeof frame.cursor === "string") this.cursor = frame.cursor;
      return;
    }
    if (frame.type === "snapshot" || frame.type === "resumed") {
      this.epoch = frame.epoch ?? null;
      this.seq = Number.isInteger(frame.seq) ? frame.seq : null;
    } else if (Number.isInteger(frame.seq) && this.seq !== null) {
      this.seq = Math.max(this.seq, frame.seq);
    }
  }

  /** The URL to connect to: `base` with the resume parameters when there is a position. */
  url(base) {
    const params = [];
    if (this.kind === "cursor" && this.cursor !== null) {
      params.push(`cursor=${encodeURIComponent(this.cursor)}`);
    } else if (this.kind === "seq" && this.seq !== null && this.epoch !== null) {
      params.push(`since=${this.seq}`, `epoch=${encodeURIComponent(this.epoch)}`);
    }
    if (params.length === 0) return base;
    return `${base}${base.includes("?") ? "&" : "?"}${params.join("&")}`;
  }
}
