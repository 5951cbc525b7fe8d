// Fakes for driving the stream client in Node: a manual clock and a scripted socket.

export class FakeClock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.nextId = 1;
  }

  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + ms, fn });
    return id;
  };

  clearTimeout = (id) => {
    this.timers.delete(id);
  };

  /** Run every timer due within `ms`, in time order, then set the clock to now + ms. */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }

  /** Milliseconds until the earliest pending timer. */
  nextDelay() {
    const times = [...this.timers.values()].map((t) => t.at - this.now);
    return times.length ? Math.min(...times) : null;
  }
}

export function fakeSocketClass() {
  class FakeSocket {
    static made = [];

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      FakeSocket.made.push(this);
    }

    send(text) {
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }

    open() {
      this.readyState = 1;
      this.onopen?.();
    }

    receive(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }

    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }

    static get last() {
      return FakeSocket.made[FakeSocket.made.length - 1];
    }
  }
  return FakeSocket;
}

/** A fresh manual clock and socket class, and the `env` a LiveStream takes from them. */
export function fakeEnv() {
  const clock = new FakeClock();
  const Socket = fakeSocketClass();
  const env = {
    WebSocket: Socket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0,
  };
  return { clock, Socket, env };
}

/** Let pending promise callbacks run. */
export const flush = () => new Promise((resolve) => setImmediate(resolve));
