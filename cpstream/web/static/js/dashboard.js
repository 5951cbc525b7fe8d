// The dashboard: one card per instance, kept current by the shared instances
// stream, with what each costs and a sparkline of its last ten minutes.

import { actionButtons, createInstance } from "./actions.js";
import { h } from "./dom.js";
import { actionsFor, sortedInstances, uptime } from "./model.js";
import { UsageSparks, usageFacts } from "./usageview.js";

const UPTIME_TICK_MS = 1000;
const RUNNING = new Set(["starting", "running", "unhealthy", "stopping"]);
const CARD_FACTS = ["cpu", "rss", "restarts", "last_exit"];

/** A status badge, coloured by status. */
export function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/** Fill `el` with a status badge for `status`. */
export function setBadge(el, status) {
  el.className = `badge status-${status}`;
  el.textContent = status;
}

/** The uptime text of an instance, or a dash when it is not running. */
export function uptimeText(instance, now = Date.now()) {
  return RUNNING.has(instance.status) ? uptime(instance.started_at, now) || "\u2014" : "\u2014";
}

function card(instance, ctx) {
  const current = { instance };
  const href = `#/instances/${encodeURIComponent(instance.name)}`;
  const name = h("a", { href, class: "card-name" });
  const status = badge(instance.status);
  const port = h("dd", {});
  const pid = h("dd", {});
  const up = h("dd", { class: "uptime" });
  const usage = usageFacts(CARD_FACTS);
  const sparks = new UsageSparks(ctx.feeds.usage, instance.id);
  const actions = actionButtons(ctx, () => current.instance);
  const el = h(
    "article",
    { class: "card", dataset: { instance: instance.name, id: instance.id } },
    h("header", { class: "card-head" }, h("h2", {}, name), status),
    h(
      "dl",
      { class: "facts" },
      [h("dt", {}, "Port"), port, h("dt", {}, "PID"), pid, h("dt", {}, "Uptime"), up],
      usage.rows,
    ),
    sparks.el,
    actions.el,
  );
  const update = (next) => {
    current.instance = next;
    name.textContent = next.name;
    el.dataset.instance = next.name;
    el.classList.toggle("archived", Boolean(next.archived_at));
    setBadge(status, next.status);
    port.textContent = next.port ?? "\u2014";
    pid.textContent = next.pid ?? "\u2014";
    up.textContent = uptimeText(next);
    usage.update(next);
    actions.update(actionsFor(next), next.name);
    if (!next.archived_at) ctx.feeds.usage.ensure(next.id, next.name);
  };
  update(instance);
  return {
    el,
    update,
    redraw: () => sparks.update(),
    tick: () => (up.textContent = uptimeText(current.instance)),
  };
}

/** Mount the dashboard in `root`; returns its teardown. */
export function mountDashboard(root, ctx) {
  const feed = ctx.feeds.instances;
  const cards = new Map();
  const actx = { ...ctx, refresh: () => feed.refresh() };

  const grid = h("div", { class: "cards", "aria-live": "off" });
  const empty = h(
    "p",
    { class: "empty", hidden: true },
    "No instances. Create one with \u201cNew instance\u201d.",
  );
  const count = h("span", { class: "count" });
  const toggle = h("input", {
    type: "checkbox",
    id: "show-archived",
    checked: ctx.prefs.includeArchived,
  });
  root.append(
    h(
      "section",
      { class: "toolbar" },
      h("h1", {}, "Instances ", count),
      h(
        "div",
        { class: "toolbar-actions" },
        h("label", { class: "toggle", for: "show-archived" }, toggle, " Show archived"),
        h(
          "button",
          { type: "button", class: "btn btn-primary", onclick: () => createInstance(actx) },
          "New instance",
        ),
      ),
    ),
    empty,
    grid,
  );

  const render = () => {
    if (!feed.settled) return;
    const ordered = sortedInstances(feed.instances);
    for (const [id, entry] of cards) {
      if (!feed.instances.has(id)) {
        entry.el.remove();
        cards.delete(id);
      }
    }
    ordered.forEach((instance, index) => {
      let entry = cards.get(instance.id);
      if (entry) entry.update(instance);
      else cards.set(instance.id, (entry = card(instance, actx)));
      const there = grid.children[index] ?? null;
      if (there !== entry.el) grid.insertBefore(entry.el, there);
    });
    empty.hidden = ordered.length > 0;
    const active = ordered.filter((i) => !i.archived_at).length;
    const archived = ordered.length - active;
    count.textContent = `(${active}${archived ? ` + ${archived} archived` : ""})`;
  };

  toggle.addEventListener("change", () => {
    ctx.prefs.includeArchived = toggle.checked;
    feed.want(toggle.checked);
  });

  feed.want(ctx.prefs.includeArchived);
  render();
  const stops = [
    feed.subscribe(render),
    ctx.feeds.usage.subscribe((id) => cards.get(id)?.redraw()),
  ];
  const ticker = setInterval(() => cards.forEach((entry) => entry.tick()), UPTIME_TICK_MS);
  return () => {
    clearInterval(ticker);
    stops.forEach((stop) => stop());
  };
}
