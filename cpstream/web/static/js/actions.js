// Instance actions shared by the dashboard cards and the instance page:
// confirmations, the clone and create forms, the REST calls and their errors.

import { instancePath, post, remove } from "./api.js";
import { confirmDialog, formDialog } from "./dialogs.js";
import { h } from "./dom.js";
import { isRunning, splitCommand } from "./model.js";

export const ACTION_LABELS = Object.freeze({
  start: "Start",
  stop: "Stop",
  restart: "Restart",
  archive: "Archive",
  unarchive: "Unarchive",
  clone: "Clone",
  delete: "Delete",
});

const PORT_FIELD = Object.freeze({
  name: "port",
  label: "Port",
  type: "number",
  min: 1024,
  max: 65535,
  hint: "empty: the next free port",
});

function optionalPort(text) {
  const value = String(text ?? "").trim();
  return value === "" ? undefined : Number(value);
}

/** Run `action` on `instance`, asking first where the action deserves it. */
export async function perform(action, instance, ctx) {
  const name = instance.name;
  const run = async (what, request) => {
    try {
      return await request();
    } catch (error) {
      ctx.notify.error(error, `${what} ${name}`);
      throw error;
    }
  };
  switch (action) {
    case "start":
    case "stop":
    case "restart":
    case "unarchive":
      await run(ACTION_LABELS[action], () => post(instancePath(name, action))).catch(() => {});
      break;
    case "archive": {
      const ok = await confirmDialog({
        title: `Archive ${name}?`,
        message: "Archiving frees its name and port; its logs and messages are kept.",
        warning: isRunning(instance) ? `${name} is ${instance.status}: archiving stops it.` : null,
        confirmLabel: "Archive",
        danger: isRunning(instance),
      });
      if (ok) await run("Archive", () => post(instancePath(name, "archive"))).catch(() => {});
      break;
    }
    case "delete": {
      const ok = await confirmDialog({
        title: `Delete ${name}?`,
        message: `The archived instance ${name} and its record are removed for good.`,
        confirmLabel: "Delete",
        danger: true,
      });
      if (ok) {
        await run("Delete", () => remove(instancePath(name)))
          .then(() => ctx.notify.success(`Deleted ${name}`))
          .catch(() => {});
      }
      break;
    }
    case "clone":
      formDialog({
        title: `Clone ${name}`,
        submitLabel: "Clone",
        fields: [
          { name: "name", label: "Name", required: true, value: `${name}-copy` },
          PORT_FIELD,
        ],
        submit: async (values) => {
          const body = { name: values.name.trim(), port: optionalPort(values.port) };
          const made = await run("Clone", () => post(instancePath(name, "clone"), body));
          ctx.notify.success(`Cloned ${name} as ${made.name}`);
        },
      });
      break;
    default:
      throw new Error(`unknown action ${action}`);
  }
  ctx.refresh?.();
}

/** The "New instance" form. */
export function createInstance(ctx) {
  formDialog({
    title: "New instance",
    submitLabel: "Create",
    fields: [
      { name: "name", label: "Name", required: true, placeholder: "agent-3" },
      PORT_FIELD,
      {
        name: "command",
        label: "Command",
        placeholder: "python -m cpstream.agent",
        hint: "empty: the demo agent",
      },
    ],
    submit: async (values) => {
      const body = { name: values.name.trim(), port: optionalPort(values.port) };
      try {
        const command = values.command.trim();
        if (command) body.command = splitCommand(command);
      } catch (error) {
        ctx.notify.error(error, "Create instance");
        throw error;
      }
      try {
        const made = await post("/api/instances", body);
        ctx.notify.success(`Created ${made.name}`);
      } catch (error) {
        ctx.notify.error(error, `Create ${body.name}`);
        throw error;
      }
      ctx.refresh?.();
    },
  });
}

/** One button per action, each bound to `perform`; `update` shows only the applicable ones. */
export function actionButtons(ctx, getInstance) {
  const buttons = {};
  for (const [action, label] of Object.entries(ACTION_LABELS)) {
    const button = h(
      "button",
      {
        type: "button",
        class: `btn btn-sm${action === "delete" || action === "archive" ? " btn-warn" : ""}`,
        dataset: { action },
        hidden: true,
      },
      label,
    );
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await perform(action, getInstance(), ctx);
      } finally {
        button.disabled = false;
      }
    });
    buttons[action] = button;
  }
  const group = { class: "actions", role: "group", "aria-label": "Actions" };
  return {
    el: h("div", group, Object.values(buttons)),
    update(allowed, name) {
      for (const [action, button] of Object.entries(buttons)) {
        button.hidden = !allowed.includes(action);
        button.setAttribute("aria-label", `${ACTION_LABELS[action]} ${name}`);
      }
    },
  };
}
