// At most one call per interval: the first at once, the rest folded into one
// at the end of the interval. Timers come from `env`, so tests use a fake clock.

export class Throttle {
  constructor(fn, everyMs, env = globalThis) {
    this.fn = fn;
    this.everyMs = everyMs;
    this.setTimeout = env.setTimeout.bind(env);
    this.clearTimeout = env.clearTimeout.bind(env);
    this._timer = null;
    this._again = false;
  }

  /** Ask for a call: now if none ran within the interval, else once when it ends. */
  call() {
    if (this._timer !== null) {
      this._again = true;
      return;
    }
    this._run();
  }

  /** Forget a pending call and the interval. */
  cancel() {
    if (this._timer !== null) this.clearTimeout(this._timer);
    this._timer = null;
    this._again = false;
  }

  _run() {
    this._again = false;
    this._timer = this.setTimeout(() => {
      this._timer = null;
      if (this._again) this._run();
    }, this.everyMs);
    this.fn();
  }
}
