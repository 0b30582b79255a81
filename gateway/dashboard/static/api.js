// Shared helpers of the dashboard's pages: calls to the gateway's public API with the session
// cookie (and the session's CSRF token on writes), safe DOM building (text only, never HTML),
// formatting, and the capability switches of /v1/meta/features.

export const csrf = document.body.dataset.csrf || "";

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// Call `path` of this origin's API; JSON in and out. A 401 means the session ended (signed out
// elsewhere or expired): reload, which shows the sign-in form.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (method !== "GET") {
    headers["x-csrf-token"] = csrf;
    headers["content-type"] = "application/json";
  }
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const type = response.headers.get("content-type") || "";
  const doc = type.includes("json") ? await response.json() : null;
  if (response.status === 401) {
    window.location.reload();
  }
  if (!response.ok) throw new ApiError(response.status, doc);
  return doc;
}

// `api(path)`, or null when the endpoint is not there (404) or its capability is off (403, 503):
// the part of the page that needs it is hidden.
export async function optional(path, options) {
  try {
    return await api(path, options);
  } catch (error) {
    if (error instanceof ApiError && [403, 404, 405, 501, 503].includes(error.status)) return null;
    throw error;
  }
}

// The capabilities of /v1/meta/features ({name: bool} at the top or under `features`), or null
// when the gateway has no such endpoint (then only what every gateway serves is shown).
export async function features() {
  const doc = await optional("/v1/meta/features");
  if (!doc || typeof doc !== "object") return null;
  return typeof doc.features === "object" && doc.features !== null ? doc.features : doc;
}

// Whether capability `name` may be shown: off only when /v1/meta/features says false; unknown
// capabilities are probed (their endpoint's 404 hides them).
export function isOn(feats, name) {
  if (!feats) return true;
  const value = feats[name];
  if (value === undefined) return true;
  if (typeof value === "object" && value !== null) return value.enabled !== false;
  return value !== false;
}

// An element with attributes and children; strings become text nodes (never parsed as HTML).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function say(node, text, kind = "") {
  node.textContent = text;
  node.className = kind;
}

// Seconds as "1 h 05 min", "12 min 30 s", "45 s", "0.412 s" (the API's *_seconds fields).
export function fmtSeconds(total) {
  const exact = Math.abs(Number(total) || 0);
  const sign = Number(total) < 0 ? "−" : "";
  if (exact < 10 && exact !== Math.floor(exact)) return `${sign}${Number(exact.toFixed(3))} s`;
  const s = Math.floor(exact);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h) return `${sign}${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${sign}${m} min${r ? ` ${r} s` : ""}`;
  return `${sign}${r} s`;
}

// An amount in the deployment's unit (`s`: AI time; a currency code; `tokens`).
export function fmtAmount(value, unit) {
  if (unit === "s") return fmtSeconds(value);
  const n = Number(value) || 0;
  if (unit === "tokens") return `${n.toLocaleString("en")} tokens`;
  return `${n.toLocaleString("en", { maximumFractionDigits: 6 })} ${unit}`;
}

export function fmtTime(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$|:\d\dZ$/, " UTC");
}

// A fresh idempotency key (the admin API's pattern: 8–200 of [A-Za-z0-9:_.-]).
export function idempotencyKey(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `${prefix}:${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// Only http(s) URLs are followed (a Checkout or portal URL from the API).
export function safeRedirect(url) {
  const parsed = new URL(url, window.location.href);
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") throw new Error("refused URL");
  window.location.assign(parsed.href);
}

export function problemText(error) {
  return error instanceof ApiError ? error.message : "The request failed; check the connection.";
}
