// The console's one way to the gateway. Every request carries the session cookie
// (same-origin) and the header x-tollway-console: 1, which the gateway requires before
// it accepts the cookie in place of a key; the key itself is never stored by the page.

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `The gateway answered ${status}.`);
    this.status = status;
    this.code = err.code || null;
  }
}

let clockOffsetMs = 0; // the gateway's clock minus ours, from its Date headers

/** The gateway's time now, in epoch seconds (as its ledger records it). */
export function gatewayNow() {
  return (Date.now() + clockOffsetMs) / 1000;
}

function learnClock(response) {
  const date = Date.parse(response.headers.get("date") || "");
  if (Number.isFinite(date)) clockOffsetMs = date - Date.now();
}

/** fetch with the console's header; the answer as it came (streams read it raw). */
export async function send(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = {
    method,
    signal,
    credentials: "same-origin",
    headers: { "x-tollway-console": "1", ...headers },
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const response = await fetch(path, init);
  learnClock(response);
  if (response.status === 401) window.dispatchEvent(new CustomEvent("tollway:signed-out"));
  return response;
}

/** A JSON call: the decoded body, or an ApiError with the gateway's message. */
export async function api(path, options) {
  const response = await send(path, options);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const text = q.toString();
  return text ? "?" + text : "";
}
