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
} from "../../cpstream/web/js/model.js";

const base = { id: "1", name: "a", status: "stopped", port: 18801, pid: null, started_at: null, archived_at: null };

test("a snapshot replaces local state; deltas update it by id", () => {
  const state = new Map([["old", { ...base, id: "old" }]]);
  applyInstanceFrame(state, { type: "snapshot", instances: [base] }, false);
  assert.deepEqual([...state.keys()], ["1"]);
  applyInstanceFrame(state, { type: "instance_created", id: "2", name: "b", port: 18802, status: "stopped" }, false);
  applyInstanceFrame(
    state,
    { type: "status_changed", id: "1", name: "a", status: "running", pid: 42, started_at: "2026-01-01T00:00:00.000000Z" },
    false,
  );
  assert.deepEqual(state.get("1"), { ...base, status: "running", pid: 42, started_at: "2026-01-01T00:00:00.000000Z" });
  assert.deepEqual(state.get("2"), { ...base, id: "2", name: "b", port: 18802 });
  applyInstanceFrame(state, { type: "status_changed", id: "zzz", status: "running", pid: 1 }, false);
  assert.equal(state.size, 2);
});

test("archiving hides the card unless archived ones are shown, then marks it", () => {
  const hidden = new Map([["1", { ...base }]]);
  applyInstanceFrame(hidden, { type: "instance_archived", id: "1", name: "a", timestamp: "T" }, false);
  assert.equal(hidden.size, 0);
  const shown = new Map([["1", { ...base }]]);
  applyInstanceFrame(shown, { type: "instance_archived", id: "1", name: "a", timestamp: "T" }, true);
  assert.deepEqual(shown.get("1"), { ...base, status: "archived", archived_at: "T" });
  applyInstanceFrame(shown, { type: "status_changed", id: "1", status: "stopped", pid: null }, true);
  assert.equal(shown.get("1").status, "archived");
  applyInstanceFrame(shown, { type: "instance_unarchived", id: "1", name: "a", port: 18801, status: "stopped" }, true);
  assert.deepEqual(shown.get("1"), base);
  applyInstanceFrame(shown, { type: "instance_deleted", id: "1", name: "a" }, true);
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
  assert.deepEqual(sortedInstances(state).map((i) => i.name), ["beta", "zed", "alpha"]);
});

test("actions follow the status", () => {
  assert.deepEqual(actionsFor({ status: "running" }), ["stop", "restart", "archive", "clone"]);
  assert.deepEqual(actionsFor({ status: "stopped" }), ["start", "archive", "clone"]);
  assert.deepEqual(actionsFor({ status: "crash_loop" }), ["start", "restart", "archive", "clone"]);
  assert.deepEqual(actionsFor({ status: "stopping" }), ["archive", "clone"]);
  assert.deepEqual(actionsFor({ status: "archived", archived_at: "T" }), ["unarchive", "clone", "delete"]);
});

test("uptime reads like 45s, 3m 07s, 2h 05m, 3d 4h", () => {
  const start = "2026-01-01T00:00:00.000000Z";
  const t0 = Date.parse(start);
  assert.equal(uptime(start, t0 + 45_000), "45s");
  assert.equal(uptime(start, t0 + 187_000), "3m 07s");
  assert.equal(uptime(start, t0 + (2 * 3600 + 5 * 60) * 1000), "2h 05m");
  assert.equal(uptime(start, t0 + (76 * 3600) * 1000), "3d 4h");
  assert.equal(uptime(start, t0 - 5000), "0s");
  assert.equal(uptime(null, t0), "");
  assert.equal(uptime("garbage", t0), "");
});

test("a command line splits into argv with quotes and escapes", () => {
  assert.deepEqual(splitCommand("python -m cpstream.agent"), ["python", "-m", "cpstream.agent"]);
  assert.deepEqual(splitCommand(`sh -c 'echo "hi there"'  x\\ y ""`), ["sh", "-c", 'echo "hi there"', "x y", ""]);
  assert.deepEqual(splitCommand(`a "b \\" c"`), ["a", 'b " c']);
  assert.deepEqual(splitCommand("   "), []);
  assert.throws(() => splitCommand("echo 'oops"), SyntaxError);
});

test("a polled tail adds only the lines after what is shown", () => {
  assert.deepEqual(newTailLines([], ["a", "b"]), { lines: ["a", "b"], gap: false });
  assert.deepEqual(newTailLines(["a", "b"], ["a", "b", "c", "d"]), { lines: ["c", "d"], gap: false });
  assert.deepEqual(newTailLines(["x", "a", "b"], ["b", "c"]), { lines: ["c"], gap: false });
  assert.deepEqual(newTailLines(["a", "b"], ["a", "b"]), { lines: [], gap: false });
  assert.deepEqual(newTailLines(["a", "b"], ["p", "q"]), { lines: ["p", "q"], gap: true });
  assert.deepEqual(newTailLines(["a", "b"], []), { lines: [], gap: false });
  assert.deepEqual(newTailLines(["1", "2", "1", "2"], ["1", "2", "1", "2", "3"]), { lines: ["3"], gap: false });
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
  assert.deepEqual(parseRoute("#/instances/agent%201"), { view: "instance", name: "agent 1", query: {} });
  assert.deepEqual(parseRoute("#/messages?instance=a&correlation_id=c%26d"), {
    view: "messages",
    query: { instance: "a", correlation_id: "c&d" },
  });
  assert.equal(parseRoute("#/nowhere").view, "not_found");
  assert.equal(messagesHash({ instance: "a b", correlation_id: "" }), "#/messages?instance=a+b");
  assert.equal(messagesHash({}), "#/messages");
});
