// Modal dialogs on the native <dialog> element: focus is trapped, Escape cancels.

import { h } from "./dom.js";

function openDialog(dialog) {
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.showModal();
}

/** Ask for confirmation; resolves to true when confirmed. */
export function confirmDialog({ title, message, warning = null, confirmLabel, danger = false }) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "modal", "aria-labelledby": "dialog-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "dialog-title" }, title),
        h("p", {}, message),
        warning ? h("p", { class: "warning", role: "note" }, warning) : null,
        h(
          "div",
          { class: "modal-actions" },
          h("button", { type: "submit", value: "cancel", class: "btn" }, "Cancel"),
          h(
            "button",
            { type: "submit", value: "ok", class: danger ? "btn btn-danger" : "btn btn-primary" },
            confirmLabel,
          ),
        ),
      ),
    );
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"));
    openDialog(dialog);
    dialog.querySelector('button[value="cancel"]').focus();
  });
}

/**
 * A form in a modal. `submit(values)` may throw: the dialog then stays open
 * (the caller has shown the error) so the operator can correct the input.
 */
export function formDialog({ title, fields, submitLabel, submit }) {
  const stamp = Date.now().toString(36);
  const inputs = fields.map((field) => {
    const id = `field-${field.name}-${stamp}`;
    const hint = field.hint ? h("small", { id: `${id}-hint` }, field.hint) : null;
    return h(
      "div",
      { class: "field" },
      h("label", { for: id }, field.label),
      h("input", {
        id,
        name: field.name,
        type: field.type ?? "text",
        required: field.required ?? false,
        placeholder: field.placeholder ?? null,
        value: field.value ?? null,
        min: field.min ?? null,
        max: field.max ?? null,
        "aria-describedby": hint ? `${id}-hint` : null,
        autocomplete: "off",
        spellcheck: "false",
      }),
      hint,
    );
  });
  const save = h("button", { type: "submit", class: "btn btn-primary" }, submitLabel);
  const form = h(
    "form",
    {},
    h("h2", { id: "dialog-title" }, title),
    inputs,
    h(
      "div",
      { class: "modal-actions" },
      h("button", { type: "button", class: "btn", onclick: () => dialog.close() }, "Cancel"),
      save,
    ),
  );
  const dialog = h("dialog", { class: "modal", "aria-labelledby": "dialog-title" }, form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    save.disabled = true;
    try {
      await submit(values);
      dialog.close();
    } catch {
      save.disabled = false;
    }
  });
  openDialog(dialog);
  form.querySelector("input").focus();
  return dialog;
}
