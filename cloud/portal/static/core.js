// Shared by the portal's modules: the DOM builder, formatting, the API client with the
// identity headers, and the caller's role. Plain ES module, no build step.

export const state = { config: { dev_identity: false }, identity: null, cleanup: [] };
export const $ = (sel, root = document) => root.querySelector(sel);

// --- helpers -----------------------------------------------------------------------------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// 24-hour throughout, as the charts' axes and the legend's time: a page that mixed "4:41 AM"
// in its journal with "04:41" on its axes made the reader convert. h23, not hour12: false,
// which some engines render as "24:05" after midnight.
export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { hourCycle: "h23" }) : "—");
export const fmtClock = (iso) => new Date(iso).toLocaleTimeString(undefined, { hourCycle: "h23" });
// A reading's time to the millisecond (readings come many a second), in the browser's zone.
export const fmtInstant = (s) => new Date(s * 1000).toLocaleString(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  second: "2-digit", fractionalSecondDigits: 3, hourCycle: "h23" });
// A time axis's tick labels (uPlot calls this with the ticks, in seconds, and their step):
// the time of day, 24-hour as the legend's (fmtInstant), to the precision the step needs;
// under the first tick and under the first of each new day, the date as this browser's
// locale writes it, as the page's other dates (7.12.2026, 12/7/2026, 2026/12/7), never one
// fixed order. A second's ticks carry their minute, and only a new day gets a second line
// (uPlot's own table puts the time of day under each new minute, over the date on a chart
// of a minute or less).
const DAY = 86400;
const dateOf = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "numeric", day: "numeric" });
const dayOf = new Intl.DateTimeFormat(undefined, { month: "numeric", day: "numeric" });
const monthOf = new Intl.DateTimeFormat(undefined, { month: "short" });
const two = (n) => String(n).padStart(2, "0");
// Decimals of a sub-second step: 0.5 -> 1, 0.25 -> 2, 0.001 -> 3 (uPlot's steps are such).
const decimals = (step) => Math.min(3, (String(+step.toFixed(3)).split(".")[1] || "").length);

function tickLabel(d, step) {
  if (step >= 365 * DAY) return String(d.getFullYear());
  if (step >= 28 * DAY) return monthOf.format(d);
  if (step >= DAY) return dayOf.format(d);
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  if (step >= 60) return step >= 3600 ? `${two(d.getHours())}:00` : hm;
  const hms = `${hm}:${two(d.getSeconds())}`;
  if (step >= 1) return hms;
  return `${hms}.${String(d.getMilliseconds()).padStart(3, "0").slice(0, decimals(step))}`;
}

export const TIME_AXIS = {
  space: 80,
  values: (u, splits, axisIdx, space, step) => {
    let last = null; // the year (steps of a day or more) or the date of the previous tick
    return splits.map((s) => {
      if (s === null || s === undefined) return null;
      const d = new Date(Math.round(s * 1000));
      const label = tickLabel(d, step);
      const under = step >= DAY ? (step >= 365 * DAY ? null : String(d.getFullYear())) : dateOf.format(d);
      const first = under !== last;
      last = under;
      return under !== null && first ? `${label}\n${under}` : label;
    });
  },
};

export const short = (id) => (id ? String(id).slice(0, 8) : "");
export const badge = (status) => h("span", { class: `badge ${status}` }, status);
export const fmtNum = (v) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toFixed(3));
// Sizes in SI units, as disks and transfers are counted.
export const fmtBytes = (n) => {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
};

export function onCleanup(fn) { state.cleanup.push(fn); }
export function runCleanup() { for (const fn of state.cleanup.splice(0)) try { fn(); } catch (e) { console.error(e); } }

export class ApiError extends Error {
  // errors: the problem's per-field [{field, reason}] (forms show each next to its field).
  constructor(status, detail, errors = []) { super(detail); this.status = status; this.errors = errors; }
}

export function identityHeaders() {
  const id = state.identity;
  if (!state.config.dev_identity || !id) return {};
  return { "X-User-Id": id.user, "X-Project-Id": id.project, "X-Project-Role": id.role };
}

export async function api(path, { method = "GET", body, params, headers } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const r = await fetch(url, {
    method,
    headers: { ...identityHeaders(), ...(body ? { "Content-Type": "application/json" } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) {
    let detail = r.statusText;
    let errors = [];
    try { const p = await r.json(); detail = p.detail || detail; errors = p.errors || []; } catch { /* not JSON */ }
    throw new ApiError(r.status, detail, errors);
  }
  return r.status === 204 ? null : r.json();
}

// Every item of a paginated list ({items, next_cursor}), following the cursors: the run page
// needs all of a run's sessions and all sensors, not the first page of them.
export async function apiAll(path, { params, ...opts } = {}) {
  const items = [];
  let cursor = null;
  do {
    const page = await api(path, { ...opts, params: { limit: 500, ...params, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

export function errorPanel(err) {
  const hint = err.status === 401 || err.status === 422
    ? (state.config.dev_identity
      ? "Set a development identity (top right)."
      : "This server takes who you are from the gateway in front of it: sign in there. "
        + "Trying benchlink on your own machine? Restart the server with --dev-identity "
        + "(a demo only: whoever reaches it acts as an owner).")
    : "";
  return h("div", { class: "panel error" }, `${err.message}`, hint ? h("div", { class: "muted" }, hint) : null);
}

// Each role sees the actions the API allows it (GET /api/v1/me says the role, behind a
// gateway too); a viewer sees none. The API checks every action anyway.
const RANK = { viewer: 1, editor: 2, owner: 3 };
export const can = (role) => (RANK[state.role] || 0) >= RANK[role];

// Series colours (sensors sharing a chart, runs compared): apart from the red of alarms and
// the amber of annotations, and from each other in print too.
export const PALETTE = ["#2563eb", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#475569", "#c026d3"];
export const colourOf = (i) => PALETTE[i % PALETTE.length];
// A colour of the palette, see-through (envelopes, bands).
export const fade = (hex, alpha) => {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
};

// uPlot wants each legend row to be a series; a min/max envelope is two series that the
// legend need not list (the value's row says what the chart shows).
export function hideLegendRows(plot, indexes) {
  const rows = plot.root.querySelectorAll(".u-legend .u-series");
  for (const i of indexes) if (rows[i]) rows[i].style.display = "none";
}
