// Pure view-model helpers: applying stream frames to local state, formatting,
// parsing operator input. No DOM, so Node tests cover them.

export const MAX_LOG_LINES = 5000;
export const MAX_MESSAGE_ROWS = 1000;

const INSTANCE_FIELDS = ["id", "name", "status", "port", "pid", "started_at", "archived_at"];

function instanceFrom(source) {
  const instance = { pid: null, started_at: null, archived_at: null };
  for (const key of INSTANCE_FIELDS) if (key in source) instance[key] = source[key];
  return instance;
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
      if (known) {
        known.pid = frame.pid;
        known.started_at = frame.started_at ?? known.started_at;
        known.status = known.archived_at ? "archived" : frame.status;
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
    case "instance_unarchived":
      instances.set(frame.id, { ...(known ?? {}), ...instanceFrom(frame), archived_at: null });
      break;
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
const FAILED = new Set(["crashed", "crash_loop"]);
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

/** The view and its parameters for a location hash. */
export function parseRoute(hash) {
  const path = hash.replace(/^#/, "") || "/";
  const [route, queryText = ""] = path.split("?", 2);
  const query = Object.fromEntries(new URLSearchParams(queryText));
  const instance = route.match(/^\/instances\/([^/]+)\/?$/);
  if (instance) return { view: "instance", name: decodeURIComponent(instance[1]), query };
  if (/^\/messages\/?$/.test(route)) return { view: "messages", query };
  if (route === "/" || route === "") return { view: "dashboard", query };
  return { view: "not_found", query };
}
