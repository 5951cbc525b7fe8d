// The dashboard's pure helpers: applying instance frames, uptime, command
// parsing, merging a polled log tail, routes.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  DEAD_LETTERS_HASH,
  actionsFor,
  applyInstanceFrame,
  eventFromMessage,
  failureOf,
  mergeHistory,
  mergeTimeline,
  messageHash,
  messagesHash,
  newTailLines,
  parseRoute,
  sortedInstances,
  splitCommand,
  statusCounts,
  uptime,
} from "../../cpstream/web/static/js/model.js";

const T0 = "2026-01-01T00:00:00.000000Z";
const base = {
  id: "1",
  name: "a",
  status: "stopped",
  port: 18801,
  pid: null,
  started_at: null,
  archived_at: null,
  usage: null,
  restarts: 0,
  last_exit: null,
};

/** Apply frames in order to a Map of instances. */
function applied(state, includeArchived, ...frames) {
  for (const frame of frames) applyInstanceFrame(state, frame, includeArchived);
  return state;
}

test("a snapshot replaces local state; deltas update it by id", () => {
  const state = applied(
    new Map([["old", { ...base, id: "old" }]]),
    false,
    { type: "snapshot", instances: [base] },
    { type: "instance_created", id: "2", name: "b", port: 18802, status: "stopped" },
    { type: "status_changed", id: "1", name: "a", status: "running", pid: 42, started_at: T0 },
    { type: "status_changed", id: "zzz", status: "running", pid: 1 },
  );
  assert.deepEqual([...state.keys()], ["1", "2"]);
  assert.deepEqual(state.get("1"), { ...base, status: "running", pid: 42, started_at: T0 });
  assert.deepEqual(state.get("2"), { ...base, id: "2", name: "b", port: 18802 });
});

test("archiving hides the card unless archived ones are shown, then marks it", () => {
  const archived = { type: "instance_archived", id: "1", name: "a", timestamp: "T" };
  assert.equal(applied(new Map([["1", { ...base }]]), false, archived).size, 0);

  const shown = applied(new Map([["1", { ...base }]]), true, archived);
  assert.deepEqual(shown.get("1"), { ...base, status: "archived", archived_at: "T" });
  applied(shown, true, { type: "status_changed", id: "1", status: "stopped", pid: null });
  assert.equal(shown.get("1").status, "archived");
  applied(shown, true, {
    type: "instance_unarchived",
    id: "1",
    name: "a",
    port: 18801,
    status: "stopped",
  });
  assert.deepEqual(shown.get("1"), base);
  applied(shown, true, { type: "instance_deleted", id: "1", name: "a" });
  assert.equal(shown.size, 0);
});

test("cards sort by name with archived ones last", () => {
  const state = new Map(
    [
      { ...base, id: "1", name: "zed" },
      { ...base, id: "2", name: "alpha", archived_at: "T" },
      { ...base, id: "3", name: "beta" },
    ].map((i) => [i.id, i]),
  );
  assert.deepEqual(
    sortedInstances(state).map((i) => i.name),
    ["beta", "zed", "alpha"],
  );
});

test("actions follow the status", () => {
  const actions = (status, archived_at = null) => actionsFor({ status, archived_at });
  assert.deepEqual(actions("running"), ["stop", "restart", "archive", "clone"]);
  assert.deepEqual(actions("stopped"), ["start", "archive", "clone"]);
  assert.deepEqual(actions("crash_loop"), ["start", "restart", "archive", "clone"]);
  assert.deepEqual(actions("stopping"), ["archive", "clone"]);
  assert.deepEqual(actions("archived", "T"), ["unarchive", "clone", "delete"]);
});

test("uptime reads like 45s, 3m 07s, 2h 05m, 3d 4h", () => {
  const at = (seconds) => uptime(T0, Date.parse(T0) + seconds * 1000);
  assert.equal(at(45), "45s");
  assert.equal(at(187), "3m 07s");
  assert.equal(at(2 * 3600 + 5 * 60), "2h 05m");
  assert.equal(at(76 * 3600), "3d 4h");
  assert.equal(at(-5), "0s");
  assert.equal(uptime(null, 0), "");
  assert.equal(uptime("garbage", 0), "");
});

test("a command line splits into argv with quotes and escapes", () => {
  assert.deepEqual(splitCommand("python -m cpstream.agent"), ["python", "-m", "cpstream.agent"]);
  assert.deepEqual(splitCommand(`sh -c 'echo "hi there"'  x\\ y ""`), [
    "sh",
    "-c",
    'echo "hi there"',
    "x y",
    "",
  ]);
  assert.deepEqual(splitCommand(`a "b \\" c"`), ["a", 'b " c']);
  assert.deepEqual(splitCommand("   "), []);
  assert.throws(() => splitCommand("echo 'oops"), SyntaxError);
});

test("a polled tail adds only the lines after what is shown", () => {
  const merge = (known, fetched) => newTailLines(known.split(""), fetched.split(""));
  assert.deepEqual(merge("", "ab"), { lines: ["a", "b"], gap: false });
  assert.deepEqual(merge("ab", "abcd"), { lines: ["c", "d"], gap: false });
  assert.deepEqual(merge("xab", "bc"), { lines: ["c"], gap: false });
  assert.deepEqual(merge("ab", "ab"), { lines: [], gap: false });
  assert.deepEqual(merge("ab", "pq"), { lines: ["p", "q"], gap: true });
  assert.deepEqual(merge("ab", ""), { lines: [], gap: false });
  assert.deepEqual(merge("1212", "12123"), { lines: ["3"], gap: false });
});

test("a polled message becomes a row shaped like a message_event frame", () => {
  const row = eventFromMessage({
    id: "m1",
    status: "acknowledged",
    from_instance: "a",
    to_instance: "b",
    message_type: "task.x",
    correlation_id: "c",
    updated_at: "T",
  });
  assert.deepEqual(row, {
    message_id: "m1",
    event: "acknowledged",
    from: "a",
    to: "b",
    message_type: "task.x",
    correlation_id: "c",
    detail: null,
    timestamp: "T",
  });
});

test("routes: dashboard, instance pages, messages with filters", () => {
  assert.deepEqual(parseRoute(""), { view: "dashboard", query: {} });
  assert.deepEqual(parseRoute("#/"), { view: "dashboard", query: {} });
  assert.deepEqual(parseRoute("#/instances/agent%201"), {
    view: "instance",
    name: "agent 1",
    query: {},
  });
  assert.deepEqual(parseRoute("#/messages?instance=a&correlation_id=c%26d"), {
    view: "messages",
    tab: "events",
    query: { instance: "a", correlation_id: "c&d" },
  });
  assert.deepEqual(parseRoute("#/messages/dead-letters"), {
    view: "messages",
    tab: "dead_letters",
    query: {},
  });
  const id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
  assert.deepEqual(parseRoute(messageHash(id)), { view: "message", id, query: {} });
  assert.equal(DEAD_LETTERS_HASH, "#/messages/dead-letters");
  assert.equal(parseRoute("#/nowhere").view, "not_found");
  assert.equal(messagesHash({ instance: "a b", correlation_id: "" }), "#/messages?instance=a+b");
  assert.equal(messagesHash({}), "#/messages");
});

test("usage, restarts and the last exit come with snapshots and status changes", () => {
  const usage = { cpu: 12.5, rss: 4096, fds: 5, threads: 2, children: 0, at: T0 };
  const state = applied(new Map(), false, {
    type: "snapshot",
    instances: [{ ...base, usage, restarts: 2, last_exit: { code: 3, at: T0 } }],
  });
  assert.deepEqual(state.get("1").usage, usage);
  assert.equal(state.get("1").restarts, 2);

  applied(state, false, {
    type: "status_changed",
    id: "1",
    status: "crashed",
    pid: null,
    exit: { signal: "SIGKILL" },
    timestamp: "T1",
    seq: 4,
  });
  assert.deepEqual(state.get("1").last_exit, { signal: "SIGKILL", at: "T1" });
  assert.equal(state.get("1").restarts, 2, "kept when the frame does not say");
  assert.equal(state.get("1").usage, null, "nothing runs: no usage");

  applied(state, false, {
    type: "status_changed",
    id: "1",
    status: "running",
    pid: 7,
    restarts: 3,
    last_exit: { code: 1, at: "T2" },
  });
  assert.deepEqual(state.get("1").last_exit, { code: 1, at: "T2" });
  assert.equal(state.get("1").restarts, 3);
  applied(state, false, { type: "usage_changed", instances: [{ id: "1", usage }] });
  applied(state, false, { type: "status_changed", id: "1", status: "unhealthy", pid: 7 });
  assert.deepEqual(state.get("1").usage, usage, "still running: the last sample stays");

  const back = applied(new Map([["1", { ...state.get("1"), archived_at: "T" }]]), true, {
    type: "instance_unarchived",
    id: "1",
    name: "a",
    port: 1,
    status: "stopped",
  });
  assert.equal(back.get("1").restarts, 3, "unarchiving keeps what was known");
});

test("a usage_changed frame (no seq) sets the usage of the instances it names", () => {
  const state = applied(new Map(), false, {
    type: "snapshot",
    instances: [base, { ...base, id: "2", name: "b" }],
  });
  const usage = { cpu: 99, rss: 1, at: T0 };
  applied(state, false, {
    type: "usage_changed",
    timestamp: T0,
    instances: [
      { id: "2", name: "b", usage },
      { id: "gone", name: "x", usage },
    ],
  });
  assert.equal(state.get("1").usage, null);
  assert.deepEqual(state.get("2").usage, usage);
  assert.equal(state.size, 2);
});

test("the header counts active instances by status, in a fixed order", () => {
  const state = new Map(
    [
      ["1", "stopped"],
      ["2", "running"],
      ["3", "crashed"],
      ["4", "running"],
      ["5", "archived"],
    ].map(([id, status]) => {
      const archived_at = status === "archived" ? "T" : null;
      return [id, { ...base, id, status, archived_at }];
    }),
  );
  assert.deepEqual(statusCounts(state), [
    ["running", 2],
    ["crashed", 1],
    ["stopped", 1],
  ]);
  assert.deepEqual(statusCounts(new Map()), []);
});

test("a timeline merges REST events and frames once each, oldest first", () => {
  const rest = [
    { event: "queued", detail: null, timestamp: "2026-01-01T00:00:01.000000Z" },
    { event: "delivered", detail: null, timestamp: "2026-01-01T00:00:02.000000Z" },
  ];
  const frame = {
    type: "message_event",
    message_id: "m",
    event: "delivered",
    detail: null,
    timestamp: "2026-01-01T00:00:02.000000Z",
    seq: 9,
  };
  const later = { ...frame, event: "acknowledged", timestamp: "2026-01-01T00:00:03.000000Z" };
  const merged = mergeTimeline(mergeTimeline([], [later, frame]), rest);
  assert.deepEqual(
    merged.map((e) => e.event),
    ["queued", "delivered", "acknowledged"],
  );
  assert.deepEqual(Object.keys(merged[2]), ["event", "detail", "timestamp"]);

  const same = "2026-01-01T00:00:04.000000Z";
  const failed = { event: "failed", detail: "boom", timestamp: same };
  const buried = { event: "dead_lettered", detail: "retries exhausted", timestamp: same };
  for (const [a, b] of [
    [[buried], [failed]],
    [[failed], [buried]],
    [[], [buried, failed]],
  ]) {
    assert.deepEqual(
      mergeTimeline(mergeTimeline(merged, a), b).map((e) => e.event),
      ["queued", "delivered", "acknowledged", "failed", "dead_lettered"],
      "one change's events keep their order whichever came first",
    );
  }
});

test("the lifecycle history is one entry per seq, newest first, bounded", () => {
  const ev = (seq) => ({ type: "status_changed", seq, status: "running" });
  const merged = mergeHistory([ev(3), ev(1)], [ev(2), ev(3), { type: "usage_changed" }]);
  assert.deepEqual(
    merged.map((e) => e.seq),
    [3, 2, 1],
  );
  const many = Array.from({ length: 500 }, (_, i) => ev(i + 1));
  const capped = mergeHistory([], many, 200);
  assert.equal(capped.length, 200);
  assert.equal(capped[0].seq, 500);
});

test("a dead letter's failure is its reason and the failure before it", () => {
  const e = (event, detail = null) => ({ event, detail, timestamp: "T" });
  assert.equal(
    failureOf([e("queued"), e("failed", "boom"), e("dead_lettered", "retries exhausted")]),
    "retries exhausted: boom",
  );
  assert.equal(
    failureOf([e("expired", "not delivered within 60s"), e("dead_lettered", "expired")]),
    "expired: not delivered within 60s",
  );
  const again = [
    e("failed", "first"),
    e("dead_lettered", "retries exhausted"),
    e("replayed"),
    e("dead_lettered", "expired"),
  ];
  assert.equal(failureOf(again), "expired", "the failure of an earlier life is not this one's");
  assert.equal(failureOf([e("queued")]), "");
});
