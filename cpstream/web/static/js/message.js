// One message: its fields, its payload as stored (redacted) and its event
// timeline, in the messages view's side panel and on its own page, where the
// timeline follows the shared message stream live.

import { get } from "./api.js";
import { fill, h } from "./dom.js";
import { mergeTimeline } from "./model.js";
import { replayMessage } from "./replay.js";
import { Throttle } from "./throttle.js";

const RELOAD_EVERY_MS = 1000;

/** A message status or event as a coloured badge. */
export function eventBadge(event) {
  return h("span", { class: `badge event-${event}` }, event);
}

/** The timeline, oldest first. */
export function timelineList(events) {
  return h(
    "ol",
    { class: "timeline", "aria-label": "Timeline" },
    events.map((e) =>
      h(
        "li",
        { dataset: { event: e.event } },
        h("span", { class: "mono" }, e.timestamp),
        " ",
        eventBadge(e.event),
        e.detail ? ` ${e.detail}` : "",
      ),
    ),
  );
}

/** The fields and the redacted payload of a message. */
export function messageFacts(message) {
  const field = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "\u2014")];
  return [
    h(
      "dl",
      { class: "facts facts-wide" },
      field("Id", h("span", { class: "mono" }, message.id)),
      field("From", message.from_instance),
      field("To", message.to_instance),
      field("Correlation", message.correlation_id),
      field("Attempts", message.attempts),
      field("Retries allowed", message.max_retries),
      field("Created", message.created_at),
      field("Expires", message.expires_at),
    ),
    h("h3", {}, "Payload (redacted)"),
    h("pre", { class: "payload", tabindex: "0" }, JSON.stringify(message.payload, null, 2)),
  ];
}

/** Mount the page of message `id` in `root`; returns its teardown. */
export function mountMessage(root, ctx, id) {
  let message = null;
  let timeline = [];
  const title = h("h1", {}, "Message");
  const status = h("span", { class: "badge" }, "\u2026");
  const replay = h("button", { type: "button", class: "btn btn-primary", hidden: true }, "Replay");
  const facts = h("div", { class: "message-facts" });
  const events = h("div", {});
  const missing = h("p", { class: "empty", hidden: true });
  root.append(
    h("nav", { class: "crumbs" }, h("a", { href: "#/messages" }, "\u2190 Messages")),
    missing,
    h(
      "section",
      { class: "details message-page" },
      h("header", { class: "card-head" }, title, status, h("span", { class: "spacer" }), replay),
      facts,
      h("h3", {}, "Timeline"),
      events,
    ),
  );

  const renderTimeline = () => fill(events, timelineList(timeline));
  let round = 0;
  const load = async () => {
    const mine = ++round;
    let found;
    try {
      found = await get(`/api/messages/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status === 404 || error.status === 400) {
        missing.textContent = error.message;
        missing.hidden = false;
      } else if (error.status !== 0) {
        ctx.notify.error(error, "Load message");
      }
      return;
    }
    if (mine !== round) return;
    message = found;
    title.textContent = message.message_type;
    status.className = `badge event-${message.status}`;
    status.textContent = message.status;
    replay.hidden = message.status !== "dead_letter";
    fill(facts, messageFacts(message));
    timeline = mergeTimeline(timeline, message.events);
    renderTimeline();
  };
  const reload = new Throttle(load, RELOAD_EVERY_MS);

  replay.addEventListener("click", async () => {
    if (!message) return;
    replay.disabled = true;
    try {
      if (await replayMessage(ctx, message)) reload.call();
    } finally {
      replay.disabled = false;
    }
  });

  const stop = ctx.feeds.messages.subscribe((frame) => {
    if (frame.type === "snapshot") reload.call();
    else if (frame.type === "message_event" && frame.message_id === id) {
      timeline = mergeTimeline(timeline, [frame]);
      renderTimeline();
      reload.call();
    }
  });
  reload.call();
  return () => {
    stop();
    reload.cancel();
  };
}
