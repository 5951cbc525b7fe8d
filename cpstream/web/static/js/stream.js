// The one WebSocket client every view uses: connects, pings, watches for
// silence, reconnects with backoff and falls back to REST polling (see live.js
// for the decisions; this module only carries them out). Sockets and timers
// come from `env`, so tests drive it with fakes.

import {
  Link,
  Mode,
  PING_EVERY_MS,
  Resume,
  SILENCE_LIMIT_MS,
  TERMINAL_CLOSE_CODES,
} from "./live.js";

const CONNECTING = 0;

function defaultEnv() {
  return {
    WebSocket: globalThis.WebSocket,
    setTimeout: globalThis.setTimeout.bind(globalThis),
    clearTimeout: globalThis.clearTimeout.bind(globalThis),
    random: Math.random,
  };
}

/** Runs `fetch` then `apply` every `everyMs` while started; late answers are dropped. */
export class Poller {
  constructor({ fetch, apply, everyMs, onResult = () => {} }, env = defaultEnv()) {
    this.fetch = fetch;
    this.apply = apply;
    this.everyMs = everyMs;
    this.onResult = onResult;
    this.env = env;
    this.running = false;
    this._round = 0;
    this._timer = null;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this._tick(++this._round);
  }

  /** Poll now (after a change the operator made), then on the usual schedule. */
  kick() {
    if (!this.running) return;
    this.stop();
    this.start();
  }

  stop() {
    this.running = false;
    this._round += 1;
    if (this._timer !== null) this.env.clearTimeout(this._timer);
    this._timer = null;
  }

  async _tick(round) {
    this._timer = null;
    let error = null;
    try {
      const data = await this.fetch();
      if (round === this._round) this.apply(data);
    } catch (e) {
      error = e;
    }
    if (round !== this._round) return;
    this.onResult(error);
    this._timer = this.env.setTimeout(() => this._tick(round), this.everyMs);
  }
}

/**
 * A live stream: `onFrame` gets every server frame except `pong` and `error`,
 * `onOpen` runs on every (re)connect (send commands there), `onMode` hears the
 * mode changes, `onError` the server's error frames and terminal closes.
 * `poll` (`{fetch, apply, everyMs}`) is the REST fallback. `resume` ("seq" or
 * "cursor") makes a reconnect go on where the last connection left off: the
 * server replays what was missed, or answers with a fresh snapshot when told to.
 */
export class LiveStream {
  constructor(url, handlers = {}, env = defaultEnv()) {
    this.url = url;
    this.onFrame = handlers.onFrame ?? (() => {});
    this.onOpen = handlers.onOpen ?? (() => {});
    this.onMode = handlers.onMode ?? (() => {});
    this.onError = handlers.onError ?? (() => {});
    this.env = env;
    this.link = new Link({ random: env.random });
    this.resume = handlers.resume ? new Resume(handlers.resume) : null;
    this.poller = handlers.poll
      ? new Poller(
          {
            ...handlers.poll,
            apply: (data) => {
              this.resume?.reset(); // the view now holds REST state, not the stream's
              handlers.poll.apply(data);
            },
          },
          env,
        )
      : null;
    this.socket = null;
    this._errored = false;
    this._timers = { retry: null, ping: null, silence: null };
  }

  get mode() {
    return this.link.mode;
  }

  start() {
    this.onMode(this.link.mode);
    this._connect();
    return this;
  }

  /** Send one JSON frame if the socket is open; `false` otherwise. */
  send(frame) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** While polling, poll now: the operator just changed something. */
  refresh() {
    if (this.poller?.running) this.poller.kick();
  }

  /** Stop for good: close the socket, cancel every timer, stop polling. */
  close() {
    if (this.link.mode === Mode.CLOSED) return;
    this._finish();
    this._detach(1000, "closed by the page");
  }

  _connect() {
    this._clear("retry");
    let socket;
    try {
      socket = new this.env.WebSocket(this.resume ? this.resume.url(this.url) : this.url);
    } catch (e) {
      this.onError({ code: "connect_failed", message: String(e) });
      this._failed();
      return;
    }
    this.socket = socket;
    this._errored = false;
    socket.onopen = () => this._opened(socket);
    socket.onmessage = (event) => this._message(socket, event);
    socket.onclose = (event) => this._closedBy(socket, event);
    socket.onerror = () => {};
    this._watchSilence();
  }

  _opened(socket) {
    if (socket !== this.socket) return;
    const { stopPolling } = this.link.connected();
    if (stopPolling && this.poller) this.poller.stop();
    this.onMode(this.link.mode);
    this._schedulePing();
    this.onOpen(this);
  }

  _message(socket, event) {
    if (socket !== this.socket) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    this._watchSilence();
    if (frame.type === "error") {
      this._errored = true;
      this.onError(frame);
      return;
    }
    this.link.frame();
    if (frame.type === "pong") return;
    this.resume?.see(frame);
    this.onFrame(frame);
  }

  _closedBy(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    this._clear("ping");
    this._clear("silence");
    if (TERMINAL_CLOSE_CODES.includes(event.code)) {
      this._finish();
      if (!this._errored) {
        this.onError({ code: event.code, message: event.reason || `closed with ${event.code}` });
      }
      return;
    }
    this._failed();
  }

  _failed() {
    const { delay, startPolling } = this.link.failed();
    if (delay === null) return;
    if (startPolling && this.poller) this.poller.start();
    this.onMode(this.link.mode);
    this._timers.retry = this.env.setTimeout(() => this._connect(), delay);
  }

  _finish() {
    const { stopPolling } = this.link.closed();
    if (stopPolling && this.poller) this.poller.stop();
    for (const name of Object.keys(this._timers)) this._clear(name);
    this.onMode(this.link.mode);
  }

  /** Let go of the current socket without hearing from it again. */
  _detach(code, reason) {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onmessage = socket.onclose = socket.onerror = null;
    if (socket.readyState === CONNECTING) {
      // Closing a socket that is still connecting makes the browser log an error.
      socket.onopen = () => socket.close(code, reason);
    } else {
      socket.onopen = null;
      socket.close(code, reason);
    }
  }

  _schedulePing() {
    this._clear("ping");
    this._timers.ping = this.env.setTimeout(() => {
      this._timers.ping = null;
      if (this.send({ type: "ping" })) this._schedulePing();
    }, PING_EVERY_MS);
  }

  _watchSilence() {
    this._clear("silence");
    this._timers.silence = this.env.setTimeout(() => {
      this._timers.silence = null;
      this._clear("ping");
      this._detach(4000, "no frame for 90 s");
      this._failed();
    }, SILENCE_LIMIT_MS);
  }

  _clear(name) {
    if (this._timers[name] !== null) this.env.clearTimeout(this._timers[name]);
    this._timers[name] = null;
  }
}
