// The instance page: its details, kept current by /ws/instances, and a live
// log view from /ws/instances/NAME/logs that follows the tail.

import { actionButtons } from "./actions.js";
import { get, instancePath } from "./api.js";
import { badge, setBadge, uptimeText } from "./dashboard.js";
import { h } from "./dom.js";
import { POLL_MS } from "./live.js";
import { MAX_LOG_LINES, actionsFor, applyInstanceFrame, newTailLines } from "./model.js";

const BACKLOG = 1000;
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

/** Mount the page of instance `name` in `root`; returns its teardown. */
export function mountInstance(root, ctx, name) {
  const instances = new Map();
  let shown = null;
  let awaiting = true;

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
  let stream = null;
  const actions = actionButtons({ ...ctx, refresh: () => stream?.refresh() }, () => shown);
  const missing = h("p", { class: "empty", hidden: true });
  const log = new LogView();
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
      "dl",
      { class: "facts facts-wide" },
      Object.entries(FACT_LABELS).map(([key, label]) => [h("dt", {}, label), facts[key]]),
    ),
    actions.el,
  );
  root.append(
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "\u2190 Instances")),
    missing,
    details,
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
  );

  const render = () => {
    const matches = [...instances.values()].filter((i) => i.name === name);
    shown = matches.find((i) => !i.archived_at) ?? matches[0] ?? shown;
    if (!shown) return;
    setBadge(status, shown.status);
    details.classList.toggle("archived", Boolean(shown.archived_at));
    facts.port.textContent = shown.port ?? "\u2014";
    facts.pid.textContent = shown.pid ?? "\u2014";
    facts.uptime.textContent = uptimeText(shown);
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

  stream = ctx.stream("/ws/instances", {
    onOpen: (live) => {
      awaiting = live.send({ type: "set_include_archived", value: true });
    },
    onFrame: (frame) => {
      if (awaiting && !(frame.type === "snapshot" && frame.include_archived)) return;
      awaiting = false;
      applyInstanceFrame(instances, frame, true);
      render();
    },
    poll: {
      fetch: () => get("/api/instances?include_archived=true"),
      apply: (list) => {
        applyInstanceFrame(instances, { type: "snapshot", instances: list }, true);
        render();
      },
      everyMs: POLL_MS.instances,
    },
  });

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
  return () => clearInterval(ticker);
}
