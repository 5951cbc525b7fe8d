// Replaying a dead letter: asks first, then puts it back in its recipient's queue.

import { post } from "./api.js";
import { confirmDialog } from "./dialogs.js";

/** Ask, then replay `message`; resolves to true when it was replayed. */
export async function replayMessage(ctx, message) {
  const ok = await confirmDialog({
    title: `Replay ${message.message_type}?`,
    message:
      `The message from ${message.from_instance} goes back to ${message.to_instance}'s queue` +
      " with its attempts reset; it is delivered again.",
    confirmLabel: "Replay",
  });
  if (!ok) return false;
  try {
    await post(`/api/messages/${encodeURIComponent(message.id)}/replay`);
  } catch (error) {
    ctx.notify.error(error, "Replay");
    return false;
  }
  ctx.notify.success(`Replayed ${message.message_type} to ${message.to_instance}`);
  ctx.feeds.stats.refresh();
  return true;
}
