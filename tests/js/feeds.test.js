// The shared feeds over a fake socket and clock: the instances Map with its
// include_archived switch, usage samples, the message counts and their throttle.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { EventFeed, InstanceFeed } from "../../cpstream/web/static/js/feeds.js";
import { MessageStats } from "../../cpstream/web/static/js/stats.js";
import { LiveStream } from "../../cpstream/web/static/js/stream.js";
import { UsageHistory } from "../../cpstream/web/static/js/usagehistory.js";
import { fakeEnv, flush } from "./fakes.js";

let clock;
let Socket;
let env;
let open;

beforeEach(() => {
  ({ clock, Socket, env } = fakeEnv());
  open = (path, handlers) => new LiveStream(`ws://x${path}`, handlers, env).start();
});

const at = (seconds) => new Date(Date.UTC(2026, 0, 1, 0, 0, seconds)).toISOString();
const sample = (seconds, cpu) => ({ at: at(seconds), cpu, rss: 1000 + seconds, fds: 3 });
const instance = (id, extra = {}) => ({
  id,
  name: `agent-${id}`,
  status: "running",
  port: 1,
  pid: 2,
  ...extra,
});

/** A promise with its resolve and reject exposed. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((yes, no) => {
    resolve = yes;
    reject = no;
  });
  return { promise, resolve, reject };
}

test("the instance feed applies frames, usage_changed included, and tells subscribers", () => {
  const feed = new InstanceFeed(open, async () => []).start();
  const heard = [];
  feed.subscribe((frame) => heard.push(frame.type));
  Socket.last.open();
  assert.equal(feed.settled, false);
  Socket.last.receive({
    type: "snapshot",
    instances: [instance("1")],
    include_archived: false,
    seq: 3,
    epoch: "e",
  });
  assert.equal(feed.settled, true);
  Socket.last.receive({
    type: "usage_changed",
    timestamp: at(2),
    instances: [{ id: "1", name: "agent-1", usage: sample(2, 50) }],
  });
  assert.equal(feed.instances.get("1").usage.cpu, 50);
  assert.deepEqual(heard, ["snapshot", "usage_changed"]);
  Socket.last.drop();
  clock.advance(clock.nextDelay());
  assert.equal(Socket.last.url, "ws://x/ws/instances?since=3&epoch=e");
});

test("asking for archived ones ignores frames until the snapshot that has them", () => {
  const feed = new InstanceFeed(open, async () => []).start();
  Socket.last.open();
  Socket.last.receive({ type: "snapshot", instances: [instance("1")], include_archived: false });
  feed.want(true);
  assert.deepEqual(Socket.last.sent, [{ type: "set_include_archived", value: true }]);
  assert.equal(feed.settled, false);
  Socket.last.receive({ type: "instance_created", id: "2", name: "b", status: "stopped" });
  assert.equal(feed.instances.has("2"), false, "a frame of the old view is ignored");
  const old = instance("9", { status: "archived", archived_at: at(0) });
  Socket.last.receive({
    type: "snapshot",
    instances: [instance("1"), old],
    include_archived: true,
  });
  assert.equal(feed.settled, true);
  assert.equal(feed.instances.size, 2);
  feed.want(true);
  assert.equal(Socket.last.sent.length, 1, "no second request for what is already so");

  Socket.last.drop();
  clock.advance(clock.nextDelay());
  Socket.last.open();
  assert.deepEqual(Socket.last.sent, [{ type: "set_include_archived", value: true }]);
});

test("the event feed turns each poll tick into a polled snapshot for its subscribers", async () => {
  const feed = new EventFeed(open, "/ws/messages", 5000).start();
  const heard = [];
  feed.subscribe((frame) => heard.push(frame));
  Socket.last.open();
  Socket.last.receive({ type: "message_event", message_id: "m", event: "queued", seq: 1 });
  for (let i = 0; i < 3; i += 1) {
    Socket.last.drop();
    clock.advance(clock.nextDelay());
  }
  await flush();
  assert.equal(heard[0].type, "message_event");
  assert.deepEqual(heard[1], { type: "snapshot", polled: true, recent_events: [] });
});

test("usage series: seeded from the route, extended by frames, no duplicates", async () => {
  const asked = [];
  const answers = [];
  const history = new UsageHistory((name) => {
    asked.push(name);
    const d = deferred();
    answers.push(d);
    return d.promise;
  });
  const changed = [];
  history.subscribe((id) => changed.push(id));
  const instances = new Map([["1", instance("1", { usage: sample(10, 5) })]]);

  history.onInstanceFrame({ type: "snapshot" }, instances);
  assert.deepEqual(history.points("1").map((p) => p.cpu), [5]);
  history.ensure("1", "agent-1");
  history.ensure("1", "agent-1");
  assert.deepEqual(asked, ["agent-1"], "one fetch per instance");
  history.onInstanceFrame(
    { type: "usage_changed", instances: [{ id: "1", usage: sample(12, 7) }] },
    instances,
  );
  answers[0].resolve({ samples: [sample(6, 1), sample(8, 3), sample(10, 5)] });
  await flush();
  assert.deepEqual(history.points("1").map((p) => p.cpu), [1, 3, 5, 7]);
  assert.ok(changed.length >= 3);

  history.onInstanceFrame({ type: "instance_deleted", id: "1" }, instances);
  assert.deepEqual(history.points("1"), []);
});

test("usage seeding runs at most N requests at once and retries a failed one later", async () => {
  const pending = [];
  const history = new UsageHistory(
    () => {
      const d = deferred();
      pending.push(d);
      return d.promise;
    },
    { concurrency: 2 },
  );
  for (const id of ["1", "2", "3", "4", "5"]) history.ensure(id, `agent-${id}`);
  assert.equal(pending.length, 2);
  pending[0].reject(new Error("down"));
  pending[1].resolve({ samples: [] });
  await flush();
  assert.equal(pending.length, 4);
  history.ensure("1", "agent-1");
  for (const d of pending.slice(2)) d.resolve({ samples: [] });
  await flush();
  await flush();
  assert.equal(pending.length, 6, "5 first fetches and one retry of the failed one");
});

test("after samples were missed, a (re)connect snapshot fetches the series again", async () => {
  let now = 0;
  let fetches = 0;
  const history = new UsageHistory(
    async () => {
      fetches += 1;
      return { samples: [] };
    },
    { now: () => now },
  );
  const instances = new Map([["1", instance("1")]]);
  history.ensure("1", "agent-1");
  await flush();
  history.onInstanceFrame(
    { type: "usage_changed", instances: [{ id: "1", usage: sample(2, 1) }] },
    instances,
  );
  now = 2000;
  history.onInstanceFrame({ type: "snapshot" }, instances);
  await flush();
  assert.equal(fetches, 1, "a snapshot while samples flow (include_archived) fetches nothing");
  now = 60_000;
  history.onInstanceFrame({ type: "snapshot", polled: true }, instances);
  await flush();
  assert.equal(fetches, 1, "a polled snapshot carries the latest sample itself");
  history.onInstanceFrame({ type: "resumed" }, instances);
  await flush();
  assert.equal(fetches, 2);
});

/** Message counts whose every fetch waits for the test to answer it; what they showed. */
function pendingStats() {
  const answers = [];
  const stats = new MessageStats(() => {
    const d = deferred();
    answers.push(d);
    return d.promise;
  }, clock);
  const seen = [];
  stats.subscribe((value) => seen.push(value.in_flight));
  return { stats, answers, seen };
}

test("message counts: a burst fetches twice, and an older answer never wins", async () => {
  const { stats, answers, seen } = pendingStats();
  for (let i = 0; i < 100; i += 1) {
    stats.onFrame({ type: "message_event", seq: i });
    clock.advance(5);
  }
  stats.onFrame({ type: "usage_changed" });
  assert.equal(answers.length, 1);
  clock.advance(1000);
  assert.equal(answers.length, 2);
  answers[1].resolve({ in_flight: 2 });
  await flush();
  answers[0].resolve({ in_flight: 1 });
  await flush();
  assert.deepEqual(seen, [2]);
  assert.equal(stats.value.in_flight, 2);
  clock.advance(5000);
  stats.onFrame({ type: "resumed" });
  assert.equal(answers.length, 3, "a reconnect refreshes the counts");
});

test("message counts: answers slower than the events still show, in order", async () => {
  const { stats, answers, seen } = pendingStats();
  for (let i = 0; i < 5; i += 1) {
    stats.onFrame({ type: "message_event", seq: i });
    clock.advance(1000);
    if (i > 0) answers[i - 1].resolve({ in_flight: i }); // each answers after the next asked
    await flush();
  }
  assert.deepEqual(seen, [1, 2, 3, 4]);
});
