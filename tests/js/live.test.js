// The pure connection logic: backoff with jitter, failure counting, fallback and recovery.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BACKOFF_STEPS_MS,
  Link,
  Mode,
  Resume,
  backoffDelay,
  overallMode,
} from "../../cpstream/web/static/js/live.js";

const fixed = (value) => () => value;

test("the base schedule is 1, 2, 4, 8, 16 s, then 30 s for ever", () => {
  const bases = [1, 2, 3, 4, 5, 6, 7, 50].map((n) => backoffDelay(n, fixed(0)) * 2);
  assert.deepEqual(bases, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.deepEqual(BACKOFF_STEPS_MS, [1000, 2000, 4000, 8000, 16000, 30000]);
});

test("jitter multiplies the base by a factor in [0.5, 1.0)", () => {
  for (let failures = 1; failures <= 8; failures += 1) {
    const base = BACKOFF_STEPS_MS[Math.min(failures, 6) - 1];
    assert.equal(backoffDelay(failures, fixed(0)), base * 0.5);
    assert.ok(backoffDelay(failures, fixed(0.999999)) < base);
    for (let i = 0; i < 200; i += 1) {
      const factor = backoffDelay(failures) / base;
      assert.ok(factor >= 0.5 && factor < 1.0, `factor ${factor}`);
    }
  }
});

test("a failure count below 1 is a programming error", () => {
  for (const bad of [0, -1, 1.5, NaN, "1"]) assert.throws(() => backoffDelay(bad), RangeError);
});

test("two failures reconnect; the third falls back to polling, once", () => {
  const link = new Link({ random: fixed(0) });
  assert.equal(link.mode, Mode.CONNECTING);
  assert.deepEqual(link.failed(), { delay: 500, startPolling: false });
  assert.equal(link.mode, Mode.RECONNECTING);
  assert.deepEqual(link.failed(), { delay: 1000, startPolling: false });
  assert.equal(link.mode, Mode.RECONNECTING);
  assert.deepEqual(link.failed(), { delay: 2000, startPolling: true });
  assert.equal(link.mode, Mode.POLLING);
  assert.deepEqual(link.failed(), { delay: 4000, startPolling: false });
  assert.equal(link.mode, Mode.POLLING);
  assert.equal(link.failures, 4);
});

test("a socket that connects ends polling at once", () => {
  const link = new Link({ random: fixed(0) });
  for (let i = 0; i < 3; i += 1) link.failed();
  assert.deepEqual(link.connected(), { stopPolling: true });
  assert.equal(link.mode, Mode.LIVE);
  assert.deepEqual(link.connected(), { stopPolling: false });
});

test("the first server frame resets the backoff; a connect alone does not", () => {
  const link = new Link({ random: fixed(0) });
  link.failed();
  link.failed();
  link.connected();
  assert.equal(link.failures, 2);
  assert.deepEqual(link.failed(), { delay: 2000, startPolling: true });
  link.connected();
  link.frame();
  assert.equal(link.failures, 0);
  assert.deepEqual(link.failed(), { delay: 500, startPolling: false });
  assert.equal(link.mode, Mode.RECONNECTING);
});

test("failures are counted consecutively: a working connection starts the count over", () => {
  const link = new Link({ random: fixed(0) });
  for (let round = 0; round < 5; round += 1) {
    link.failed();
    link.failed();
    link.connected();
    link.frame();
  }
  assert.equal(link.mode, Mode.LIVE);
  assert.equal(link.failures, 0);
});

test("a closed link makes no more attempts and ignores late events", () => {
  const link = new Link({ random: fixed(0) });
  for (let i = 0; i < 3; i += 1) link.failed();
  assert.deepEqual(link.closed(), { stopPolling: true });
  assert.deepEqual(link.failed(), { delay: null, startPolling: false });
  assert.deepEqual(link.connected(), { stopPolling: false });
  assert.equal(link.mode, Mode.CLOSED);
});

test("the header shows the worst mode of the open streams", () => {
  assert.equal(overallMode([Mode.LIVE, Mode.POLLING, Mode.RECONNECTING]), Mode.POLLING);
  assert.equal(overallMode([Mode.LIVE, Mode.RECONNECTING, Mode.CONNECTING]), Mode.RECONNECTING);
  assert.equal(overallMode([Mode.LIVE, Mode.CONNECTING]), Mode.CONNECTING);
  assert.equal(overallMode([Mode.LIVE, Mode.CLOSED]), Mode.LIVE);
  assert.equal(overallMode([]), Mode.CLOSED);
});

test("Resume follows seq and epoch from snapshots, resumes and deltas", () => {
  const resume = new Resume("seq");
  assert.equal(resume.url("ws://x/ws/instances"), "ws://x/ws/instances");
  resume.see({ type: "message_event", seq: 3 });
  assert.equal(resume.seq, null, "no position before a snapshot");
  resume.see({ type: "snapshot", seq: 10, epoch: "ab" });
  resume.see({ type: "status_changed", seq: 12 });
  resume.see({ type: "status_changed", seq: 11 });
  assert.equal(resume.url("ws://x/ws/instances"), "ws://x/ws/instances?since=12&epoch=ab");
  resume.see({ type: "resumed", since: 12, seq: 20, epoch: "cd" });
  assert.equal(resume.seq, 20);
  assert.equal(resume.epoch, "cd");
  resume.reset();
  assert.equal(resume.url("ws://x/ws/instances"), "ws://x/ws/instances");
  assert.throws(() => new Resume("nope"), RangeError);
});
