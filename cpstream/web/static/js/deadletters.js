// The dead-letter tab: every dead letter with why it failed, a link to its
// page and a Replay button (confirming first). Kept current by the shared
// message stream: a new dead letter reloads the list, a replayed one leaves it.

import { get } from "./api.js";
import { clock, h } from "./dom.js";
import { failureOf, messageHash } from "./model.js";
import { replayMessage } from "./replay.js";
import { Throttle } from "./throttle.js";

const LIMIT = 100;
const RELOAD_EVERY_MS = 1000;
const DETAIL_CONCURRENCY = 4;
const COLUMNS = ["Dead since", "Type", "From", "To", "Attempts", "Failure", ""];

/** Mount the dead-letter list in `root`; returns its teardown. */
export function mountDeadLetters(root, ctx) {
  const failures = new Map(); // id -> failure text, fetched once per death
  const rows = new Map(); // id -> <tr>
  const body = h("tbody", {});
  const empty = h("p", { class: "empty", hidden: true }, "No dead letters.");
  const table = h(
    "table",
    { class: "events dead-letters" },
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
  root.append(h("div", { class: "table-wrap" }, table, empty));

  const queue = [];
  let fetching = 0;
  const fetchFailures = () => {
    while (fetching < DETAIL_CONCURRENCY && queue.length > 0) {
      const id = queue.shift();
      if (!rows.has(id) || failures.has(id)) continue;
      fetching += 1;
      get(`/api/messages/${encodeURIComponent(id)}`)
        .then((message) => {
          failures.set(id, failureOf(message.events) || "\u2014");
          const cell = rows.get(id)?.querySelector(".failure");
          if (cell) cell.textContent = failures.get(id);
        })
        .catch(() => {}) // the row stays, without its detail
        .finally(() => {
          fetching -= 1;
          fetchFailures();
        });
    }
  };

  const remove = (id) => {
    rows.get(id)?.remove();
    rows.delete(id);
    failures.delete(id); // if it dies again, it is for another reason
    empty.hidden = rows.size > 0;
  };

  const row = (message) => {
    const replay = h(
      "button",
      {
        type: "button",
        class: "btn btn-sm",
        dataset: { action: "replay" },
        "aria-label": `Replay ${message.message_type} ${message.id.slice(0, 8)}`,
      },
      "Replay",
    );
    replay.addEventListener("click", async () => {
      replay.disabled = true;
      try {
        if (await replayMessage(ctx, message)) remove(message.id);
      } finally {
        replay.disabled = false;
      }
    });
    return h(
      "tr",
      { dataset: { messageId: message.id } },
      h("td", { class: "mono", title: message.updated_at }, clock(message.updated_at)),
      h("td", {}, h("a", { href: messageHash(message.id) }, message.message_type)),
      h("td", {}, message.from_instance),
      h("td", {}, message.to_instance),
      h("td", { title: `retries allowed: ${message.max_retries}` }, message.attempts),
      h("td", { class: "detail failure" }, failures.get(message.id) ?? "\u2026"),
      h("td", {}, replay),
    );
  };

  let round = 0;
  const load = async () => {
    const mine = ++round;
    let list;
    try {
      list = await get(`/api/messages/dead_letter?limit=${LIMIT}`);
    } catch (error) {
      if (error.status !== 0) ctx.notify.error(error, "Load dead letters");
      return;
    }
    if (mine !== round) return;
    const kept = new Set(list.map((m) => m.id));
    for (const id of [...rows.keys()]) if (!kept.has(id)) remove(id);
    const ordered = list.map((message) => {
      let tr = rows.get(message.id);
      if (!tr) {
        rows.set(message.id, (tr = row(message)));
        queue.push(message.id);
      }
      return tr;
    });
    ordered.forEach((tr, index) => {
      if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] ?? null);
    });
    empty.hidden = rows.size > 0;
    fetchFailures();
  };
  const reload = new Throttle(load, RELOAD_EVERY_MS);

  const stop = ctx.feeds.messages.subscribe((frame) => {
    if (frame.type === "snapshot") reload.call();
    else if (frame.type === "message_event") {
      // A listed one's death is the one it shows (a replay would have removed it first).
      if (frame.event === "dead_lettered") {
        if (!rows.has(frame.message_id)) reload.call();
      }
      else if (rows.has(frame.message_id)) remove(frame.message_id); // replayed: no longer dead
    }
  });
  reload.call();
  return () => {
    stop();
    reload.cancel();
  };
}
