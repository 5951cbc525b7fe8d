// REST calls to the daemon. Errors carry the server's own message.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `method path` with an optional JSON body; resolves to the JSON answer. */
export async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the control plane is unreachable");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) {
    // No session (or an ended one): the login page, once; it never redirects back by itself.
    location.assign("/login");
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? `HTTP ${response.status}`);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const remove = (path) => call("DELETE", path);

/** `/api/instances/NAME/...` with the name escaped. */
export function instancePath(name, ...rest) {
  return ["/api/instances", encodeURIComponent(name), ...rest].join("/");
}

/** The WebSocket URL of a stream path on this daemon. */
export function streamUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}
