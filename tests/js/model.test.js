// The dashboard's pure helpers: applying instance frames, uptime, command
// parsing, merging a polled log tail, routes.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  actionsFor,
  applyInstanceFrame,
  eventFromMessage,
  messagesHash,
  newTailLines,
  parseRoute,
  sortedInstances,
  splitCommand,
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
    query: { instance: "a", correlation_id: "c&d" },
  });
  assert.equal(parseRoute("#/nowhere").view, "not_found");
  assert.equal(messagesHash({ instance: "a b", correlation_id: "" }), "#/messages?instance=a+b");
  assert.equal(messagesHash({}), "#/messages");
});
