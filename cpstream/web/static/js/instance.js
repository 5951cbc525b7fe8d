// The instance page: its details and costs, kept current by the shared
// instances stream; its lifecycle history; and a live log view from
// /ws/instances/NAME/logs that follows the tail.

import { actionButtons } from "./actions.js";
import { get, instancePath } from "./api.js";
import { badge, setBadge, uptimeText } from "./dashboard.js";
import { clock, h } from "./dom.js";
import { POLL_MS } from "./live.js";
import { FAILED, MAX_LOG_LINES, actionsFor, mergeHistory, newTailLines } from "./model.js";
import { exitReason } from "./usage.js";
import { UsageSparks, usageFacts } from "./usageview.js";

const BACKLOG = 1000;
const HISTORY = 100;
const USAGE_FACTS = ["cpu", "rss", "fds", "threads", "children", "restarts", "last_exit"];
const FACT_LABELS = Object.freeze({
  port: "Port",
  pid: "PID",
  uptime: "Uptime",
  command: "Command",
  health: "Health",
  restart: "Restart",
});
const ROTATED = "\u2014 log rotated: a new file starts here \u2014";
const GAP = "\u2014 lines may be missing here (log rotated or polled late) \u2014";
const BOTTOM_SLACK_PX = 8;

/** The log view: appends lines, caps them, follows the tail unless scrolled up. */
class LogView {
  constructor() {
    this.following = true;
    this.unseen = 0;
    this.lines = h("div", { class: "log", role: "log", tabindex: "0", "aria-label": "Log" });
    this.jump = h(
      "button",
      { type: "button", class: "btn btn-sm jump", hidden: true, onclick: () => this.follow() },
      "Jump to latest",
    );
    this.status = h("span", { class: "log-status" });
    this.lines.addEventListener("scroll", () => {
      this.following = this._atBottom();
      if (this.following) this._seen();
    });
    this._count();
  }

  _atBottom() {
    const el = this.lines;
    return el.scrollHeight - el.scrollTop - el.clientHeight <= BOTTOM_SLACK_PX;
  }

  follow() {
    this.following = true;
    this.lines.scrollTop = this.lines.scrollHeight;
    this._seen();
    this.lines.focus();
  }

  _seen() {
    this.unseen = 0;
    this.jump.hidden = true;
  }

  /** Replace everything (a fresh backlog). */
  reset(lines) {
    this.lines.replaceChildren();
    this.append(lines);
  }

  append(lines, marker = null) {
    if (lines.length === 0 && marker === null) return;
    const fragment = document.createDocumentFragment();
    if (marker !== null) fragment.append(h("div", { class: "log-marker" }, marker));
    for (const line of lines.slice(-MAX_LOG_LINES)) {
      fragment.append(h("div", { class: "line" }, line));
    }
    this.lines.append(fragment);
    const excess = this.lines.childElementCount - MAX_LOG_LINES;
    for (let i = 0; i < excess; i += 1) this.lines.firstElementChild.remove();
    if (this.following) {
      this.lines.scrollTop = this.lines.scrollHeight;
    } else {
      this.unseen += lines.length;
      this.jump.textContent = `Jump to latest (${this.unseen} new)`;
      this.jump.hidden = false;
    }
    this._count();
  }

  mark(text) {
    this.append([], text);
  }

  /** The last lines shown (markers excluded), for merging a polled tail. */
  recent(count) {
    const found = [];
    let el = this.lines.lastElementChild;
    for (; el && found.length < count; el = el.previousElementSibling) {
      if (el.classList.contains("line")) found.push(el.textContent);
    }
    return found.reverse();
  }

  _count() {
    const n = this.lines.querySelectorAll(".line").length;
    this.status.textContent = `${n} line${n === 1 ? "" : "s"} (keeps the last ${MAX_LOG_LINES})`;
  }
}

/** What one lifecycle event says, as the parts of its history entry. */
function describe(event) {
  switch (event.type) {
    case "status_changed":
      return [
        badge(event.status),
        event.exit
          ? h(
              "span",
              { class: FAILED.has(event.status) ? "exit bad" : "exit" },
              exitReason(event.exit),
            )
          : null,
        event.pid ? h("span", { class: "muted" }, `pid ${event.pid}`) : null,
      ];
    case "instance_created":
      return [
        h("span", { class: "badge" }, "created"),
        event.cloned_from ? h("span", { class: "muted" }, `clone of ${event.cloned_from}`) : null,
      ];
    default:
      return [h("span", { class: "badge" }, event.type.replace(/^instance_/, ""))];
  }
}

/** The lifecycle history: newest first, merged by seq from REST and the stream. */
class HistoryView {
  constructor() {
    this.events = [];
    this.list = h("ol", { class: "history", "aria-label": "Lifecycle history" });
    this.empty = h("p", { class: "hint history-empty" }, "No events yet.");
  }

  reset(events) {
    this.events = [];
    this.merge(events);
  }

  merge(events) {
    this.events = mergeHistory(this.events, events);
    this.list.replaceChildren(
      ...this.events.map((e) =>
        h(
          "li",
          { dataset: { seq: e.seq, type: e.type } },
          h("time", { class: "mono", datetime: e.timestamp }, clock(e.timestamp)),
          " ",
          describe(e),
        ),
      ),
    );
    this.empty.hidden = this.events.length > 0;
  }
}

/** Mount the page of instance `name` in `root`; returns its teardown. */
export function mountInstance(root, ctx, name) {
  const feed = ctx.feeds.instances;
  let shown = null;
  let sparks = null;

  const title = h("h1", {}, name);
  const status = badge("unknown");
  const facts = {
    port: h("dd", {}),
    pid: h("dd", {}),
    uptime: h("dd", { class: "uptime" }),
    command: h("dd", { class: "mono" }),
    health: h("dd", {}),
    restart: h("dd", {}),
  };
  const usage = usageFacts(USAGE_FACTS);
  const actions = actionButtons({ ...ctx, refresh: () => feed.refresh() }, () => shown);
  const missing = h("p", { class: "empty", hidden: true });
  const log = new LogView();
  const history = new HistoryView();
  const sparkSlot = h("div", { class: "spark-slot" });
  const download = h(
    "a",
    { class: "btn btn-sm", href: instancePath(name, "logs", "download"), download: "" },
    "Download log",
  );
  const details = h(
    "section",
    { class: "details" },
    h("header", { class: "card-head" }, title, status),
    h(
      "div",
      { class: "details-body" },
      h(
        "dl",
        { class: "facts facts-wide" },
        Object.entries(FACT_LABELS).map(([key, label]) => [h("dt", {}, label), facts[key]]),
      ),
      h("dl", { class: "facts facts-wide" }, usage.rows),
      sparkSlot,
    ),
    actions.el,
  );
  root.append(
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "\u2190 Instances")),
    missing,
    details,
    h(
      "div",
      { class: "instance-body" },
      h(
        "section",
        { class: "log-panel" },
        h(
          "header",
          { class: "log-head" },
          h("h2", {}, "Log"),
          log.status,
          h("span", { class: "spacer" }),
          log.jump,
          download,
        ),
        log.lines,
      ),
      h(
        "section",
        { class: "history-panel", "aria-labelledby": "history-title" },
        h("header", { class: "log-head" }, h("h2", { id: "history-title" }, "History")),
        history.list,
        history.empty,
      ),
    ),
  );

  let historyRound = 0;
  const loadHistory = () => {
    const round = ++historyRound;
    get(`${instancePath(name, "events")}?limit=${HISTORY}`)
      .then((events) => {
        if (round === historyRound) history.merge(events);
      })
      .catch((error) => {
        if (error.status !== 404) ctx.notify.error(error, `Load the history of ${name}`);
      });
  };

  const render = () => {
    if (!feed.settled) return;
    const matches = [...feed.instances.values()].filter((i) => i.name === name);
    const next = matches.find((i) => !i.archived_at) ?? matches[0] ?? shown;
    if (!next) return;
    if (next.id !== shown?.id) {
      sparks = new UsageSparks(ctx.feeds.usage, next.id);
      sparkSlot.replaceChildren(sparks.el);
      if (shown) {
        history.reset([]);
        loadHistory();
      }
    }
    shown = next;
    if (!shown.archived_at) ctx.feeds.usage.ensure(shown.id, shown.name);
    setBadge(status, shown.status);
    details.classList.toggle("archived", Boolean(shown.archived_at));
    facts.port.textContent = shown.port ?? "\u2014";
    facts.pid.textContent = shown.pid ?? "\u2014";
    facts.uptime.textContent = uptimeText(shown);
    usage.update(shown);
    actions.update(actionsFor(shown), name);
  };

  const notFound = (message) => {
    missing.textContent = message;
    missing.hidden = false;
  };

  get(instancePath(name))
    .then((full) => {
      facts.command.textContent = full.command.join(" ");
      facts.health.textContent = full.health;
      facts.restart.textContent = full.restart;
    })
    .catch((error) => {
      if (error.status === 404) notFound(error.message);
      else ctx.notify.error(error, `Load ${name}`);
    });
  loadHistory();

  const onFrame = (frame) => {
    render();
    if (frame.type === "snapshot") loadHistory();
    else if (Number.isInteger(frame.seq) && shown && frame.id === shown.id) history.merge([frame]);
  };
  feed.want(true);
  render();
  const stops = [
    feed.subscribe(onFrame),
    ctx.feeds.usage.subscribe((id) => {
      if (id === shown?.id) sparks?.update();
    }),
  ];

  ctx.stream(`/ws/instances/${encodeURIComponent(name)}/logs?backlog=${BACKLOG}`, {
    resume: "cursor",
    onFrame: (frame) => {
      if (frame.type === "backlog") {
        if (frame.resumed === true) return; // the lines after our cursor follow
        if (frame.gap) {
          const { lines } = newTailLines(log.recent(50), frame.lines);
          log.mark(GAP);
          log.append(lines);
        } else {
          log.reset(frame.lines);
        }
      } else if (frame.type === "lines") log.append(frame.lines);
      else if (frame.type === "rotated") log.mark(ROTATED);
      else if (frame.type === "gap") log.mark(GAP);
    },
    onError: (error) => {
      if (error.code === "instance_not_found" || error.code === 4404) notFound(error.message);
      else ctx.notify.error(new Error(error.message), "Log stream");
    },
    poll: {
      fetch: () => get(`${instancePath(name, "logs")}?lines=${BACKLOG}`),
      apply: (body) => {
        const { lines, gap } = newTailLines(log.recent(50), body.lines);
        if (gap) log.mark(GAP);
        log.append(lines);
      },
      everyMs: POLL_MS.logs,
    },
  });

  const ticker = setInterval(() => {
    if (shown) facts.uptime.textContent = uptimeText(shown);
  }, 1000);
  return () => {
    clearInterval(ticker);
    stops.forEach((stop) => stop());
  };
}
