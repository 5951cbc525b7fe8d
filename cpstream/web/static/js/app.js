// The page shell: hash routing between the views, the streams each view
// opens, and the header indicator that tells which mode is active.

import { get, post, streamUrl } from "./api.js";
import { mountDashboard } from "./dashboard.js";
import { h } from "./dom.js";
import { mountInstance } from "./instance.js";
import { Mode, POLL_MS, overallMode } from "./live.js";
import { mountMessages } from "./messages.js";
import { parseRoute } from "./model.js";
import { Notifier } from "./notify.js";
import { LiveStream, Poller } from "./stream.js";

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

function main() {
  const view = document.getElementById("view");
  const indicator = new Indicator(document.getElementById("mode"));
  const notify = new Notifier(document.getElementById("notes"));
  const prefs = { includeArchived: false };
  let teardown = () => {};

  const mount = () => {
    teardown();
    const streams = [];
    const route = parseRoute(location.hash);
    const ctx = {
      notify,
      prefs,
      stream(path, handlers) {
        const stream = new LiveStream(streamUrl(path), {
          ...handlers,
          onMode: () => indicator.render(),
        });
        streams.push(stream);
        indicator.streams.add(stream);
        return stream.start();
      },
    };
    view.replaceChildren();
    let unmount = () => {};
    if (route.view === "dashboard") unmount = mountDashboard(view, ctx);
    else if (route.view === "instance") unmount = mountInstance(view, ctx, route.name);
    else if (route.view === "messages") unmount = mountMessages(view, ctx, route.query);
    else view.append(h("p", { class: "empty" }, "No such page. ", h("a", { href: "#/" }, "Home")));
    const section = route.view === "instance" ? "dashboard" : route.view;
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
