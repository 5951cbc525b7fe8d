// The dashboard: one card per instance, kept current by /ws/instances.

import { actionButtons, createInstance } from "./actions.js";
import { get } from "./api.js";
import { h } from "./dom.js";
import { POLL_MS } from "./live.js";
import { actionsFor, applyInstanceFrame, sortedInstances, uptime } from "./model.js";

const UPTIME_TICK_MS = 1000;
const RUNNING = new Set(["starting", "running", "unhealthy", "stopping"]);

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
  const actions = actionButtons(ctx, () => current.instance);
  const el = h(
    "article",
    { class: "card", dataset: { instance: instance.name, id: instance.id } },
    h("header", { class: "card-head" }, h("h2", {}, name), status),
    h(
      "dl",
      { class: "facts" },
      [h("dt", {}, "Port"), port, h("dt", {}, "PID"), pid, h("dt", {}, "Uptime"), up],
    ),
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
    actions.update(actionsFor(next), next.name);
  };
  update(instance);
  return { el, update, tick: () => (up.textContent = uptimeText(current.instance)) };
}

/** Mount the dashboard in `root`; returns its teardown. */
export function mountDashboard(root, ctx) {
  const instances = new Map();
  const cards = new Map();
  let includeArchived = ctx.prefs.includeArchived;
  let awaiting = null; // the include_archived value of the snapshot we are waiting for
  let stream = null;
  const actx = { ...ctx, refresh: () => stream?.refresh() };

  const grid = h("div", { class: "cards", "aria-live": "off" });
  const empty = h(
    "p",
    { class: "empty", hidden: true },
    "No instances. Create one with \u201cNew instance\u201d.",
  );
  const count = h("span", { class: "count" });
  const toggle = h("input", { type: "checkbox", id: "show-archived", checked: includeArchived });
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
    const ordered = sortedInstances(instances);
    for (const [id, entry] of cards) {
      if (!instances.has(id)) {
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

  const apply = (frame) => {
    if (awaiting !== null) {
      if (frame.type !== "snapshot" || frame.include_archived !== awaiting) return;
      awaiting = null;
    }
    applyInstanceFrame(instances, frame, includeArchived);
    render();
  };

  const askArchived = (live) => {
    if (includeArchived && live.send({ type: "set_include_archived", value: true })) {
      awaiting = true;
    }
  };

  stream = ctx.stream("/ws/instances", {
    resume: "seq",
    onOpen: (live) => {
      awaiting = null;
      askArchived(live);
    },
    onFrame: apply,
    poll: {
      fetch: () => get(`/api/instances?include_archived=${includeArchived}`),
      apply: (list) => {
        awaiting = null;
        apply({ type: "snapshot", instances: list, include_archived: includeArchived });
      },
      everyMs: POLL_MS.instances,
    },
  });

  toggle.addEventListener("change", () => {
    includeArchived = toggle.checked;
    ctx.prefs.includeArchived = includeArchived;
    if (stream.send({ type: "set_include_archived", value: includeArchived })) {
      awaiting = includeArchived;
    } else {
      stream.refresh();
    }
  });

  const ticker = setInterval(() => cards.forEach((entry) => entry.tick()), UPTIME_TICK_MS);
  return () => clearInterval(ticker);
}
