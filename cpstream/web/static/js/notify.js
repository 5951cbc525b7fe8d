// Notifications: errors stay until dismissed, confirmations fade by themselves.

import { h } from "./dom.js";

const SUCCESS_MS = 4000;

export class Notifier {
  constructor(region) {
    this.region = region;
  }

  /** An error from a REST call (or any Error), with the server's message. */
  error(error, context) {
    const title = context ? `${context} failed` : "Error";
    const status = error.status ? ` (${error.status})` : "";
    return this._show("error", `${title}${status}:`, error.message);
  }

  success(text) {
    const note = this._show("success", "", text);
    setTimeout(() => note.remove(), SUCCESS_MS);
    return note;
  }

  _show(kind, title, text) {
    const note = h(
      "div",
      { class: `note note-${kind}`, role: kind === "error" ? "alert" : "status" },
      h("div", { class: "note-text" }, title ? h("strong", {}, title, " ") : null, text),
      h(
        "button",
        {
          type: "button",
          class: "note-close",
          "aria-label": "Dismiss",
          title: "Dismiss",
          onclick: () => note.remove(),
        },
        "\u00d7",
      ),
    );
    this.region.append(note);
    return note;
  }
}
