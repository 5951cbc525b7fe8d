// The messages page: a live table of message events from /ws/messages,
// filtered by instance and correlation id; a row opens the message itself.

import { get } from "./api.js";
import { clock, fill, h } from "./dom.js";
import { POLL_MS } from "./live.js";
import { MAX_MESSAGE_ROWS, eventFromMessage, messagesHash } from "./model.js";

function row(event, select) {
  const tr = h(
    "tr",
    { tabindex: "0", dataset: { messageId: event.message_id, event: event.event } },
    h("td", { class: "mono" }, clock(event.timestamp)),
    h("td", {}, h("span", { class: `badge event-${event.event}` }, event.event)),
    h("td", {}, event.message_type),
    h("td", {}, event.from),
    h("td", {}, event.to),
    h("td", { class: "mono" }, event.correlation_id ?? ""),
    h("td", { class: "mono", title: event.message_id }, event.message_id.slice(0, 8)),
    h("td", { class: "detail" }, event.detail ?? ""),
  );
  tr.addEventListener("click", () => select(event.message_id));
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      select(event.message_id);
    }
  });
  return tr;
}

/** Mount the messages page in `root` with `query` filters; returns its teardown. */
export function mountMessages(root, ctx, query) {
  const filters = { instance: query.instance ?? "", correlation_id: query.correlation_id ?? "" };
  let selected = null;

  const instanceInput = h("input", { name: "instance", list: "instance-names", value: filters.instance, placeholder: "any", autocomplete: "off" });
  const correlationInput = h("input", { name: "correlation_id", value: filters.correlation_id, placeholder: "any", autocomplete: "off", spellcheck: "false" });
  const names = h("datalist", { id: "instance-names" });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    h("label", { class: "field" }, h("span", {}, "Instance"), instanceInput),
    h("label", { class: "field" }, h("span", {}, "Correlation id"), correlationInput),
    h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
    h("button", { type: "button", class: "btn", onclick: () => (location.hash = messagesHash({})) }, "Clear"),
    names,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = messagesHash({ instance: instanceInput.value.trim(), correlation_id: correlationInput.value.trim() });
  });

  const body = h("tbody", {});
  const note = h("p", { class: "hint", hidden: true }, "Polling: one row per message, with its latest status.");
  const empty = h("p", { class: "empty" }, "No message events yet.");
  const panel = h("aside", { class: "message-panel", hidden: true, "aria-label": "Message", tabindex: "-1" });
  root.append(
    h("section", { class: "toolbar" }, h("h1", {}, "Messages"), form),
    note,
    h(
      "div",
      { class: "split" },
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "events" },
          h("thead", {}, h("tr", {}, ["Time", "Event", "Type", "From", "To", "Correlation", "Message", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
          body,
        ),
        empty,
      ),
      panel,
    ),
  );

  const show = async (id) => {
    selected = id;
    for (const tr of body.children) tr.classList.toggle("selected", tr.dataset.messageId === id);
    let message;
    try {
      message = await get(`/api/messages/${encodeURIComponent(id)}`);
    } catch (error) {
      ctx.notify.error(error, "Load message");
      return;
    }
    if (selected !== id) return;
    const field = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "\u2014")];
    fill(
      panel,
      h(
        "header",
        { class: "panel-head" },
        h("h2", {}, message.message_type),
        h("span", { class: `badge event-${message.status}` }, message.status),
        h("span", { class: "spacer" }),
        h("button", { type: "button", class: "btn btn-sm", "aria-label": "Close message", onclick: close }, "\u00d7"),
      ),
      h(
        "dl",
        { class: "facts facts-wide" },
        field("Id", h("span", { class: "mono" }, message.id)),
        field("From", message.from_instance),
        field("To", message.to_instance),
        field("Correlation", message.correlation_id),
        field("Attempts", `${message.attempts} of ${message.max_retries}`),
        field("Created", message.created_at),
        field("Expires", message.expires_at),
      ),
      h("h3", {}, "Payload (redacted)"),
      h("pre", { class: "payload" }, JSON.stringify(message.payload, null, 2)),
      h("h3", {}, "Timeline"),
      h(
        "ol",
        { class: "timeline" },
        message.events.map((e) =>
          h("li", {}, h("span", { class: "mono" }, e.timestamp), " ", h("span", { class: `badge event-${e.event}` }, e.event), e.detail ? ` ${e.detail}` : ""),
        ),
      ),
    );
    panel.hidden = false;
  };

  const close = () => {
    selected = null;
    panel.hidden = true;
    for (const tr of body.children) tr.classList.remove("selected");
  };

  const setRows = (events) => {
    fill(body, events.slice(0, MAX_MESSAGE_ROWS).map((e) => row(e, show)));
    empty.hidden = events.length > 0;
  };

  ctx.stream(`/ws/messages?${new URLSearchParams(Object.entries(filters).filter(([, v]) => v))}`, {
    onOpen: () => (note.hidden = true),
    onFrame: (frame) => {
      if (frame.type === "snapshot") {
        setRows([...frame.recent_events].reverse());
      } else if (frame.type === "message_event") {
        body.prepend(row(frame, show));
        while (body.childElementCount > MAX_MESSAGE_ROWS) body.lastElementChild.remove();
        empty.hidden = true;
        if (selected === frame.message_id) show(frame.message_id);
      }
    },
    onError: (error) => ctx.notify.error(new Error(error.message), "Message stream"),
    poll: {
      fetch: () => get(`/api/messages?${new URLSearchParams({ ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v)), limit: "100" })}`),
      apply: (messages) => {
        note.hidden = false;
        setRows(messages.map(eventFromMessage));
      },
      everyMs: POLL_MS.messages,
    },
  });

  get("/api/instances?include_archived=true")
    .then((list) => fill(names, [...new Set(list.map((i) => i.name))].map((n) => h("option", { value: n }))))
    .catch(() => {});
  return () => {};
}
