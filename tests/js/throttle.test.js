// At most one call per interval: the first at once, the rest folded into one.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Throttle } from "../../cpstream/web/static/js/throttle.js";
import { FakeClock } from "./fakes.js";

test("a burst makes one call at once and one at the end of the interval", () => {
  const clock = new FakeClock();
  const calls = [];
  const throttle = new Throttle(() => calls.push(clock.now), 1000, clock);
  for (let i = 0; i < 50; i += 1) {
    throttle.call();
    clock.advance(10);
  }
  clock.advance(5000);
  assert.deepEqual(calls, [0, 1000]);
});

test("calls never come closer than the interval, and the last request is always served", () => {
  const clock = new FakeClock();
  const calls = [];
  const throttle = new Throttle(() => calls.push(clock.now), 1000, clock);
  let last = 0;
  for (const gap of [0, 300, 300, 300, 1500, 10, 990, 5, 2500, 700]) {
    clock.advance(gap);
    throttle.call();
    last = clock.now;
  }
  clock.advance(5000);
  for (let i = 1; i < calls.length; i += 1) assert.ok(calls[i] - calls[i - 1] >= 1000);
  assert.ok(calls.at(-1) >= last, "a call after the last request");
});

test("cancel drops the pending call", () => {
  const clock = new FakeClock();
  let n = 0;
  const throttle = new Throttle(() => (n += 1), 1000, clock);
  throttle.call();
  throttle.call();
  throttle.cancel();
  clock.advance(5000);
  assert.equal(n, 1);
  throttle.call();
  assert.equal(n, 2);
});
