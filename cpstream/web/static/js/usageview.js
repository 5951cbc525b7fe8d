// What an instance costs, as shown on its card and its page: usage figures,
// restarts, the last exit reason, and the CPU and memory sparklines.

import { clock, h } from "./dom.js";
import { LIVE_STATUSES } from "./model.js";
import { Sparkline } from "./sparkline.js";
import { exitIsBad, exitReason, formatBytes, formatCpu } from "./usage.js";

const DASH = "\u2014";

const count = (n) => (Number.isInteger(n) ? String(n) : DASH);
const live = (instance, read) =>
  LIVE_STATUSES.has(instance.status) && instance.usage ? read(instance.usage) : DASH;

const FACTS = Object.freeze({
  cpu: ["CPU", (i) => live(i, (u) => formatCpu(u.cpu))],
  rss: ["Memory", (i) => live(i, (u) => formatBytes(u.rss))],
  fds: ["Open files", (i) => live(i, (u) => count(u.fds))],
  threads: ["Threads", (i) => live(i, (u) => count(u.threads))],
  children: ["Children", (i) => live(i, (u) => count(u.children))],
  restarts: ["Restarts", (i) => count(i.restarts ?? 0)],
  last_exit: ["Last exit", (i) => exitReason(i.last_exit) || DASH],
});

/** `<dt>`/`<dd>` pairs for the facts named by `keys`; `update(instance)` refills them. */
export function usageFacts(keys) {
  const cells = keys.map((key) => {
    const dd = h("dd", { class: `fact-${key.replace("_", "-")}` });
    return { key, dt: h("dt", {}, FACTS[key][0]), dd };
  });
  return {
    rows: cells.map(({ dt, dd }) => [dt, dd]),
    update(instance) {
      for (const { key, dd } of cells) {
        const text = FACTS[key][1](instance);
        if (dd.textContent !== text) dd.textContent = text; // every 2 s on every card
        if (key === "last_exit") {
          const at = instance.last_exit?.at;
          dd.title = at ? `at ${clock(at)}` : "";
          dd.classList.toggle("bad", exitIsBad(instance));
        }
      }
    },
  };
}

/** The CPU and memory sparklines of instance `id`, drawn from `history`. */
export class UsageSparks {
  constructor(history, id) {
    this.history = history;
    this.id = id;
    const cpuScale = { floor: 100, fromZero: true };
    this.cpu = new Sparkline({ key: "cpu", label: "CPU", scale: cpuScale, format: formatCpu });
    const rssScale = { fromZero: false };
    this.rss = new Sparkline({ key: "rss", label: "Memory", scale: rssScale, format: formatBytes });
    this.el = h("div", { class: "sparks" }, this.cpu.el, this.rss.el);
    this.update();
  }

  update() {
    const points = this.history.points(this.id);
    this.cpu.update(points);
    this.rss.update(points);
  }
}
