// The page shell: the streams the whole page shares, hash routing between the
// views and the streams each view opens, the header summary, and the header
// indicator that tells which mode is active.

import { get, instancePath, post, streamUrl } from "./api.js";
import { mountDashboard } from "./dashboard.js";
import { h } from "./dom.js";
import { EventFeed, InstanceFeed } from "./feeds.js";
import { mountInstance } from "./instance.js";
import { Mode, POLL_MS, overallMode } from "./live.js";
import { mountMessage } from "./message.js";
import { mountMessages } from "./messages.js";
import { parseRoute } from "./model.js";
import { Notifier } from "./notify.js";
import { MessageStats } from "./stats.js";
import { LiveStream, Poller } from "./stream.js";
import { mountSummary } from "./summary.js";
import { USAGE_WINDOW_MS } from "./usage.js";
import { UsageHistory } from "./usagehistory.js";

const MODE_TEXT = Object.freeze({
  [Mode.LIVE]: "Live",
  [Mode.CONNECTING]: "Connecting\u2026",
  [Mode.RECONNECTING]: "Reconnecting\u2026",
  [Mode.POLLING]: "Live updates unavailable -- polling",
  [Mode.CLOSED]: "Idle",
});

/** The header indicator: the worst mode of the open streams, and health while polling. */
class Indicator {
  constructor(el) {
    this.el = el;
    this.streams = new Set();
    this.reachable = true;
    this.health = new Poller({
      fetch: () => get("/api/health"),
      apply: () => {},
      everyMs: POLL_MS.health,
      onResult: (error) => {
        this.reachable = error === null;
        this.render();
      },
    });
  }

  render() {
    const mode = overallMode([...this.streams].map((s) => s.mode));
    if (mode === Mode.POLLING) this.health.start();
    else {
      this.health.stop();
      this.reachable = true;
    }
    this.el.dataset.mode = mode;
    this.el.className = `mode mode-${mode}`;
    const text = MODE_TEXT[mode];
    this.el.textContent = this.reachable ? text : `${text} (control plane unreachable)`;
    this.el.title = mode === Mode.POLLING ? "REST polling until a stream reconnects" : "";
  }
}

/** Open a live stream whose mode the indicator shows. */
function opener(indicator) {
  return (path, handlers) => {
    const stream = new LiveStream(streamUrl(path), {
      ...handlers,
      onMode: () => indicator.render(),
    });
    indicator.streams.add(stream);
    return stream.start();
  };
}

/** The streams and state every view shares, opened once for the page's life. */
function startFeeds(open) {
  const instances = new InstanceFeed(open, (archived) =>
    get(`/api/instances?include_archived=${archived}`),
  );
  const usage = new UsageHistory((name) =>
    get(`${instancePath(name, "usage")}?minutes=${USAGE_WINDOW_MS / 60_000}`),
  );
  instances.subscribe((frame) => usage.onInstanceFrame(frame, instances.instances));
  const stats = new MessageStats(() => get("/api/messages/stats"));
  const messages = new EventFeed(open, "/ws/messages");
  messages.subscribe((frame) => stats.onFrame(frame));
  instances.start();
  messages.start();
  return { instances, usage, stats, messages };
}

const VIEWS = Object.freeze({
  dashboard: (view, ctx) => mountDashboard(view, ctx),
  instance: (view, ctx, route) => mountInstance(view, ctx, route.name),
  messages: (view, ctx, route) => mountMessages(view, ctx, route),
  message: (view, ctx, route) => mountMessage(view, ctx, route.id),
});
const SECTION = Object.freeze({ instance: "dashboard", message: "messages" });

function main() {
  const view = document.getElementById("view");
  const indicator = new Indicator(document.getElementById("mode"));
  const notify = new Notifier(document.getElementById("notes"));
  const open = opener(indicator);
  const feeds = startFeeds(open);
  mountSummary(document.getElementById("summary"), feeds);
  const prefs = { includeArchived: false };
  let teardown = () => {};

  const mount = () => {
    teardown();
    const streams = [];
    const route = parseRoute(location.hash);
    const ctx = {
      notify,
      prefs,
      feeds,
      stream(path, handlers) {
        const stream = open(path, handlers);
        streams.push(stream);
        return stream;
      },
    };
    view.replaceChildren();
    const mountView = VIEWS[route.view];
    let unmount = () => {};
    if (mountView) unmount = mountView(view, ctx, route);
    else view.append(h("p", { class: "empty" }, "No such page. ", h("a", { href: "#/" }, "Home")));
    const section = SECTION[route.view] ?? route.view;
    for (const link of document.querySelectorAll("nav.main a")) {
      if (link.dataset.view === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = route.view === "instance" ? `${route.name} \u2014 cpstream` : "cpstream";
    indicator.render();
    teardown = () => {
      unmount();
      for (const stream of streams) {
        indicator.streams.delete(stream);
        stream.close();
      }
    };
  };

  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await post("/logout");
    } finally {
      location.assign("/login");
    }
  });
  window.addEventListener("hashchange", mount);
  mount();
}

// Without a session the first call answers 401 and api.js shows the login page instead.
get("/api/session").then(main, (error) => {
  if (error.status !== 401) main();
});
