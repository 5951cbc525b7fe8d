// Pure view-model helpers: applying stream frames to local state, formatting,
// parsing operator input. No DOM, so Node tests cover them.

export const MAX_LOG_LINES = 5000;
export const MAX_MESSAGE_ROWS = 1000;

export const MAX_HISTORY = 200;

const INSTANCE_FIELDS = [
  "id",
  "name",
  "status",
  "port",
  "pid",
  "started_at",
  "archived_at",
  "usage",
  "restarts",
  "last_exit",
];
const INSTANCE_DEFAULTS = Object.freeze({
  pid: null,
  started_at: null,
  archived_at: null,
  usage: null,
  restarts: 0,
  last_exit: null,
});

/** The fields of an instance that `source` carries, over `base` (defaults, or what was known). */
function instanceFrom(source, base = INSTANCE_DEFAULTS) {
  const instance = { ...base };
  for (const key of INSTANCE_FIELDS) if (key in source) instance[key] = source[key];
  return instance;
}

// Statuses with a live process group: only their latest usage sample means something.
export const LIVE_STATUSES = new Set(["starting", "running", "unhealthy", "stopping"]);

/**
 * A status change: the new status and pid, how the process ended when it did
 * (frames from before restarts were counted lack both: unchanged), and no
 * usage once nothing runs (the next `usage_changed` brings a live one's).
 */
function changeStatus(known, frame) {
  known.pid = frame.pid;
  known.started_at = frame.started_at ?? known.started_at;
  known.status = known.archived_at ? "archived" : frame.status;
  if (Number.isInteger(frame.restarts)) known.restarts = frame.restarts;
  if (frame.last_exit !== undefined) known.last_exit = frame.last_exit;
  else if (frame.exit) known.last_exit = { ...frame.exit, at: frame.timestamp ?? null };
  if (!LIVE_STATUSES.has(frame.status)) known.usage = null;
}

/** Apply one `/ws/instances` frame to `instances` (a Map by id); returns the Map. */
export function applyInstanceFrame(instances, frame, includeArchived) {
  const known = frame.id !== undefined ? instances.get(frame.id) : undefined;
  switch (frame.type) {
    case "snapshot":
      instances.clear();
      for (const item of frame.instances) instances.set(item.id, instanceFrom(item));
      break;
    case "instance_created":
      instances.set(frame.id, instanceFrom(frame));
      break;
    case "status_changed":
      if (known) changeStatus(known, frame);
      break;
    case "usage_changed":
      // Samples, not history: no seq, nothing to resume; the latest one is the usage.
      for (const entry of frame.instances ?? []) {
        const instance = instances.get(entry.id);
        if (instance) instance.usage = entry.usage;
      }
      break;
    case "instance_archived":
      if (known && includeArchived) {
        known.archived_at = frame.timestamp ?? new Date().toISOString();
        known.status = "archived";
      } else {
        instances.delete(frame.id);
      }
      break;
    case "instance_unarchived": {
      const back = instanceFrom(frame, known ?? INSTANCE_DEFAULTS);
      instances.set(frame.id, { ...back, archived_at: null });
      break;
    }
    case "instance_deleted":
      instances.delete(frame.id);
      break;
    default:
      break;
  }
  return instances;
}

/** Instances in display order: active ones by name, then archived ones by name. */
export function sortedInstances(instances) {
  return [...instances.values()].sort(
    (a, b) => Boolean(a.archived_at) - Boolean(b.archived_at) || a.name.localeCompare(b.name),
  );
}

const RUNS = new Set(["starting", "running", "unhealthy"]);
export const FAILED = new Set(["crashed", "crash_loop"]);
const DOWN = new Set(["stopped", ...FAILED]);

/** Which actions make sense for an instance in its current state. */
export function actionsFor(instance) {
  if (instance.archived_at || instance.status === "archived") {
    return ["unarchive", "clone", "delete"];
  }
  const actions = [];
  if (DOWN.has(instance.status)) actions.push("start");
  if (RUNS.has(instance.status)) actions.push("stop");
  if (RUNS.has(instance.status) || FAILED.has(instance.status)) actions.push("restart");
  actions.push("archive", "clone");
  return actions;
}

/** Whether stopping is part of archiving this instance (the confirmation says so). */
export function isRunning(instance) {
  return RUNS.has(instance.status) || instance.status === "stopping";
}

/** "45s", "3m 12s", "2h 05m", "3d 4h" since an ISO time; "" when not running. */
export function uptime(startedAt, nowMs) {
  if (!startedAt) return "";
  const started = Date.parse(startedAt);
  if (Number.isNaN(started)) return "";
  const s = Math.max(0, Math.floor((nowMs - started) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/**
 * An argv list from a command line: whitespace separates words, single and
 * double quotes group them, a backslash escapes the next character. Throws on
 * an unterminated quote.
 */
export function splitCommand(text) {
  const words = [];
  let word = "";
  let inWord = false;
  let quote = null;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < text.length) word += text[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < text.length) {
      word += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) throw new SyntaxError(`unterminated ${quote} quote in the command`);
  if (inWord) words.push(word);
  return words;
}

/**
 * The lines of a freshly polled tail that come after what is already shown.
 * `gap` is true when the two do not overlap (lines were missed or the file
 * started over), in which case every fetched line is new.
 */
export function newTailLines(known, fetched, window = 50) {
  if (known.length === 0 || fetched.length === 0) return { lines: fetched.slice(), gap: false };
  for (let end = fetched.length; end > 0; end -= 1) {
    const size = Math.min(end, known.length, window);
    let same = true;
    for (let k = 1; k <= size && same; k += 1) {
      same = fetched[end - k] === known[known.length - k];
    }
    if (same) return { lines: fetched.slice(end), gap: false };
  }
  return { lines: fetched.slice(), gap: true };
}

/** A REST message (polling fallback) in the shape of a `message_event` frame. */
export function eventFromMessage(message) {
  return {
    message_id: message.id,
    event: message.status,
    from: message.from_instance,
    to: message.to_instance,
    message_type: message.message_type,
    correlation_id: message.correlation_id,
    detail: null,
    timestamp: message.updated_at,
  };
}

/** The hash route for the messages page with these filters. */
export function messagesHash(filters) {
  const query = new URLSearchParams();
  for (const key of ["instance", "correlation_id"]) {
    if (filters[key]) query.set(key, filters[key]);
  }
  const text = query.toString();
  return text ? `#/messages?${text}` : "#/messages";
}

/** The hash route of one message's page. */
export function messageHash(id) {
  return `#/messages/${encodeURIComponent(id)}`;
}

export const DEAD_LETTERS_HASH = "#/messages/dead-letters";

/** The view and its parameters for a location hash. */
export function parseRoute(hash) {
  const path = hash.replace(/^#/, "") || "/";
  const [route, queryText = ""] = path.split("?", 2);
  const query = Object.fromEntries(new URLSearchParams(queryText));
  const instance = route.match(/^\/instances\/([^/]+)\/?$/);
  if (instance) return { view: "instance", name: decodeURIComponent(instance[1]), query };
  if (/^\/messages\/?$/.test(route)) return { view: "messages", tab: "events", query };
  if (/^\/messages\/dead-letters\/?$/.test(route)) {
    return { view: "messages", tab: "dead_letters", query };
  }
  const message = route.match(/^\/messages\/([^/]+)\/?$/);
  if (message) return { view: "message", id: decodeURIComponent(message[1]), query };
  if (route === "/" || route === "") return { view: "dashboard", query };
  return { view: "not_found", query };
}

// Instance statuses in the order the header counts them.
export const STATUS_ORDER = Object.freeze([
  "running",
  "starting",
  "unhealthy",
  "stopping",
  "crashed",
  "crash_loop",
  "stopped",
]);

/** `[[status, count], ...]` of the instances that are not archived, in `STATUS_ORDER`. */
export function statusCounts(instances) {
  const counts = new Map();
  for (const instance of instances.values()) {
    if (instance.archived_at || instance.status === "archived") continue;
    counts.set(instance.status, (counts.get(instance.status) ?? 0) + 1);
  }
  const known = STATUS_ORDER.filter((s) => counts.has(s)).map((s) => [s, counts.get(s)]);
  const other = [...counts].filter(([s]) => !STATUS_ORDER.includes(s)).sort();
  return [...known, ...other];
}

// Events one change appends together share its timestamp; these end such a change.
const CONCLUDING = new Set(["retry_scheduled", "dead_lettered"]);

/**
 * A message's timeline with `incoming` events merged in (REST events or
 * `message_event` frames): one entry per event and time, oldest first (of two
 * at the same time, the failure before what it led to).
 */
export function mergeTimeline(known, incoming) {
  const byKey = new Map();
  for (const e of [...known, ...incoming]) {
    const entry = { event: e.event, detail: e.detail ?? null, timestamp: e.timestamp };
    byKey.set(`${entry.event}\u0000${entry.timestamp}`, entry);
  }
  const rank = (e) => (CONCLUDING.has(e.event) ? 1 : 0);
  return [...byKey.values()].sort((a, b) => {
    if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? -1 : 1;
    return rank(a) - rank(b);
  });
}

/**
 * An instance's lifecycle history with `incoming` event frames merged in: one
 * entry per `seq`, newest first, at most `max`.
 */
export function mergeHistory(known, incoming, max = MAX_HISTORY) {
  const bySeq = new Map();
  for (const e of [...known, ...incoming]) if (Number.isInteger(e.seq)) bySeq.set(e.seq, e);
  return [...bySeq.values()].sort((a, b) => b.seq - a.seq).slice(0, max);
}

/**
 * Why a message is a dead letter, from its timeline (oldest first): the last
 * `dead_lettered` reason and the failure detail before it, as
 * "retries exhausted: could not parse"; "" when the timeline does not say.
 */
export function failureOf(events) {
  let last = -1;
  for (let i = events.length - 1; i >= 0 && last < 0; i -= 1) {
    if (events[i].event === "dead_lettered") last = i;
  }
  if (last < 0) return "";
  const reason = events[last].detail ?? "";
  let cause = "";
  for (let i = last - 1; i >= 0 && !cause; i -= 1) {
    const e = events[i];
    if (e.event === "replayed" || e.event === "dead_lettered") break;
    if ((e.event === "failed" || e.event === "expired") && e.detail) cause = e.detail;
  }
  return [reason, cause].filter(Boolean).join(": ");
}
