// The stream client driven with a fake socket and a manual clock: pings,
// silence, reconnects, the polling fallback and recovery.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { Mode } from "../../cpstream/web/static/js/live.js";
import { LiveStream, Poller } from "../../cpstream/web/static/js/stream.js";
import { fakeEnv, flush } from "./fakes.js";

let clock;
let Socket;
let env;

beforeEach(() => {
  ({ clock, Socket, env } = fakeEnv());
});

function recorder() {
  const seen = { frames: [], modes: [], errors: [], opens: 0, polls: 0, applied: [] };
  const handlers = {
    onFrame: (f) => seen.frames.push(f),
    onMode: (m) => seen.modes.push(m),
    onError: (e) => seen.errors.push(e),
    onOpen: () => (seen.opens += 1),
    poll: {
      fetch: async () => ++seen.polls,
      apply: (n) => seen.applied.push(n),
      everyMs: 5000,
    },
  };
  return { seen, handlers };
}

/** Fail the current attempt and advance to the next one; returns the delay it waited. */
function failAttempt(code = 1006) {
  Socket.last.drop(code);
  const delay = clock.nextDelay();
  clock.advance(delay);
  return delay;
}

test("a connected stream is live and forwards every frame but pong", () => {
  const { seen, handlers } = recorder();
  new LiveStream("ws://x/ws/instances", handlers, env).start();
  assert.equal(Socket.made.length, 1);
  assert.equal(seen.modes.at(-1), Mode.CONNECTING);
  Socket.last.open();
  assert.equal(seen.modes.at(-1), Mode.LIVE);
  Socket.last.receive({ type: "snapshot", instances: [] });
  Socket.last.receive({ type: "pong" });
  Socket.last.receive("not json");
  assert.deepEqual(seen.frames, [{ type: "snapshot", instances: [] }]);
});

test("the client pings every 30 s while connected", () => {
  const stream = new LiveStream("ws://x", {}, env).start();
  Socket.last.open();
  clock.advance(29_999);
  assert.deepEqual(Socket.last.sent, []);
  clock.advance(1);
  assert.deepEqual(Socket.last.sent, [{ type: "ping" }]);
  Socket.last.receive({ type: "pong" });
  clock.advance(30_000);
  assert.deepEqual(Socket.last.sent, [{ type: "ping" }, { type: "ping" }]);
  assert.equal(stream.mode, Mode.LIVE);
});

test("90 s without a server frame closes the socket and reconnects", () => {
  new LiveStream("ws://x", {}, env).start();
  Socket.last.open();
  Socket.last.receive({ type: "snapshot" });
  clock.advance(89_999);
  assert.equal(Socket.made.length, 1);
  assert.equal(Socket.last.closedWith, null);
  clock.advance(1);
  assert.deepEqual(Socket.made[0].closedWith, { code: 4000, reason: "no frame for 90 s" });
  clock.advance(clock.nextDelay());
  assert.equal(Socket.made.length, 2);
});

test("every frame restarts the silence timer", () => {
  new LiveStream("ws://x", {}, env).start();
  Socket.last.open();
  for (let i = 0; i < 5; i += 1) {
    clock.advance(80_000);
    Socket.last.receive({ type: "pong" });
  }
  assert.equal(Socket.made.length, 1);
});

test("reconnect delays follow the backoff schedule (jitter factor 0.5 here)", () => {
  new LiveStream("ws://x", {}, env).start();
  const delays = [];
  for (let i = 0; i < 8; i += 1) delays.push(failAttempt());
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  assert.equal(Socket.made.length, 9);
});

test("the first server frame resets the backoff", () => {
  new LiveStream("ws://x", {}, env).start();
  failAttempt();
  failAttempt();
  Socket.last.open();
  Socket.last.receive({ type: "snapshot" });
  assert.equal(failAttempt(), 500);
});

test("three consecutive failures fall back to polling; a connect stops it", async () => {
  const { seen, handlers } = recorder();
  new LiveStream("ws://x", handlers, env).start();
  Socket.last.open();
  Socket.last.receive({ type: "snapshot" });
  failAttempt(1001);
  failAttempt();
  assert.equal(seen.polls, 0);
  assert.equal(seen.modes.at(-1), Mode.RECONNECTING);
  Socket.last.drop();
  assert.equal(seen.modes.at(-1), Mode.POLLING);
  await flush();
  assert.deepEqual(seen.applied, [1]);
  clock.advance(5000);
  await flush();
  assert.deepEqual(seen.applied, [1, 2]);
  clock.advance(clock.nextDelay());
  assert.equal(Socket.made.length, 4);
  Socket.last.open();
  assert.equal(seen.modes.at(-1), Mode.LIVE);
  const polls = seen.polls;
  clock.advance(60_000);
  await flush();
  assert.equal(seen.polls, polls, "polling stopped once a socket connected");
});

test("a poll answer that arrives after recovery is dropped", async () => {
  let release;
  const handlers = {
    poll: {
      fetch: () => new Promise((resolve) => (release = resolve)),
      apply: () => assert.fail("a stale poll answer was applied"),
      everyMs: 3000,
    },
  };
  new LiveStream("ws://x", handlers, env).start();
  for (let i = 0; i < 3; i += 1) failAttempt();
  Socket.last.open();
  release(["stale"]);
  await flush();
});

test("onOpen runs on every connect, so commands are re-sent after a reconnect", () => {
  const { seen, handlers } = recorder();
  new LiveStream("ws://x", handlers, env).start();
  Socket.last.open();
  failAttempt();
  Socket.last.open();
  assert.equal(seen.opens, 2);
});

test("a terminal close (4404) reports the error once and stops for good", async () => {
  const { seen, handlers } = recorder();
  const stream = new LiveStream("ws://x/ws/instances/nope/logs", handlers, env).start();
  Socket.last.open();
  const message = "No instance named 'nope'";
  Socket.last.receive({ type: "error", code: "instance_not_found", message });
  Socket.last.drop(4404, "No instance named 'nope'");
  assert.equal(stream.mode, Mode.CLOSED);
  assert.deepEqual(
    seen.errors.map((e) => e.code),
    ["instance_not_found"],
  );
  assert.equal(seen.frames.length, 0);
  assert.equal(clock.timers.size, 0);
  await flush();
  assert.equal(seen.polls, 0);
});

test("a terminal close without an error frame reports its code", () => {
  const { seen, handlers } = recorder();
  new LiveStream("ws://x/ws/messages?instance=x", handlers, env).start();
  Socket.last.open();
  Socket.last.drop(1008, "unknown frame type");
  assert.deepEqual(seen.errors, [{ code: 1008, message: "unknown frame type" }]);
  assert.equal(seen.modes.at(-1), Mode.CLOSED);
  assert.equal(Socket.made.length, 1);
});

test("close() cancels every timer and closes the socket", () => {
  const { handlers } = recorder();
  const stream = new LiveStream("ws://x", handlers, env).start();
  Socket.last.open();
  stream.close();
  assert.deepEqual(Socket.last.closedWith, { code: 1000, reason: "closed by the page" });
  assert.equal(clock.timers.size, 0);
  assert.equal(stream.mode, Mode.CLOSED);
  assert.equal(stream.send({ type: "ping" }), false);
});

test("close() while connecting waits for the open before closing", () => {
  const stream = new LiveStream("ws://x", {}, env).start();
  stream.close();
  assert.equal(Socket.last.closedWith, null);
  Socket.last.open();
  assert.equal(Socket.last.closedWith.code, 1000);
  assert.equal(stream.mode, Mode.CLOSED);
});

test("a poller polls at its interval, reports errors, and kick() polls at once", async () => {
  const results = [];
  let n = 0;
  const poller = new Poller(
    {
      fetch: async () => {
        n += 1;
        if (n === 2) throw new Error("down");
        return n;
      },
      apply: () => {},
      everyMs: 15000,
      onResult: (error) => results.push(error?.message ?? "ok"),
    },
    env,
  );
  poller.start();
  await flush();
  clock.advance(15000);
  await flush();
  poller.kick();
  await flush();
  assert.deepEqual(results, ["ok", "down", "ok"]);
  poller.stop();
  clock.advance(60_000);
  await flush();
  assert.equal(n, 3);
});

test("a seq stream reconnects with since and epoch, and resets after polling", async () => {
  const { seen, handlers } = recorder();
  new LiveStream("ws://x/ws/messages?instance=a", { ...handlers, resume: "seq" }, env).start();
  assert.equal(Socket.last.url, "ws://x/ws/messages?instance=a");
  Socket.last.open();
  Socket.last.receive({ type: "snapshot", recent_events: [], seq: 7, epoch: "e1" });
  Socket.last.receive({ type: "message_event", seq: 9 });
  failAttempt();
  assert.equal(Socket.last.url, "ws://x/ws/messages?instance=a&since=9&epoch=e1");
  failAttempt();
  failAttempt();
  await flush();
  assert.ok(seen.applied.length >= 1, "polling applied REST state");
  failAttempt();
  assert.equal(Socket.last.url, "ws://x/ws/messages?instance=a");
});

test("a cursor stream reconnects with the last cursor it was sent", () => {
  const { handlers } = recorder();
  new LiveStream("ws://x/ws/instances/a/logs?backlog=10", { ...handlers, resume: "cursor" }, env).start();
  Socket.last.open();
  Socket.last.receive({ type: "backlog", lines: [], count: 0, cursor: "c0" });
  Socket.last.receive({ type: "lines", lines: ["x"], count: 1, cursor: "c/1+" });
  Socket.last.receive({ type: "rotated" });
  failAttempt();
  assert.equal(Socket.last.url, "ws://x/ws/instances/a/logs?backlog=10&cursor=c%2F1%2B");
});

test("a seq-less usage_changed frame is delivered and moves no resume position", () => {
  const { seen, handlers } = recorder();
  new LiveStream("ws://x/ws/instances", { ...handlers, resume: "seq" }, env).start();
  Socket.last.open();
  Socket.last.receive({ type: "snapshot", instances: [], seq: 5, epoch: "e1" });
  const usage = { type: "usage_changed", timestamp: "T", instances: [{ id: "1", usage: {} }] };
  Socket.last.receive(usage);
  failAttempt();
  assert.equal(Socket.last.url, "ws://x/ws/instances?since=5&epoch=e1");
  Socket.last.open();
  Socket.last.receive({ type: "resumed", since: 5, seq: 8, epoch: "e1" });
  Socket.last.receive(usage);
  Socket.last.receive({ type: "status_changed", id: "1", seq: 9 });
  Socket.last.receive(usage);
  failAttempt();
  assert.equal(Socket.last.url, "ws://x/ws/instances?since=9&epoch=e1");
  assert.equal(seen.frames.filter((f) => f.type === "usage_changed").length, 3);
});
