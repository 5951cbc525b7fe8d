// The messages page: a live table of message events from /ws/messages,
// filtered by instance and correlation id; a row opens the message itself.

import { get } from "./api.js";
import { clock, fill, h } from "./dom.js";
import { POLL_MS } from "./live.js";
import { MAX_MESSAGE_ROWS, eventFromMessage, messagesHash } from "./model.js";

const COLUMNS = ["Time", "Event", "Type", "From", "To", "Correlation", "Message", "Detail"];

function eventBadge(event) {
  return h("span", { class: `badge event-${event}` }, event);
}

function row(event, select) {
  const tr = h(
    "tr",
    { tabindex: "0", dataset: { messageId: event.message_id, event: event.event } },
    h("td", { class: "mono" }, clock(event.timestamp)),
    h("td", {}, eventBadge(event.event)),
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

/** The filters as query parameters, empty ones left out. */
function queryOf(filters, extra = {}) {
  const set = Object.entries(filters).filter(([, value]) => value);
  return new URLSearchParams({ ...Object.fromEntries(set), ...extra }).toString();
}

function filterInput(name, value) {
  return h("input", {
    name,
    value,
    placeholder: "any",
    autocomplete: "off",
    spellcheck: "false",
    list: name === "instance" ? "instance-names" : null,
  });
}

/** The message detail panel: fields, the redacted payload, the timeline. */
function detail(message, close) {
  const field = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "\u2014")];
  return [
    h(
      "header",
      { class: "panel-head" },
      h("h2", {}, message.message_type),
      eventBadge(message.status),
      h("span", { class: "spacer" }),
      h(
        "button",
        { type: "button", class: "btn btn-sm", "aria-label": "Close message", onclick: close },
        "\u00d7",
      ),
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
        h(
          "li",
          {},
          h("span", { class: "mono" }, e.timestamp),
          " ",
          eventBadge(e.event),
          e.detail ? ` ${e.detail}` : "",
        ),
      ),
    ),
  ];
}

/** Mount the messages page in `root` with `query` filters; returns its teardown. */
export function mountMessages(root, ctx, query) {
  const filters = { instance: query.instance ?? "", correlation_id: query.correlation_id ?? "" };
  let selected = null;

  const instanceInput = filterInput("instance", filters.instance);
  const correlationInput = filterInput("correlation_id", filters.correlation_id);
  const names = h("datalist", { id: "instance-names" });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    h("label", { class: "field" }, h("span", {}, "Instance"), instanceInput),
    h("label", { class: "field" }, h("span", {}, "Correlation id"), correlationInput),
    h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
    h(
      "button",
      { type: "button", class: "btn", onclick: () => (location.hash = messagesHash({})) },
      "Clear",
    ),
    names,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = messagesHash({
      instance: instanceInput.value.trim(),
      correlation_id: correlationInput.value.trim(),
    });
  });

  const body = h("tbody", {});
  const note = h(
    "p",
    { class: "hint", hidden: true },
    "Polling: one row per message, with its latest status.",
  );
  const empty = h("p", { class: "empty" }, "No message events yet.");
  const panel = h("aside", { class: "message-panel", hidden: true, "aria-label": "Message" });
  const head = h("tr", {}, COLUMNS.map((title) => h("th", { scope: "col" }, title)));
  const table = h("table", { class: "events" }, h("thead", {}, head), body);
  root.append(
    h("section", { class: "toolbar" }, h("h1", {}, "Messages"), form),
    note,
    h(
      "div",
      { class: "split" },
      h("div", { class: "table-wrap" }, table, empty),
      panel,
    ),
  );

  const close = () => {
    selected = null;
    panel.hidden = true;
    for (const tr of body.children) tr.classList.remove("selected");
  };

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
    fill(panel, detail(message, close));
    panel.hidden = false;
  };

  const setRows = (events) => {
    fill(body, events.slice(0, MAX_MESSAGE_ROWS).map((e) => row(e, show)));
    empty.hidden = events.length > 0;
  };

  ctx.stream(`/ws/messages?${queryOf(filters)}`, {
    resume: "seq",
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
      fetch: () => get(`/api/messages?${queryOf(filters, { limit: "100" })}`),
      apply: (messages) => {
        note.hidden = false;
        setRows(messages.map(eventFromMessage));
      },
      everyMs: POLL_MS.messages,
    },
  });

  get("/api/instances?include_archived=true")
    .then((list) => {
      const unique = [...new Set(list.map((i) => i.name))];
      fill(names, unique.map((name) => h("option", { value: name })));
    })
    .catch(() => {}); // suggestions only: the filter works without them
  return () => {};
}
