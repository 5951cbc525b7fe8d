// The messages view: counts by status, then one of two tabs: a live table of
// message events from /ws/messages, filtered by instance and correlation id
// (a row opens the message beside it), or the dead letters.

import { get } from "./api.js";
import { mountDeadLetters } from "./deadletters.js";
import { clock, fill, h } from "./dom.js";
import { POLL_MS } from "./live.js";
import { eventBadge, messageFacts, timelineList } from "./message.js";
import {
  DEAD_LETTERS_HASH,
  MAX_MESSAGE_ROWS,
  eventFromMessage,
  messageHash,
  messagesHash,
} from "./model.js";

// Message statuses in the order of their life.
const STATUSES = ["queued", "delivered", "retry_scheduled", "acknowledged", "dead_letter"];

const COLUMNS = ["Time", "Event", "Type", "From", "To", "Correlation", "Message", "Detail"];

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

/** The message detail panel: a link to its page, fields, the redacted payload, the timeline. */
function detail(message, close) {
  return [
    h(
      "header",
      { class: "panel-head" },
      h("h2", {}, message.message_type),
      eventBadge(message.status),
      h("span", { class: "spacer" }),
      h("a", { class: "btn btn-sm", href: messageHash(message.id) }, "Open page"),
      h(
        "button",
        { type: "button", class: "btn btn-sm", "aria-label": "Close message", onclick: close },
        "\u00d7",
      ),
    ),
    messageFacts(message),
    h("h3", {}, "Timeline"),
    timelineList(message.events),
  ];
}

/** "3 queued", "1 dead letter", "2 dead letters"; an ellipsis until the count is known. */
function countText(n, status) {
  const label = status === "dead_letter" && n !== 1 ? "dead letters" : status.replace("_", " ");
  return `${Number.isInteger(n) ? n : "\u2026"} ${label}`;
}

/** The counts by status, kept current from the shared message counts. */
function statusCounts(stats) {
  const label = "Messages by status";
  const el = h("div", { class: "status-counts", role: "group", "aria-label": label });
  const render = (value) => {
    const by = value?.by_status ?? {};
    el.replaceChildren(
      ...STATUSES.map((status) =>
        h(
          "span",
          { class: `pill event-${status}`, dataset: { status } },
          countText(by[status], status),
        ),
      ),
    );
  };
  render(stats.value);
  return { el, stop: stats.subscribe(render) };
}

/** The tab links: the events table and the dead letters. */
function tabs(current, stats) {
  const deadCount = h("span", { class: "count" });
  const render = (value) => {
    deadCount.textContent = Number.isInteger(value?.dead_letter) ? ` (${value.dead_letter})` : "";
  };
  const link = (tab, href, ...label) =>
    h("a", { href, "aria-current": tab === current ? "page" : null }, ...label);
  render(stats.value);
  return {
    el: h(
      "nav",
      { class: "tabs", "aria-label": "Messages" },
      link("events", "#/messages", "Events"),
      link("dead_letters", DEAD_LETTERS_HASH, "Dead letters", deadCount),
    ),
    stop: stats.subscribe(render),
  };
}

/** Mount the messages view for `route` (its tab and filters); returns its teardown. */
export function mountMessages(root, ctx, route) {
  const stats = ctx.feeds.stats;
  const nav = tabs(route.tab, stats);
  const counts = statusCounts(stats);
  root.append(h("section", { class: "toolbar" }, h("h1", {}, "Messages"), nav.el), counts.el);
  const content = h("div", {});
  root.append(content);
  const unmount =
    route.tab === "dead_letters"
      ? mountDeadLetters(content, ctx)
      : mountEvents(content, ctx, route.query);
  return () => {
    unmount();
    nav.stop();
    counts.stop();
  };
}

/** Mount the live events table in `root` with `query` filters; returns its teardown. */
function mountEvents(root, ctx, query) {
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
    form,
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
