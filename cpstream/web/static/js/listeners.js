// A set of callbacks to tell about a change: `add` returns the function that removes it.

export class Listeners {
  constructor() {
    this._fns = new Set();
  }

  /** Call `fn` on every `emit` until the returned function is called. */
  add(fn) {
    this._fns.add(fn);
    return () => this._fns.delete(fn);
  }

  emit(...args) {
    for (const fn of [...this._fns]) fn(...args);
  }
}
