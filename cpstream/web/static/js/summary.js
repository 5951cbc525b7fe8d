// The header summary: instances by status (from the shared instances stream),
// messages in flight and dead letters (from the message counts).

import { h } from "./dom.js";
import { DEAD_LETTERS_HASH, statusCounts } from "./model.js";

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

/** Fill `el` and keep it current; returns the function that stops it. */
export function mountSummary(el, { instances, stats }) {
  const byStatus = h("span", { class: "summary-statuses" });
  const inFlight = h("a", { class: "pill", href: "#/messages", "data-count": "in-flight" });
  const dead = h("a", { class: "pill", href: DEAD_LETTERS_HASH, "data-count": "dead-letters" });
  el.replaceChildren(byStatus, inFlight, dead);

  const renderInstances = () => {
    const counts = statusCounts(instances.instances);
    byStatus.replaceChildren(
      ...(counts.length
        ? counts.map(([status, n]) =>
            h("span", { class: `pill status-${status}`, dataset: { status } }, `${n} ${status}`),
          )
        : [h("span", { class: "pill" }, instances.ready ? "no instances" : "\u2026")]),
    );
  };
  const renderStats = (value) => {
    const flying = value?.in_flight;
    const buried = value?.dead_letter;
    inFlight.textContent = Number.isInteger(flying) ? `${flying} in flight` : "\u2026 in flight";
    dead.textContent = Number.isInteger(buried)
      ? plural(buried, "dead letter", "dead letters")
      : "\u2026 dead letters";
    dead.classList.toggle("pill-alert", buried > 0);
  };
  renderInstances();
  renderStats(stats.value);
  const stops = [instances.subscribe(renderInstances), stats.subscribe(renderStats)];
  return () => stops.forEach((stop) => stop());
}
