// benchlink portal: plain ES module, no build step. Talks to the same REST API as everyone.
// Identity: behind a gateway the gateway adds the X-* headers; in development identity mode
// (server setting BENCHLINK_DEV_IDENTITY) this page stores them in localStorage and sends them.

import {
  state, $, h, fmtTime, fmtClock, short, badge, fmtNum, fmtBytes, onCleanup, runCleanup, ApiError, identityHeaders,
  api, apiAll, errorPanel, can,
} from "./core.js";
import { showTelemetry } from "./charts.js";
import { reprocessPanel } from "./reprocess.js";
import { RunAlarms, showAlarms } from "./alarms.js";
import { viewCompare } from "./compare.js";

const IDENTITY_KEY = "benchlink.identity";
const JOURNAL_POLL_MS = 2000;
const METRICS_POLL_MS = 4000;
// A running session's completeness line follows its batches (the journal reports them), at
// most this often: the counts move with every batch, the line needs to be current, not exact.
const COMPLETENESS_REFRESH_MS = 3000;

// --- identity ----------------------------------------------------------------------------

function loadIdentity() {
  try { state.identity = JSON.parse(localStorage.getItem(IDENTITY_KEY)); } catch { state.identity = null; }
}

function saveIdentity(identity) {
  state.identity = identity;
  localStorage.setItem(IDENTITY_KEY, JSON.stringify(identity));
}

// The server's default identity (make demo: the demo project's owner) is used until the
// person picks another in the dialog; it is looked up afresh on every load, so a new demo
// database (another project id) is followed.
async function applyDefaultIdentity() {
  const def = state.config.default_identity;
  if (!state.config.dev_identity || !def || (state.identity && state.identity.source !== "default")) return;
  const projects = await apiAll("/api/v1/projects", { headers: { "X-User-Id": def.user } });
  const wanted = def.project
    ? projects.find((p) => p.id === def.project || p.name === def.project)
    : (projects.length === 1 ? projects[0] : null);
  if (!wanted) { console.warn("default identity: no such project for", def.user, def.project); return; }
  saveIdentity({ user: def.user, project: wanted.id, role: def.role, projectName: wanted.name, source: "default" });
}

function renderIdentity() {
  const box = $("#identity");
  box.replaceChildren();
  if (!state.config.dev_identity) {
    box.append(h("span", {}, "identity from gateway"));
    return;
  }
  $("#dev-banner").hidden = false;
  const id = state.identity;
  box.append(
    h("span", { class: "dev-chip", title: "development identity mode" }, "DEV IDENTITY"),
    id ? h("span", { id: "identity-summary" }, `${id.projectName || short(id.project)} · ${id.role} · user ${short(id.user)}`)
       : h("span", {}, "no identity set"),
    h("button", { class: "secondary", id: "identity-change", onclick: openIdentityDialog }, id ? "Change" : "Set identity"),
  );
}

function openIdentityDialog() {
  const form = $("#identity-form");
  const id = state.identity || {};
  form.user.value = id.user || "";
  form.project.value = id.project || "";
  form.role.value = id.role || (state.config.default_identity || {}).role || "owner";
  $("#identity-error").hidden = true;
  $("#identity-dialog").showModal();
}

function setupIdentityDialog() {
  const form = $("#identity-form");
  const err = $("#identity-error");
  $("#load-projects").addEventListener("click", async () => {
    err.hidden = true;
    try {
      const projects = await apiAll("/api/v1/projects", { headers: { "X-User-Id": form.user.value.trim() } });
      form.project_select.replaceChildren(
        h("option", { value: "" }, projects.length ? "— choose a project —" : "— no projects for this user —"),
        ...projects.map((p) => h("option", { value: p.id }, p.name)),
      );
    } catch (e) { err.textContent = e.message; err.hidden = false; }
  });
  form.project_select.addEventListener("change", () => { form.project.value = form.project_select.value; });
  form.addEventListener("submit", (ev) => {
    const opt = form.project_select.selectedOptions[0];
    const projectName = opt && opt.value === form.project.value.trim() ? opt.textContent : null;
    saveIdentity({ user: form.user.value.trim(), project: form.project.value.trim(), role: form.role.value, projectName, source: "dialog" });
    renderIdentity();
    loadRole().finally(route);
  });
}

// --- routing -----------------------------------------------------------------------------

const routes = [
  [/^\/$/, viewExperiments, "experiments"],
  [/^\/tests$/, viewTests, "tests"],
  [/^\/devices$/, viewDevices, "devices"],
  [/^\/experiments\/([0-9a-f-]{36})$/, viewExperiment, "experiments"],
  [/^\/runs\/([0-9a-f-]{36})$/, viewRun, "experiments"],
  [/^\/sensors$/, viewSensors, "sensors"],
  [/^\/sensors\/([0-9a-f-]{36})$/, viewSensor, "sensors"],
  [/^\/deleted$/, viewDeleted, "deleted"],
  [/^\/compare$/, viewCompare, "experiments"],
];

function navigate(url) { history.pushState({}, "", url); route(); }

async function route() {
  runCleanup();
  const view = $("#view");
  for (const [re, fn, nav] of routes) {
    const m = location.pathname.match(re);
    if (!m) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    if (state.config.dev_identity && !state.identity) {
      view.replaceChildren(h("div", { class: "panel empty" }, "Set a development identity to browse a project. ",
        h("button", { onclick: openIdentityDialog }, "Set identity")));
      return;
    }
    try { await fn(view, ...m.slice(1)); } catch (e) { console.error(e); view.replaceChildren(errorPanel(e)); }
    titleFromHeading(view);
    showPendingNotice();
    return;
  }
  view.replaceChildren(h("div", { class: "panel empty" }, "No such page."));
}

// The tab says which run or sensor it shows (several tabs open side by side): the page's
// heading without its badges.
function titleFromHeading(view) {
  const first = view.querySelector("h1")?.firstChild;
  const name = first && first.nodeType === Node.TEXT_NODE ? first.textContent.trim() : "";
  document.title = name ? `${name} · benchlink` : "benchlink";
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-link]");
  if (a?.getAttribute("aria-disabled") === "true") { ev.preventDefault(); return; }
  if (a && !ev.metaKey && !ev.ctrlKey && a.origin === location.origin) { ev.preventDefault(); navigate(a.pathname + a.search); }
});
window.addEventListener("popstate", route);

// --- experiments -------------------------------------------------------------------------

async function viewExperiments(view) {
  const params = new URLSearchParams(location.search);
  const q = h("input", { type: "search", placeholder: "Search name or description", value: params.get("q") || "", id: "exp-search" });
  const tag = h("input", { placeholder: "Tag", value: params.get("tag") || "", id: "exp-tag", size: 12 });
  const status = h("select", { id: "exp-status" },
    ...["", "active", "archived"].map((s) => h("option", { value: s, selected: params.get("status") === s }, s || "any status")));
  const archived = h("input", { type: "checkbox", id: "exp-archived", checked: params.get("archived") === "1" });
  const body = h("tbody");
  const table = h("table", {}, h("thead", {}, h("tr", {}, ["Experiment", "Tags", "Status", "Created"].map((t) => h("th", {}, t)))), body);
  view.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Experiments"), h("div", { class: "muted" }, `Experiments of ${state.identity && state.identity.projectName ? state.identity.projectName : "the current project"}`)),
      experimentListActions()),
    h("div", { class: "panel" }, h("div", { class: "filters" }, q, tag, status, h("label", { class: "check" }, archived, "show archived")), table),
  );
  let timer;
  async function load() {
    const p = { q: q.value.trim(), tag: tag.value.trim() || undefined, status: status.value, include_archived: archived.checked || status.value === "archived" ? "true" : undefined, limit: 200 };
    const qs = new URLSearchParams({ ...(p.q && { q: p.q }), ...(p.tag && { tag: p.tag }), ...(p.status && { status: p.status }), ...(archived.checked && { archived: "1" }) });
    history.replaceState({}, "", "/" + (qs.toString() ? "?" + qs : ""));
    const page = await api("/api/v1/experiments", { params: p });
    body.replaceChildren(...page.items.map((e) => h("tr", { class: "clickable", dataset: { experimentId: e.id }, onclick: () => navigate(`/experiments/${e.id}`) },
      h("td", {}, h("a", { href: `/experiments/${e.id}`, "data-link": true }, e.name), e.description ? h("div", { class: "muted" }, e.description) : null),
      h("td", {}, e.tags.map((t) => h("span", { class: "chip tag" }, t))),
      h("td", {}, badge(e.status)),
      h("td", { class: "muted" }, fmtTime(e.created_at)),
    )));
    if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No experiments match.")));
  }
  const reload = () => { clearTimeout(timer); timer = setTimeout(() => load().catch(console.error), 200); };
  [q, tag].forEach((el) => el.addEventListener("input", reload));
  [status, archived].forEach((el) => el.addEventListener("change", reload));
  await load();
}

async function viewExperiment(view, id) {
  const [exp, runs] = await Promise.all([
    api(`/api/v1/experiments/${id}`),
    api(`/api/v1/experiments/${id}/runs`, { params: { limit: 200 } }),
  ]);
  const picker = new RunPicker(runs.items);
  const rows = runs.items.map((r) => h("tr", { class: "clickable", dataset: { runId: r.id }, onclick: () => navigate(`/runs/${r.id}`) },
    picker.cell(r),
    h("td", {}, h("a", { href: `/runs/${r.id}`, "data-link": true }, r.name || `run ${short(r.id)}`)),
    h("td", {}, badge(r.status)),
    h("td", {}, Object.entries(r.params || {}).map(([k, v]) => h("span", { class: "chip kv" }, `${k}=${JSON.stringify(v)}`))),
    h("td", { class: "muted" }, fmtTime(r.started_at)),
    h("td", { class: "muted" }, fmtTime(r.ended_at)),
  ));
  view.replaceChildren(
    h("div", { class: "crumbs" }, h("a", { href: "/", "data-link": true }, "Experiments"), " / ", exp.name),
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, exp.name, " ", badge(exp.status)), exp.description ? h("div", { class: "muted" }, exp.description) : null,
        h("div", {}, exp.tags.map((t) => h("span", { class: "chip tag" }, t)))),
      experimentActions(exp)),
    h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Runs"), newRunButton(exp)), picker.bar,
      h("table", {}, h("thead", {}, h("tr", {}, picker.head(), ["Run", "Status", "Params", "Started", "Ended"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No runs yet."))))),
  );
}

// --- export ------------------------------------------------------------------------------

// The run's readings as a file. Fetched rather than linked, so that the identity headers go
// with it. The export streams (its length in bytes is unknown until it ends) but says up
// front how many readings it holds (Benchlink-Rows): a CSV's lines are counted as they
// arrive, so its progress is a percentage; Parquet and Arrow show the bytes received.
function exportControl(run) {
  const format = h("select", { id: "export-format", "aria-label": "export format" },
    h("option", { value: "parquet" }, "Parquet"), h("option", { value: "arrow" }, "Arrow"),
    h("option", { value: "csv" }, "CSV"));
  const progress = h("span", { class: "muted", id: "export-progress", role: "status" });
  const button = h("button", { class: "secondary", id: "export-run" }, "Export");
  button.onclick = async () => {
    button.disabled = true;
    progress.textContent = "starting…";
    try {
      const name = await download(`/api/v1/telemetry/export?format=${format.value}&run_id=${run.id}`,
        (n, rows, total) => { progress.textContent = exportProgress(n, rows, total); });
      progress.textContent = `${name} · ${progress.textContent.replace(" received", "")}`;
      progress.dataset.done = "true";
    } catch (err) {
      progress.textContent = `export failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  };
  return h("div", { class: "export", id: "export" }, format, button, progress);
}

function exportProgress(bytes, rows, total) {
  const got = `${fmtBytes(bytes)} received`;
  if (total === null) return got;
  if (rows === null) return `${got} · ${total.toLocaleString()} readings in all`;
  const pct = total ? Math.min(100, Math.floor((100 * rows) / total)) : 100;
  return `${pct}% · ${Math.min(rows, total).toLocaleString()} of ${total.toLocaleString()} readings · ${got}`;
}

// Calls onBytes(bytes, rows, total): rows counted (CSV lines after the header) or null, total
// from Benchlink-Rows or null.
async function download(path, onBytes) {
  delete $("#export-progress").dataset.done;
  const r = await fetch(new URL(path, location.origin), { headers: identityHeaders() });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch { /* not JSON */ }
    throw new ApiError(r.status, detail);
  }
  const header = r.headers.get("Benchlink-Rows");
  const total = header === null || header === "" ? null : Number(header);
  const isCsv = (r.headers.get("Content-Type") || "").startsWith("text/csv");
  const reader = r.body.getReader();
  const parts = [];
  let received = 0;
  let lines = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    received += value.length;
    if (isCsv) for (const byte of value) if (byte === 10) lines += 1;
    onBytes(received, isCsv ? Math.max(0, lines - 1) : null, Number.isFinite(total) ? total : null);
  }
  const found = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
  const name = found ? found[1] : "export";
  const url = URL.createObjectURL(new Blob(parts, { type: r.headers.get("Content-Type") || "" }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return name;
}

// --- run page ----------------------------------------------------------------------------

async function viewRun(view, runId) {
  const run = await api(`/api/v1/runs/${runId}`);
  const [exp, sessions, sensors] = await Promise.all([
    api(`/api/v1/experiments/${run.experiment_id}`),
    apiAll(`/api/v1/runs/${runId}/capture-sessions`),  // by ordinal number
    apiAll("/api/v1/sensors"),
  ]);
  for (const s of sensors) sensorNames.set(s.id, s.name);
  const query = new URLSearchParams(location.search);
  const wanted = query.get("session");
  // One chart per unit (every sensor of a unit on one axis) or one per sensor; in the URL,
  // so a page shared or reloaded shows the same.
  let byUnit = query.get("charts") === "unit";
  const pageUrl = () => `/runs/${runId}?` + new URLSearchParams({ ...(current && { session: current.id }), ...(byUnit && { charts: "unit" }) });
  let current = sessions.find((s) => s.id === wanted) || sessions.find((s) => s.status === "running") || sessions[sessions.length - 1];

  const sessionBar = h("div", { class: "sessions", id: "sessions" });
  const sessionTools = h("span", { class: "head-tools", id: "session-tools" });
  const completenessBox = h("ul", { class: "completeness", id: "completeness" });
  const telemetry = h("div", { id: "telemetry" });
  const liveState = h("span", { class: "live-dot off", id: "live-state" }, "○ not live");
  const metricsBox = h("div", { id: "metrics" });
  const journal = h("ol", { class: "journal", id: "journal" });
  const notes = new RunNotes(runId);
  const alarms = new RunAlarms(runId);
  const notesList = h("ol", { class: "notes", id: "annotations" });
  const alarmList = h("ol", { class: "alarms", id: "alarms" });
  const unitBox = h("input", { type: "checkbox", id: "charts-by-unit", checked: byUnit, onchange: () => {
    byUnit = unitBox.checked;
    history.replaceState({}, "", pageUrl());
    openSession();
  } });
  const unitToggle = h("label", { class: "check", title: "Sensors that share a unit on one axis" }, unitBox, "one chart per unit");
  const annotateBtn = notes.canEdit ? h("button", { class: "secondary", id: "annotate", onclick: () => notes.toggle() }, "Annotate") : null;
  notes.onChange(() => {
    if (annotateBtn) annotateBtn.textContent = notes.annotating ? "Done annotating" : "Annotate";
    drawNotes(notesList, notes);
  });

  view.replaceChildren(
    h("div", { class: "crumbs" }, h("a", { href: "/", "data-link": true }, "Experiments"), " / ",
      h("a", { href: `/experiments/${exp.id}`, "data-link": true }, exp.name), " / ", run.name || `run ${short(run.id)}`),
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, run.name || `Run ${short(run.id)}`, " ", h("span", { id: "run-status" }, badge(run.status))),
        h("div", {}, Object.entries(run.params || {}).map(([k, v]) => h("span", { class: "chip kv" }, `${k}=${JSON.stringify(v)}`))),
        h("div", { class: "muted" }, `started ${fmtTime(run.started_at)}`, run.ended_at ? ` · ended ${fmtTime(run.ended_at)}` : "")),
      exportControl(run),
      runActions(run, exp),
    ),
    h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Capture sessions"), sessionTools), sessionBar, completenessBox),
    h("div", { class: "grid" },
      h("div", {},
        h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Telemetry"), h("span", { class: "head-tools" }, unitToggle, annotateBtn, liveState)), notes.hint, notes.form, telemetry),
        h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Alarms")), alarmList),
        h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Annotations")), notesList),
        h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Metrics")), metricsBox)),
      h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Event journal")), journal)),
  );

  let sessionScope = null;
  function drawSessions() {
    drawSessionTools(sessionTools, run, sessions, current);
    sessionBar.replaceChildren(...(sessions.length ? sessions.map((s) => h("button", {
      class: `session-tab${current && s.id === current.id ? " selected" : ""}`,
      dataset: { sessionId: s.id, ordinal: s.ordinal_number, status: s.status },
      onclick: () => { current = s; history.replaceState({}, "", pageUrl()); drawSessions(); openSession(); },
    }, h("strong", {}, `#${s.ordinal_number} `), badge(s.status),
      h("span", { class: "when" }, `${fmtTime(s.started_at)} → ${s.stopped_at ? fmtTime(s.stopped_at) : "now"}`))) : [h("span", { class: "muted" }, "No capture sessions yet.")]));
  }
  function drawCompleteness() {
    showCompleteness(completenessBox, runId, sessions).catch((e) => completenessBox.replaceChildren(h("li", {}, errorPanel(e))));
  }
  function openSession() {
    if (sessionScope) sessionScope();
    telemetry.replaceChildren();
    if (!current) { telemetry.append(h("div", { class: "empty" }, "No telemetry without a capture session.")); return; }
    sessionScope = showTelemetry(telemetry, liveState, current, sensors, { notes, alarms, byUnit });
  }
  drawSessions();
  drawCompleteness();
  openSession();
  notes.load().catch((e) => notesList.replaceChildren(h("li", {}, errorPanel(e))));
  onCleanup(() => sessionScope && sessionScope());

  onCleanup(showAlarms(alarmList, alarms, sensors));

  const stopMetrics = showMetrics(metricsBox, run);
  onCleanup(stopMetrics);
  let completenessDue = null;
  onCleanup(() => clearTimeout(completenessDue));
  const stopJournal = showJournal(journal, runId, async (ev) => {
    // Keep the session list, run status, completeness and alarms in step with what the
    // journal reports (a finished session has no live stream to say an alarm cleared).
    if (ev.kind === "telemetry.ingested" && completenessDue === null) {
      completenessDue = setTimeout(() => { completenessDue = null; drawCompleteness(); }, COMPLETENESS_REFRESH_MS);
    }
    if (ev.kind.startsWith("alarm.")) await alarms.load();
    if (ev.kind.startsWith("capture_session.") || ev.kind.startsWith("run.")) {
      const [fresh, r] = await Promise.all([apiAll(`/api/v1/runs/${runId}/capture-sessions`), api(`/api/v1/runs/${runId}`)]);
      sessions.splice(0, sessions.length, ...fresh);
      if (current) current = sessions.find((s) => s.id === current.id) || current;
      drawSessions();
      drawCompleteness();
      $("#run-status").replaceChildren(badge(r.status));
    }
  });
  onCleanup(stopJournal);
}

// Each session's proof of completeness, one line each (GET /runs/{id}/completeness).
const fmtCount = (n) => n.toLocaleString("en-US");

function completenessLine(c) {
  const direct = c.arrived_without_edge_accounting || 0;
  if (c.captured == null && !c.arrived && !c.waiting && !c.dead_lettered) {
    // Readings sent straight to the API (no edge, no sequence numbers): nothing to account.
    return direct ? `${fmtCount(direct)} arrived, sent without an edge (no sequence numbers to account for)`
      : "nothing arrived yet";
  }
  const parts = [
    c.captured == null ? "captured unknown (no edge report)" : `${fmtCount(c.captured)} captured`,
    `${fmtCount(c.arrived)} arrived`,
    `${fmtCount(c.waiting)} on their way`,
  ];
  if (c.dead_lettered) parts.push(`${fmtCount(c.dead_lettered)} dead-lettered`);
  parts.push(c.unaccounted == null ? "unaccounted unknown" : `${fmtCount(c.unaccounted)} unaccounted`);
  if (c.arrived_without_edge_accounting) parts.push(`${fmtCount(c.arrived_without_edge_accounting)} without edge accounting`);
  return parts.join(" · ");
}

async function showCompleteness(box, runId, sessions) {
  const answer = await api(`/api/v1/runs/${runId}/completeness`);
  const ordinal = new Map(sessions.map((s) => [s.id, s.ordinal_number]));
  box.replaceChildren(...answer.sessions.map((c) => {
    const bad = c.unaccounted ? " bad" : c.unaccounted === 0 && !c.waiting ? " good" : "";
    const reasons = Object.entries(c.dead_lettered_by_reason || {}).map(([r, n]) => `${fmtCount(n)}: ${r}`).join("; ");
    const gaps = (c.gaps || []).map((g) => `${g.first}–${g.last}`).join(", ");
    return h("li", { class: `completeness-line${bad}`, dataset: { sessionId: c.capture_session_id }, title: [c.note, reasons && `dead-lettered ${reasons}`, gaps && `gaps (sequence numbers): ${gaps}`].filter(Boolean).join("\n") },
      h("strong", {}, `#${ordinal.get(c.capture_session_id) ?? "?"} `), completenessLine(c));
  }));
}

// --- annotations -------------------------------------------------------------------------

// A run's annotations, shared by its charts (bands and markers) and its list. Dragging on a
// chart zooms; in annotating mode it marks the range instead and asks for the note.
class RunNotes {
  constructor(runId) {
    this.runId = runId;
    this.items = [];
    this.listeners = new Set();
    this.annotating = false;
    // A viewer is refused by the API anyway; the portal offers what the role may do.
    this.canEdit = can("editor");
    this.hint = h("div", { class: "muted annotate-hint", hidden: true }, "Drag across a chart to mark a time range.");
    this.form = h("form", { class: "annotate-form", id: "annotate-form", hidden: true });
  }

  onChange(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  changed() { for (const fn of this.listeners) fn(); }

  async load() {
    this.items = await apiAll(`/api/v1/runs/${this.runId}/annotations`);
    this.changed();
  }

  toggle() {
    this.annotating = !this.annotating;
    this.hint.hidden = !this.annotating;
    if (!this.annotating) this.form.hidden = true;
    this.changed();
  }

  ask(since, until, sensor) {
    const start = new Date(since * 1000).toISOString();
    const end = new Date(until * 1000).toISOString();
    const text = h("input", { name: "text", required: true, maxlength: 5000, placeholder: "What happened?", autocomplete: "off" });
    const only = h("input", { type: "checkbox", name: "only" });
    const error = h("div", { class: "error-text" });
    this.form.replaceChildren(
      h("div", { class: "muted" }, `${fmtTime(start)} → ${fmtTime(end)}`),
      text,
      h("label", {}, only, ` only ${sensor.name}`),
      h("button", { type: "submit" }, "Save"),
      h("button", { type: "button", class: "secondary", onclick: () => { this.form.hidden = true; } }, "Cancel"),
      error,
    );
    this.form.onsubmit = async (ev) => {
      ev.preventDefault();
      const body = { start, end, text: text.value, ...(only.checked ? { sensor_id: sensor.id } : {}) };
      try {
        await api(`/api/v1/runs/${this.runId}/annotations`, { method: "POST", body });
        this.form.hidden = true;
        await this.load();
      } catch (e) { error.textContent = e.message; }
    };
    this.form.hidden = false;
    text.focus();
  }

  async remove(id) {
    await api(`/api/v1/annotations/${id}`, { method: "DELETE" });
    await this.load();
  }
}

function drawNotes(list, notes) {
  if (!notes.items.length) {
    list.replaceChildren(h("li", { class: "muted" }, notes.canEdit ? "No annotations yet. Use Annotate, then drag across a chart." : "No annotations."));
    return;
  }
  list.replaceChildren(...notes.items.map((a) => h("li", { dataset: { annotationId: a.id } },
    h("div", { class: "when" }, fmtTime(a.start), a.end ? ` → ${fmtTime(a.end)}` : ""),
    h("div", { class: "note-text" }, a.text),
    h("div", { class: "muted" }, a.sensor_id ? sensorLabel(a.sensor_id) : "whole run",
      ...(a.tags || []).map((t) => h("span", { class: "chip tag" }, t)),
      notes.canEdit ? h("button", { class: "secondary small", title: "Delete this annotation",
        onclick: () => notes.remove(a.id).catch((e) => alert(e.message)) }, "Delete") : null))));
}

function showMetrics(box, run) {
  const charts = new Map();
  let timer = null;
  let stopped = false;
  async function refresh() {
    const summary = await api(`/api/v1/runs/${run.id}/metrics/summary`);
    if (stopped) return;
    if (!summary.length && !charts.size) box.replaceChildren(h("div", { class: "empty" }, "No metrics logged."));
    for (const m of summary) {
      let c = charts.get(m.name);
      if (c && c.count === m.count && c.last_step === m.last_step) continue;
      const series = await api(`/api/v1/runs/${run.id}/metrics`, { params: { name: m.name, max_points: 2000 } });
      if (stopped) return;
      const data = [series.points.map((p) => p.step), series.points.map((p) => p.value)];
      if (!c) {
        box.querySelector(".empty")?.remove();
        const plotBox = h("div");
        const meta = h("span", { class: "chart-meta" });
        // The metric's unit (canonical, as the API gives it), if it was logged with one.
        const unitTag = m.unit ? [" ", h("span", { class: "muted" }, `(${m.unit})`)] : [];
        const el = h("div", { class: "chart metric-chart", dataset: { metric: m.name, unit: m.unit || "" } },
          h("div", { class: "chart-head" }, h("span", { class: "chart-title" }, m.name, ...unitTag), meta), plotBox);
        box.append(el);
        const plot = new uPlot({
          width: Math.max(320, box.clientWidth - 8), height: 200,
          scales: { x: { time: false } },
          axes: [{ label: "step" }, { size: 60, label: m.unit || undefined }],
          series: [{ label: "step" }, { label: m.unit ? `${m.name} (${m.unit})` : m.name, stroke: "#7c3aed", width: 1.5 }],
        }, data, plotBox);
        c = { el, meta, plot };
        charts.set(m.name, c);
      } else {
        c.plot.setData(data);
      }
      Object.assign(c, { count: m.count, last_step: m.last_step });
      c.el.dataset.points = String(data[0].length);
      c.meta.textContent = `last ${fmtNum(m.last)} @ step ${m.last_step} · min ${fmtNum(m.min)} · max ${fmtNum(m.max)}`;
    }
  }
  const loop = async () => {
    try { await refresh(); } catch (e) { console.error(e); }
    if (!stopped) timer = setTimeout(loop, METRICS_POLL_MS);
  };
  loop();
  return () => { stopped = true; clearTimeout(timer); for (const c of charts.values()) c.plot.destroy(); };
}

// Sensor names known to the page (the run page loads them), for the journal's lines.
const sensorNames = new Map();
const sensorLabel = (id) => sensorNames.get(id) || `sensor ${short(id)}`;

const KIND_LABELS = {
  "telemetry.ingested": (p, ev) => `${p.count} reading${p.count === 1 ? "" : "s"}${p.late ? ` (${p.late} late)` : ""} · ${sensorLabel(ev.sensor_id)}`,
  "metrics.logged": (p) => metricsLine(p.names || [], p.count, p.steps),
  "run.status_changed": (p) => `${p.previous} → ${p.status}`,
  "capture_session.started": (p) => `session #${p.ordinal_number} ${p.status}`,
  "capture_session.created": (p) => `session #${p.ordinal_number} ${p.status}`,
  "capture_session.stopped": (p, ev) => `session ${short(ev.capture_session_id)} ${p.status}`,
  "annotation.created": (p) => `“${p.text}”`,
  "annotation.updated": (p) => (p.changes?.text ? `“${p.changes.text}”` : "changed"),
  "annotation.deleted": (p) => `“${p.text}”`,
  // An alarm's line names its sensor and rule kind, not its ids (the Alarms panel has the rest).
  "alarm.raised": (p, ev) => alarmLine(p, ev) + (p.late ? " · late" : ""),
  "alarm.cleared": (p, ev) => alarmLine(p, ev),
  "alarm.acknowledged": (p, ev) => alarmLine(p, ev) + (p.note ? `: “${p.note}”` : ""),
};

function alarmLine(p, ev) {
  return `${sensorLabel(ev.sensor_id)} · ${p.alarm_kind}` + (typeof p.value === "number" ? ` · ${fmtNum(p.value)}` : "");
}

function describe(ev) {
  const fn = KIND_LABELS[ev.kind];
  const p = ev.payload || {};
  if (fn) return fn(p, ev);
  return Object.entries(p).filter(([, v]) => typeof v !== "object").slice(0, 3).map(([k, v]) => `${k}: ${v}`).join(" · ");
}

const plural = (n, one) => `${n.toLocaleString()} ${one}${n === 1 ? "" : "s"}`;

// "loss, acc · 24 points · steps 1–12"; "loss · 1 point · step 7".
function metricsLine(names, count, steps) {
  const span = !steps ? "" : steps[0] === steps[1] ? ` · step ${steps[0]}` : ` · steps ${steps[0]}–${steps[1]}`;
  return `${names.join(", ")} · ${plural(count || 0, "point")}${span}`;
}

// Routine events the journal reads as one line per kind that keeps count: sensors sending
// batch after batch (a run's sensors take turns), a script logging metrics every step. Each
// would otherwise fill the journal with a line per request and push the run's other events
// (sessions, alarms, notes) out of sight. Until such another event comes, the routine lines
// at the top are updated and the newest moves up; after it, new routine lines begin.
const FOLDS = {
  // "90 readings in 3 batches · TC-1 furnace"; of several sensors, each one's readings, by
  // name: "150 readings in 12 batches · TC-1 furnace 90, TC-2 door 60".
  "telemetry.ingested": {
    start: () => ({ sensors: new Map(), batches: 0, count: 0, late: 0 }),
    add(fold, p, ev) {
      fold.batches += 1; fold.count += p.count || 0; fold.late += p.late || 0;
      fold.sensors.set(ev.sensor_id, (fold.sensors.get(ev.sensor_id) || 0) + (p.count || 0));
    },
    line(fold) {
      const names = fold.sensors.size === 1
        ? sensorLabel([...fold.sensors.keys()][0])
        : [...fold.sensors].map(([id, n]) => [sensorLabel(id), n])
          .sort(([a], [b]) => a.localeCompare(b)).map(([name, n]) => `${name} ${n.toLocaleString()}`).join(", ");
      return `${plural(fold.count, "reading")}` + (fold.late ? ` (${fold.late.toLocaleString()} late)` : "") +
        ` in ${fold.batches} batches · ${names}`;
    },
    data: (fold) => ({ batches: String(fold.batches), sensors: String(fold.sensors.size) }),
  },
  // "loss, acc · 48 points · steps 1–24 · 24 requests".
  "metrics.logged": {
    start: () => ({ names: new Set(), batches: 0, count: 0, steps: null }),
    add(fold, p) {
      fold.batches += 1; fold.count += p.count || 0;
      for (const name of p.names || []) fold.names.add(name);
      if (p.steps) fold.steps = fold.steps ? [Math.min(fold.steps[0], p.steps[0]), Math.max(fold.steps[1], p.steps[1])] : [...p.steps];
    },
    line: (fold) => `${metricsLine([...fold.names].sort(), fold.count, fold.steps)} · ${fold.batches} requests`,
    data: (fold) => ({ batches: String(fold.batches) }),
  },
};

function showJournal(list, runId, onEvent) {
  let lastId = null;
  let timer = null;
  let stopped = false;
  const item = (ev, fresh) => h("li", { class: fresh ? "fresh" : null, dataset: { kind: ev.kind, eventId: ev.id } },
    h("time", { datetime: ev.created_at, title: fmtTime(ev.created_at) }, fmtClock(ev.created_at)),
    h("div", {}, h("div", { class: "kind" }, ev.kind), h("div", { class: "detail" }, describe(ev))));
  function add(ev, fresh) {
    const top = list.firstElementChild;
    const p = ev.payload || {};
    const spec = FOLDS[ev.kind];
    let line = top;  // this kind's line among the routine lines at the top
    while (line?._fold && line.dataset.kind !== ev.kind) line = line.nextElementSibling;
    if (spec && line?._fold) {
      spec.add(line._fold, p, ev);
      Object.assign(line.dataset, spec.data(line._fold), { eventId: ev.id });
      line.querySelector("time").replaceWith(h("time", { datetime: ev.created_at, title: fmtTime(ev.created_at) }, fmtClock(ev.created_at)));
      line.querySelector(".detail").textContent = spec.line(line._fold);
      if (fresh) line.classList.add("fresh");
      if (line !== top) list.prepend(line);
      return;
    }
    const li = item(ev, fresh);
    if (spec) {
      li._fold = spec.start();
      spec.add(li._fold, p, ev);
      Object.assign(li.dataset, spec.data(li._fold));
    }
    list.prepend(li);
  }
  async function first() {
    // The newest events, and the newest of the others: a long run's last hundred events
    // are all readings and metrics, and its sessions, alarms and notes would be out of reach.
    const url = `/api/v1/runs/${runId}/events`;
    const [page, notable] = await Promise.all([
      api(url, { params: { limit: 100 } }),
      api(url, { params: { limit: 100, exclude_kind: Object.keys(FOLDS) } }),
    ]);
    // Polling goes on from the first page's newest: one the second request saw beyond it
    // (written between the two) comes with the poll, not twice.
    lastId = page.items.length ? page.items[0].id : 0;
    const older = notable.items.filter((ev) => ev.id <= lastId);
    const byId = new Map([...older, ...page.items].map((ev) => [ev.id, ev]));
    list.replaceChildren();
    for (const ev of [...byId.values()].sort((a, b) => a.id - b.id)) add(ev, false);  // oldest first
  }
  async function poll() {
    const page = await api(`/api/v1/runs/${runId}/events`, { params: { after_id: lastId, limit: 200 } });
    for (const ev of page.items) {  // oldest first: each new one goes on top
      add(ev, true);
      lastId = ev.id;
      onEvent(ev).catch(console.error);
    }
    while (list.children.length > 500) list.lastChild.remove();
  }
  const loop = async () => {
    try { await (lastId === null ? first() : poll()); } catch (e) { console.error(e); }
    if (!stopped) timer = setTimeout(loop, JOURNAL_POLL_MS);
  };
  loop();
  return () => { stopped = true; clearTimeout(timer); };
}

// --- tests (capture sessions across runs) --------------------------------------------------

async function viewTests(view) {
  const status = h("select", { id: "tests-status" },
    ...["", "running", "succeeded", "failed", "cancelled", "draft"].map((s) => h("option", { value: s }, s || "any status")));
  const body = h("tbody");
  view.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Tests"), h("div", { class: "muted" }, "Capture sessions across all runs of the project"))),
    h("div", { class: "panel" }, h("div", { class: "filters" }, status),
      h("table", { id: "tests-table" }, h("thead", {}, h("tr", {}, ["Experiment", "Run", "Session", "Status", "Started", "Stopped"].map((t) => h("th", {}, t)))), body)),
  );
  let timer = null;
  async function load() {
    // The newest 500: the page polls every 5 s, so it reads one page, not the whole history.
    const { items: rows } = await api("/api/v1/capture-sessions", { params: { status: status.value, limit: 500 } });
    body.replaceChildren(...rows.map((s) => h("tr", { class: "clickable", dataset: { sessionId: s.id, status: s.status }, onclick: () => navigate(`/runs/${s.run.id}?session=${s.id}`) },
      h("td", {}, s.experiment.name),
      h("td", {}, h("a", { href: `/runs/${s.run.id}?session=${s.id}`, "data-link": true }, s.run.name || `run ${short(s.run.id)}`), " ", badge(s.run.status)),
      h("td", {}, `#${s.ordinal_number}`),
      h("td", {}, badge(s.status)),
      h("td", { class: "muted" }, fmtTime(s.started_at)),
      h("td", { class: "muted" }, fmtTime(s.stopped_at)),
    )));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No capture sessions.")));
  }
  status.addEventListener("change", () => load().catch(console.error));
  const loop = async () => { try { await load(); } catch (e) { console.error(e); } timer = setTimeout(loop, 5000); };
  await load();
  timer = setTimeout(loop, 5000);
  onCleanup(() => clearTimeout(timer));
}

// --- devices (edges: bench PCs and their heartbeats) -----------------------------------------

const fmtAge = (s) => {
  if (s === null || s === undefined) return "—";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
};

// A health condition (cloud: edges' "health") as a badge: what broke which limit, since when.
const HEALTH = {
  edge_silent: (c) => `silent ${fmtAge(c.value)}`,
  sensor_silent: (c) => `no reading ${fmtAge(c.value)}`,
  backlog_old: (c) => `backlog ${fmtAge(c.value)} old`,
  clock_offset: (c) => `clock ${Math.round(c.value)} ms off`,
  buffer_full: (c) => `buffer ${Math.round(c.value * 100)}% full`,
};

function healthBadge(c, names) {
  const text = (HEALTH[c.rule] || ((x) => x.rule))(c);
  const who = c.sensor_id ? ` · ${names.get(c.sensor_id) || short(c.sensor_id)}` : "";
  return h("span", { class: "badge health", dataset: { rule: c.rule }, title: `${c.rule}: ${c.value} past ${c.limit}, since ${fmtTime(c.since)}` }, text + who);
}

// What an edge left out of a heartbeat over its size limit (common/heartbeat.py, Truncated).
function truncatedTitle(t) {
  const parts = [];
  if (t.reasons_cut_to) parts.push(`reasons cut to ${t.reasons_cut_to} characters`);
  if (t.sessions) parts.push(`${t.sessions} older capture sessions not reported (not accounted)`);
  if (t.dead) parts.push(`${t.dead} older dead-lettered ranges not reported (counted as unaccounted)`);
  if (t.waiting_joined) parts.push(`waiting ranges joined for ${t.waiting_joined} sensors`);
  if (t.sequence_reports) parts.push(`${t.sequence_reports} sensors without sequence report`);
  if (t.sensors) parts.push(`${t.sensors} sensors left out`);
  return parts.join("; ");
}

function edgeRow(e, names) {
  const hb = e.heartbeat;
  const sensors = hb ? Object.entries(hb.sensors) : [];
  const waiting = sensors.reduce((n, [, s]) => n + s.waiting, 0);
  const oldest = Math.max(-1, ...sensors.map(([, s]) => s.oldest_waiting_age_s ?? -1));
  const use = hb ? hb.buffer.used_bytes / hb.buffer.max_bytes : 0;
  const clock = hb && hb.clock;
  const clockOff = clock && Math.abs(clock.offset_ms) > clock.max_offset_ms;
  return h("tr", { dataset: { edgeId: e.id, state: e.state } },
    h("td", {}, h("strong", {}, e.name), h("div", { class: "muted" }, hb ? `${hb.host} · v${hb.version}` : "never reported"),
      hb && hb.truncated ? h("div", { class: "error truncated", title: truncatedTitle(hb.truncated) },
        `heartbeat cut to ${fmtBytes(hb.truncated.limit_bytes)} (of ${fmtBytes(hb.truncated.full_bytes)})`) : null),
    h("td", { class: "health" }, badge(e.state), (e.health || []).map((c) => h("div", {}, healthBadge(c, names)))),
    h("td", { class: "muted" }, e.heartbeat_at ? `${fmtAge(e.silent_s)} ago` : "—",
      e.heartbeat_at ? h("div", {}, fmtTime(e.heartbeat_at)) : null),
    h("td", { class: "buffer-use" }, hb ? [
      h("div", { class: `meter ${use > 0.8 ? "hot" : ""}` }, h("span", { style: `width:${Math.min(100, use * 100).toFixed(1)}%` })),
      h("div", { class: "muted" }, `${fmtBytes(hb.buffer.used_bytes)} of ${fmtBytes(hb.buffer.max_bytes)}`),
    ] : "—"),
    h("td", { class: "backlog" }, hb ? [h("div", {}, `${waiting.toLocaleString()} waiting`),
      h("div", { class: "muted" }, oldest >= 0 ? `oldest ${fmtAge(oldest)}` : "nothing waiting")] : "—"),
    h("td", { class: `clock ${clockOff ? "error" : ""}` }, clock
      ? [`${clock.offset_ms >= 0 ? "+" : ""}${clock.offset_ms.toFixed(1)} ms`, h("div", { class: "muted" }, `± ${clock.uncertainty_ms.toFixed(1)} ms`)]
      : "—"),
    h("td", {}, sensors.length ? sensors.map(([sid, s]) => h("div", { class: "sensor-line", dataset: { sensorId: sid } },
      names.has(sid) ? [h("strong", { class: "sensor-name" }, names.get(sid)), " ", h("code", { class: "muted", title: sid }, short(sid))]
        : h("code", { title: sid }, short(sid)),
      " ", h("span", { class: `badge ${s.source_state}` }, s.source_state),
      h("span", { class: "muted" }, ` last ${s.last_reading_age_s === null ? "—" : fmtAge(s.last_reading_age_s) + " ago"}`),
      s.dead ? h("span", { class: "error" }, ` · ${s.dead} dead-lettered`) : null)) : h("span", { class: "muted" }, "—")),
  );
}

async function viewDevices(view) {
  const body = h("tbody");
  view.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Devices"),
      h("div", { class: "muted" }, "Bench PCs of the project and what their last heartbeat said. Stale: silent for more than three heartbeat periods; a red badge: a health rule broken (docs/fleet.md)."))),
    h("div", { class: "panel" }, h("table", { id: "devices-table" },
      h("thead", {}, h("tr", {}, ["Edge", "State", "Last heartbeat", "Buffer", "Backlog", "Clock offset", "Sensors"].map((t) => h("th", {}, t)))), body)),
  );
  let timer = null;
  async function load() {
    const [{ items }, sensors] = await Promise.all([
      api("/api/v1/edges", { params: { limit: 500 } }),
      apiAll("/api/v1/sensors"),
    ]);
    const names = new Map(sensors.map((x) => [x.id, x.name]));
    body.replaceChildren(...items.map((e) => edgeRow(e, names)));
    if (!items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No edges registered (POST /api/v1/edges).")));
  }
  const loop = async () => { try { await load(); } catch (e) { console.error(e); } timer = setTimeout(loop, 5000); };
  await load();
  timer = setTimeout(loop, 5000);
  onCleanup(() => clearTimeout(timer));
}

// --- role and forms ------------------------------------------------------------------------

// The role (GET /api/v1/me, behind a gateway too) decides which actions the page offers.

async function loadRole() {
  state.role = null;
  try { state.role = (await api("/api/v1/me")).role; } catch (e) { console.warn("role unknown:", e.message); }
  const deleted = $("#nav-deleted");
  if (deleted) deleted.hidden = !can("owner");
}

// A form in a modal dialog. fields: [{name, label, type, value, options, hint, paths}]; type is
// text (default), textarea, select, tags (comma separated -> list), json (an object). onSubmit
// gets the values and calls the API; an ApiError's per-field errors (problem+json `errors`)
// are shown next to the field they name (its `name` or one of its `paths`, or below them),
// the rest under the form.
function formDialog({ title, intro, fields, submit = "Save", onSubmit, id }) {
  const dialog = h("dialog", { class: "form-dialog", id });
  const form = h("form", { method: "dialog", novalidate: true });
  const general = h("div", { class: "error-text form-error", role: "alert" });
  const inputs = new Map();
  const rows = fields.map((f) => {
    const input = fieldInput(f);
    const error = h("div", { class: "error-text field-error", dataset: { errorFor: f.name } });
    inputs.set(f.name, { f, input, error });
    return h("label", { class: "field" }, h("span", { class: "field-label" }, f.label), input,
      f.hint ? h("span", { class: "muted field-hint" }, f.hint) : null, error);
  });
  const cancel = h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel");
  const ok = h("button", { type: "submit", class: "primary" }, submit);
  form.append(h("h2", {}, title), ...(intro ? [h("p", { class: "muted" }, intro)] : []), ...rows, general,
    h("div", { class: "actions" }, cancel, ok));
  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    general.textContent = "";
    for (const { error } of inputs.values()) error.textContent = "";
    let values;
    try { values = readFields(inputs); } catch (e) { return; }
    ok.disabled = true;
    try {
      await onSubmit(values, dialog);
      if (dialog.open) dialog.close();
    } catch (e) {
      if (!(e instanceof ApiError)) { console.error(e); general.textContent = String(e.message || e); return; }
      showProblem(e, inputs, general);
    } finally { ok.disabled = false; }
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

function fieldInput(f) {
  const base = { name: f.name, id: `field-${f.name}`, autocomplete: "off", placeholder: f.placeholder };
  if (f.type === "select") {
    const sel = h("select", base, ...f.options.map(([v, label]) => h("option", { value: v, selected: v === f.value }, label)));
    if (f.onchange) sel.addEventListener("change", () => f.onchange(sel.value));
    return sel;
  }
  if (f.type === "textarea" || f.type === "json") {
    const ta = h("textarea", { ...base, rows: f.rows || 3 });
    ta.value = f.type === "json" ? JSON.stringify(f.value ?? {}, null, 1) : (f.value ?? "");
    return ta;
  }
  const input = h("input", { ...base, type: "text" });
  input.value = f.type === "tags" ? (f.value || []).join(", ") : (f.value ?? "");
  return input;
}

function readFields(inputs) {
  const values = {};
  let bad = false;
  for (const [name, { f, input, error }] of inputs) {
    const raw = input.value;
    if (f.type === "tags") values[name] = raw.split(",").map((t) => t.trim()).filter(Boolean);
    else if (f.type === "json") {
      try {
        const v = raw.trim() ? JSON.parse(raw) : {};
        if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
        values[name] = v;
      } catch { error.textContent = "must be a JSON object, e.g. {\"a\": 1}"; bad = true; }
    } else values[name] = f.optional && raw.trim() === "" ? null : raw;
  }
  if (bad) throw new Error("invalid fields");
  return values;
}

function showProblem(err, inputs, general) {
  const rest = [];
  for (const e of err.errors || []) {
    const hit = [...inputs.values()].find(({ f }) => [f.name, ...(f.paths || [])]
      .some((p) => e.field === p || e.field.startsWith(`${p}.`)));
    if (hit) hit.error.textContent = (hit.error.textContent ? `${hit.error.textContent}; ` : "") +
      (e.field === hit.f.name || (hit.f.paths || []).includes(e.field) ? e.reason : `${e.field}: ${e.reason}`);
    else rest.push(`${e.field}: ${e.reason}`);
  }
  // Every error shown at its field: nothing more to say below; else what is left, or the detail.
  if (rest.length) general.textContent = rest.join("; ");
  else if (!(err.errors || []).length) general.textContent = err.message;
}

// A yes/no question in a dialog (never window.confirm: a page's own dialog can say what goes).
function confirmDialog({ title, text, yes, danger, onYes, id }) {
  const dialog = formDialog({ title, intro: text, fields: [], submit: yes, id, onSubmit: onYes });
  if (danger) dialog.querySelector("button[type=submit]").classList.add("danger");
  return dialog;
}

// A notice for the page an action goes to next (shown once that page is drawn).
function noticeNext(text, action) { state.pendingNotice = [text, action]; }
function showPendingNotice() {
  const pending = state.pendingNotice;
  state.pendingNotice = null;
  if (pending) notice(...pending);
}

function notice(text, action) {
  const box = h("div", { class: "notice", id: "notice", role: "status" }, text, action || null,
    h("button", { class: "secondary small", onclick: () => box.remove() }, "Dismiss"));
  $("#notice")?.remove();
  $("#view").prepend(box);
  return box;
}

const actionBar = (...buttons) => {
  const shown = buttons.filter(Boolean);
  return shown.length ? h("div", { class: "actions-bar" }, ...shown) : null;
};

// --- experiment actions --------------------------------------------------------------------

function experimentFields(exp = {}) {
  return [
    { name: "name", label: "Name", value: exp.name },
    { name: "description", label: "Description", type: "textarea", value: exp.description },
    { name: "tags", label: "Tags", type: "tags", value: exp.tags, hint: "comma separated" },
  ];
}

function experimentListActions() {
  if (!can("editor")) return null;
  return actionBar(h("button", { id: "new-experiment", onclick: () => formDialog({
    title: "New experiment", id: "experiment-form", submit: "Create", fields: experimentFields(),
    onSubmit: async (v) => {
      const exp = await api("/api/v1/experiments", { method: "POST", body: v });
      navigate(`/experiments/${exp.id}`);
    },
  }) }, "New experiment"));
}

function experimentActions(exp) {
  const edit = can("editor") && h("button", { class: "secondary", id: "edit-experiment", onclick: () => formDialog({
    title: "Edit experiment", id: "experiment-form", fields: experimentFields(exp),
    onSubmit: async (v) => { await api(`/api/v1/experiments/${exp.id}`, { method: "PATCH", body: v }); route(); },
  }) }, "Edit");
  const archived = exp.status === "archived";
  const archive = can("owner") && h("button", { class: "secondary", id: archived ? "unarchive-experiment" : "archive-experiment",
    onclick: () => api(`/api/v1/experiments/${exp.id}/${archived ? "unarchive" : "archive"}`, { method: "POST" })
      .then(route, (e) => notice(e.message)) }, archived ? "Unarchive" : "Archive");
  const del = can("owner") && h("button", { class: "danger", id: "delete-experiment", onclick: () => confirmDialog({
    title: `Delete experiment “${exp.name}”?`, id: "confirm-delete", yes: "Delete", danger: true,
    text: "Its runs and all their data (readings, metrics, annotations) go with it. It can be restored from Deleted until it is purged.",
    onYes: async () => {
      const gone = await api(`/api/v1/experiments/${exp.id}`, { method: "DELETE" });
      deletedNotice(gone);
      navigate("/");
    },
  }) }, "Delete");
  return actionBar(edit, archive, del);
}

function deletedNotice(gone) {
  const path = gone.kind === "run" ? `/api/v1/runs/${gone.id}/restore` : `/api/v1/experiments/${gone.id}/restore`;
  noticeNext(`${gone.kind === "run" ? "Run" : "Experiment"} “${gone.name || short(gone.id)}” deleted; it is purged after ${fmtTime(gone.purge_after)}. `,
    h("button", { class: "secondary small", id: "undo-delete", onclick: async () => {
      try {
        await api(path, { method: "POST" });
        navigate(gone.kind === "run" ? `/runs/${gone.id}` : `/experiments/${gone.id}`);
      } catch (e) { notice(e.message); }
    } }, "Undo"));
}

// --- runs: create, edit, status, batch status, delete ----------------------------------------

function runFields(run = {}) {
  return [
    { name: "name", label: "Name", value: run.name, optional: true },
    { name: "params", label: "Parameters", type: "json", value: run.params || {}, rows: 4, hint: "a JSON object, e.g. {\"setpoint_c\": 120}" },
    { name: "tags", label: "Tags", type: "tags", value: run.tags, hint: "comma separated" },
  ];
}

function newRunButton(exp) {
  if (!can("editor") || exp.status === "archived") return null;
  return h("button", { id: "new-run", onclick: () => formDialog({
    title: "New run", id: "run-form", submit: "Create",
    fields: [...runFields(), { name: "status", label: "Status", type: "select", value: "running",
      options: [["running", "running (starts now)"], ["draft", "draft"]] }],
    onSubmit: async (v) => {
      const run = await api(`/api/v1/experiments/${exp.id}/runs`, { method: "POST", body: v });
      navigate(`/runs/${run.id}`);
    },
  }) }, "New run");
}

const NEXT_STATUS = { draft: ["running", "cancelled"], running: ["succeeded", "failed", "cancelled"] };

function runActions(run, exp) {
  const edit = can("editor") && h("button", { class: "secondary", id: "edit-run", onclick: () => formDialog({
    title: "Edit run", id: "run-form", fields: runFields(run),
    onSubmit: async (v) => {
      if (v.name === null) delete v.name;
      await api(`/api/v1/runs/${run.id}`, { method: "PATCH", body: v });
      route();
    },
  }) }, "Edit");
  const moves = can("editor") ? (NEXT_STATUS[run.status] || []).map((s) => h("button", {
    class: s === "failed" || s === "cancelled" ? "secondary" : "", id: `run-${s}`,
    onclick: () => api(`/api/v1/runs/${run.id}`, { method: "PATCH", body: { status: s } }).then(route, (e) => notice(e.message)),
  }, { running: "Start", succeeded: "Mark succeeded", failed: "Mark failed", cancelled: "Cancel run" }[s])) : [];
  const del = can("owner") && h("button", { class: "danger", id: "delete-run", onclick: () => confirmDialog({
    title: `Delete run “${run.name || short(run.id)}”?`, id: "confirm-delete", yes: "Delete", danger: true,
    text: "Its capture sessions, readings, metrics and annotations go with it. It can be restored from Deleted until it is purged.",
    onYes: async () => {
      const gone = await api(`/api/v1/runs/${run.id}`, { method: "DELETE" });
      deletedNotice(gone);
      navigate(`/experiments/${exp.id}`);
    },
  }) }, "Delete");
  return actionBar(edit, ...moves, del);
}

// Check boxes on an experiment's runs: any role compares the chosen ones (a page of its own,
// a link); owners also set one status for all of them (runs:batch-status), each run
// answering for itself and the refused ones saying why.
const COMPARE_MAX = 20;  // the API's limit of runs per comparison

class RunPicker {
  constructor(runs) {
    this.batch = can("owner");
    this.comparable = runs.length > 1;
    this.enabled = this.comparable || (this.batch && runs.length > 0);
    this.chosen = new Set();
    this.compare = h("a", { class: "button disabled", id: "compare-runs", href: "#", "data-link": true, "aria-disabled": "true" }, "Compare");
    this.status = h("select", { id: "batch-status" }, ...["succeeded", "failed", "cancelled", "running"].map((s) => h("option", { value: s }, s)));
    this.apply = h("button", { id: "batch-apply", disabled: true, onclick: () => this.run() }, "Set status");
    this.result = h("span", { class: "muted", id: "batch-result" });
    this.said = h("span", { id: "picked" }, "Select runs to compare them");
    this.bar = this.enabled ? h("div", { class: "batch-bar" }, this.comparable ? [this.said, this.compare] : "Selected runs:",
      this.batch ? [this.comparable ? h("span", { class: "sep" }, "·") : null, "Set their status:", this.status, this.apply] : null,
      this.result) : null;
  }

  head() { return this.enabled ? h("th", {}, "") : null; }

  cell(run) {
    if (!this.enabled) return null;
    const box = h("input", { type: "checkbox", class: "pick-run", dataset: { runId: run.id }, "aria-label": `select ${run.name || run.id}` });
    box.addEventListener("click", (ev) => ev.stopPropagation());
    box.addEventListener("change", () => {
      if (box.checked) this.chosen.add(run.id); else this.chosen.delete(run.id);
      this.changed();
    });
    return h("td", { class: "pick" }, box);
  }

  changed() {
    const n = this.chosen.size;
    this.apply.disabled = !n;
    const ok = n >= 2 && n <= COMPARE_MAX;
    this.said.textContent = !n ? "Select runs to compare them" : n > COMPARE_MAX ? `${n} runs selected (compare at most ${COMPARE_MAX})` : `${n} run${n === 1 ? "" : "s"} selected`;
    this.compare.classList.toggle("disabled", !ok);
    this.compare.setAttribute("aria-disabled", String(!ok));
    this.compare.title = ok ? "" : "Select two runs or more";
    this.compare.href = ok ? `/compare?${new URLSearchParams([...this.chosen].map((id) => ["run", id]))}` : "#";
  }

  async run() {
    try {
      const out = await api("/api/v1/runs:batch-status", { method: "POST", body: { run_ids: [...this.chosen], status: this.status.value } });
      const refused = out.results.filter((r) => !r.ok).map((r) => `${short(r.run_id)}: ${r.error.detail}`);
      noticeNext(`${out.succeeded} run${out.succeeded === 1 ? "" : "s"} set to ${this.status.value}` + (refused.length ? `; refused: ${refused.join("; ")}` : "."));
      await route();
    } catch (e) { this.result.textContent = e.message; }
  }
}

// --- capture sessions: create, start, stop -------------------------------------------------

function drawSessionTools(box, run, sessions, current) {
  box.replaceChildren();
  if (!can("editor")) return;
  const ended = ["succeeded", "failed", "cancelled"].includes(run.status);
  if (!ended) box.append(h("button", { class: "secondary", id: "new-session", onclick: () => formDialog({
    title: "New capture session", id: "session-form", submit: "Create",
    fields: [
      { name: "ordinal_number", label: "Number", value: String(Math.max(0, ...sessions.map((s) => s.ordinal_number)) + 1) },
      { name: "status", label: "Status", type: "select", value: "running", options: [["running", "running (starts now)"], ["draft", "draft"]] },
      { name: "notes", label: "Notes", type: "textarea", optional: true },
    ],
    onSubmit: async (v) => {
      const s = await api(`/api/v1/runs/${run.id}/capture-sessions`, { method: "POST", body: { ...v, ordinal_number: Number(v.ordinal_number) || v.ordinal_number } });
      navigate(`/runs/${run.id}?session=${s.id}`);
    },
  }) }, "New session"));
  if (current?.status === "draft") box.append(h("button", { id: "start-session", onclick: () =>
    api(`/api/v1/runs/${run.id}/capture-sessions/${current.id}/start`, { method: "POST" })
      .then(() => navigate(`/runs/${run.id}?session=${current.id}`), (e) => notice(e.message)) }, `Start #${current.ordinal_number}`));
  if (current?.status === "running") box.append(h("button", { id: "stop-session", onclick: () => formDialog({
    title: `Stop capture session #${current.ordinal_number}`, id: "stop-form", submit: "Stop",
    intro: "Readings timestamped before the stop are still accepted later (marked late).",
    fields: [{ name: "status", label: "Outcome", type: "select", value: "succeeded",
      options: [["succeeded", "succeeded"], ["failed", "failed"], ["cancelled", "cancelled"]] }],
    onSubmit: async (v) => {
      await api(`/api/v1/runs/${run.id}/capture-sessions/${current.id}/stop`, { method: "POST", body: v });
      navigate(`/runs/${run.id}?session=${current.id}`);
    },
  }) }, `Stop #${current.ordinal_number}`));
}

// --- sensors -------------------------------------------------------------------------------

const PROFILE_TEMPLATES = {
  linear: { a: 1.0, b: 0.0 },
  polynomial: { coefficients: [0.0, 1.0] },
  lookup_table: { points: [[0.0, 0.0], [10.0, 100.0]] },
  thermocouple: { type: "K", input: "mV" },
};

function profileFields(current = {}) {
  const fields = [
    { name: "kind", label: "Conversion profile", type: "select", value: current.kind || "linear",
      options: Object.keys(PROFILE_TEMPLATES).map((k) => [k, k]), paths: ["conversion_profile.kind"],
      onchange: (kind) => {
        const ta = $("#field-payload");
        if (ta) ta.value = JSON.stringify(PROFILE_TEMPLATES[kind], null, 1);
      } },
    { name: "version", label: "Profile version", value: current.version || "v1", paths: ["conversion_profile.version"] },
    { name: "payload", label: "Payload", type: "json", rows: 4, value: current.payload || PROFILE_TEMPLATES.linear,
      paths: ["conversion_profile.payload", "conversion_profile"], hint: "linear: value = a·raw + b; see the API docs for the others" },
  ];
  return fields;
}

async function viewSensors(view) {
  const body = h("tbody");
  const tokenBox = h("div", { id: "token-box" });
  view.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Sensors"), h("div", { class: "muted" }, "The project's sensors, their tokens and conversion profiles")),
      can("editor") ? actionBar(h("button", { id: "register-sensor", onclick: () => registerSensor(tokenBox, load) }, "Register sensor")) : null),
    tokenBox,
    h("div", { class: "panel" }, h("table", { id: "sensors-table" },
      h("thead", {}, h("tr", {}, ["Sensor", "Type", "Units", "Profile", "Token", ""].map((t) => h("th", {}, t)))), body)),
  );
  async function load() {
    const sensors = await apiAll("/api/v1/sensors");
    body.replaceChildren(...sensors.map((s) => h("tr", { dataset: { sensorId: s.id, name: s.name } },
      h("td", {}, h("a", { href: `/sensors/${s.id}`, "data-link": "" }, h("strong", {}, s.name)), h("div", { class: "muted kv" }, s.id)),
      h("td", {}, s.type),
      h("td", {}, `${s.input_unit} → ${s.display_unit}`),
      h("td", {}, h("span", { class: "chip" }, s.conversion_profile.kind), ` ${s.conversion_profile.version}`),
      h("td", {}, badge(s.token_status), s.token_preview ? h("div", { class: "muted kv" }, s.token_preview) : null),
      h("td", { class: "row-actions" }, sensorActions(s, tokenBox, load)))));
    if (!sensors.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No sensors yet.")));
  }
  await load();
}

function sensorActions(s, tokenBox, reload) {
  const profile = can("editor") && h("button", { class: "secondary small", dataset: { action: "profile" }, onclick: () => formDialog({
    title: `Conversion profile of ${s.name}`, id: "profile-form", submit: "Set profile",
    intro: `A new version becomes current and converts the readings stamped from its effective time on, late ones too; readings already stored keep the version that converted them (now ${s.conversion_profile.version}).`,
    fields: [...profileFields({ kind: s.conversion_profile.kind, payload: s.conversion_profile.payload, version: nextVersion(s.conversion_profile.version) }),
      { name: "input_unit", label: "Input unit", value: s.input_unit },
      { name: "display_unit", label: "Display unit", value: s.display_unit },
      { name: "effective_from", label: "Effective from", value: "", hint: "RFC 3339 with a zone, e.g. 2026-12-06T09:30:00Z; empty: now" }],
    onSubmit: async (v) => {
      const { effective_from, ...body } = v;
      if (effective_from) body.effective_from = effective_from;
      await api(`/api/v1/sensors/${s.id}/conversion-profile`, { method: "PUT", body });
      await reload();
    },
  }) }, "Profile");
  const rotate = can("owner") && h("button", { class: "secondary small", dataset: { action: "rotate" }, onclick: () => confirmDialog({
    title: `Rotate the token of ${s.name}?`, id: "confirm-rotate", yes: "Rotate",
    text: "The old token stops working at once: put the new one in the edge's config.",
    onYes: async () => {
      const out = await api(`/api/v1/sensors/${s.id}/rotate-token`, { method: "POST" });
      showToken(tokenBox, out, null);
      await reload();
    },
  }) }, "Rotate token");
  const revoke = can("owner") && s.token_status === "active" && h("button", { class: "danger small", dataset: { action: "revoke" }, onclick: () => confirmDialog({
    title: `Revoke the token of ${s.name}?`, id: "confirm-revoke", yes: "Revoke", danger: true,
    text: "The sensor's readings are refused until its token is rotated.",
    onYes: async () => { await api(`/api/v1/sensors/${s.id}/revoke-token`, { method: "POST" }); await reload(); },
  }) }, "Revoke");
  return [profile, rotate, revoke].filter(Boolean);
}

// A sensor's page: its profile versions over time (who set each, from when) and its
// calibration fits, the newest with its residuals plotted.
const EPOCH_ISO = "1970-01-01T00:00:00Z";
const SENSOR_FITS = 20;
const fmtEffective = (iso) => (Date.parse(iso) === 0 ? "from the start" : fmtTime(iso));
const whoSet = (id) => (!id ? "—" : state.identity && id === state.identity.user ? `you (${short(id)})` : `user ${short(id)}`);

async function viewSensor(view, id) {
  const [s, versions, fits] = await Promise.all([
    api(`/api/v1/sensors/${id}`),
    apiAll(`/api/v1/sensors/${id}/conversion-profiles`),
    // The newest fits only: a sensor calibrated every week would list years of them.
    api(`/api/v1/sensors/${id}/calibrations`, { params: { limit: SENSOR_FITS } }).then((p) => p.items),
  ]);
  const reload = () => viewSensor(view, id);
  const versionRows = [...versions].reverse().map((p, i) => h("tr", { dataset: { version: p.version, current: i === 0 ? "1" : "0" } },
    h("td", {}, h("strong", {}, p.version), i === 0 ? [" ", badge("current")] : null),
    h("td", {}, h("span", { class: "chip" }, p.kind), h("div", { class: "muted kv" }, JSON.stringify(p.payload))),
    h("td", {}, `${p.input_unit} → ${p.display_unit}`),
    h("td", { class: "effective" }, fmtEffective(p.effective_from), h("div", { class: "muted kv" }, p.effective_from === EPOCH_ISO ? "1970-01-01 (every earlier reading)" : p.effective_from)),
    h("td", {}, whoSet(p.created_by), h("div", { class: "muted kv" }, fmtTime(p.created_at)))));
  const fitRows = fits.map((c) => h("tr", { dataset: { calibrationId: c.calibration_id } },
    h("td", {}, fmtTime(c.created_at), h("div", { class: "muted kv" }, short(c.calibration_id))),
    h("td", {}, c.source === "reference_sensor" ? `reference sensor ${short(c.reference_sensor_id)}` : "explicit points", h("div", { class: "muted" }, `on ${c.base_profile_version}`)),
    h("td", {}, `degree ${c.degree} · ${c.n_points} points`),
    h("td", { class: "kv" }, c.coefficients.map(fmtNum).join(", ")),
    h("td", {}, `rms ${fmtNum(c.rms_error)} · max ${fmtNum(c.max_error)} ${c.unit}`,
      h("div", { class: "muted" }, c.standard_uncertainty == null ? "exact fit (no degree of freedom left)" : `u = ${fmtNum(c.standard_uncertainty)} ${c.unit}`)),
    h("td", {}, whoSet(c.created_by))));
  const residualBox = h("div", { id: "residual-plot", style: "margin-top: 18px" });
  view.replaceChildren(
    h("div", { class: "page-head" }, h("div", {},
      h("div", { class: "muted" }, h("a", { href: "/sensors", "data-link": "" }, "Sensors"), " / "),
      h("h1", {}, s.name),
      h("div", { class: "muted" }, `${s.type} · ${s.input_unit} → ${s.display_unit} · token ${s.token_status}`)),
      can("editor") ? actionBar(...sensorActions(s, h("div"), reload).filter((b) => b.dataset.action === "profile")) : null),
    h("div", { class: "panel" }, h("h2", {}, "Profile versions"),
      h("p", { class: "muted" }, "Each version converts the readings stamped from its effective time up to the next one's, late readings too. Readings already stored keep the version that converted them unless reprocessed (below)."),
      h("table", { id: "profile-versions" },
        h("thead", {}, h("tr", {}, ["Version", "Conversion", "Units", "Effective", "Set by"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...versionRows))),
    reprocessPanel(s, versions),
    h("div", { class: "panel" }, h("h2", {}, "Calibration fits"),
      h("p", { class: "muted" }, `The ${SENSOR_FITS} newest, newest first; each proposes a profile version that corrects the one it fitted.`),
      fits.length
        ? [h("table", { id: "calibration-fits" },
            h("thead", {}, h("tr", {}, ["Fitted", "Source", "Model", "Coefficients c0, c1, …", "Error", "By"].map((t) => h("th", {}, t)))),
            h("tbody", {}, ...fitRows)), residualBox]
        : h("div", { class: "empty" }, "No calibration fit yet.")),
  );
  if (fits.length) await plotResiduals(residualBox, id, fits[0]);
}

async function plotResiduals(box, sensorId, summary) {
  const fit = await api(`/api/v1/sensors/${sensorId}/calibrations/${summary.calibration_id}`);
  // uPlot wants x ascending: the points by their reference value.
  const pts = [...fit.points].sort((a, b) => a.reference - b.reference);
  box.dataset.points = String(pts.length);
  box.append(h("div", { class: "chart-head" }, h("span", { class: "chart-title" },
    `Residuals of the newest fit (${fmtTime(fit.created_at)}) `, h("span", { class: "muted" }, `corrected − reference, ${fit.unit}`))));
  const plotBox = h("div");
  box.append(plotBox);
  const zero = pts.map(() => 0);
  new uPlot({
    width: Math.max(320, box.parentElement.clientWidth - 40), height: 220,
    scales: { x: { time: false } },
    axes: [{ label: `reference (${fit.unit})` }, { label: `residual (${fit.unit})`, size: 70 }],
    series: [
      { label: "reference", value: (u, v) => (v == null ? "—" : fmtNum(v)) },
      { label: "residual", stroke: "#dc2626", width: 0, paths: () => null, points: { show: true, size: 8, fill: "#dc2626" },
        value: (u, v) => (v == null ? "—" : fmtNum(v)) },
      { label: "zero", stroke: "rgba(100,116,139,.6)", width: 1, dash: [4, 4], points: { show: false } },
    ],
  }, [pts.map((p) => p.reference), pts.map((p) => p.residual), zero], plotBox);
}

const nextVersion = (v) => (/\d+$/.test(v) ? v.replace(/\d+$/, (n) => String(Number(n) + 1)) : `${v}-2`);

async function registerSensor(tokenBox, reload) {
  // Running sessions, to fill the edge config's run and session ids.
  let running = [];
  try { running = (await api("/api/v1/capture-sessions", { params: { status: "running", limit: 100 } })).items; } catch (e) { console.error(e); }
  formDialog({
    title: "Register sensor", id: "sensor-form", submit: "Register",
    fields: [
      { name: "name", label: "Name" },
      { name: "type", label: "Type", value: "thermocouple" },
      { name: "input_unit", label: "Input unit", value: "mV", hint: "what the device sends: mV, V, °C …" },
      { name: "display_unit", label: "Display unit", value: "°C" },
      ...profileFields(),
      { name: "session", label: "Edge config for", type: "select", value: running[0]?.id || "",
        options: [["", "— fill in the run and session later —"], ...running.map((s) => [s.id, `${s.experiment.name} / ${s.run.name || short(s.run.id)} / session #${s.ordinal_number}`])] },
    ],
    onSubmit: async (v) => {
      const { kind, version, payload, session, ...sensor } = v;
      const out = await api("/api/v1/sensors", { method: "POST", body: { ...sensor, conversion_profile: { kind, version, payload } } });
      showToken(tokenBox, out, running.find((s) => s.id === session) || null);
      await reload();
    },
  });
}

// The token is in this one answer only: shown once, with a copy button and the [[sensors]]
// table of edge.toml to paste (docs/edge.md).
function showToken(box, out, session) {
  const s = out.sensor;
  const snippet = [
    "[[sensors]]",
    `sensor_id = "${s.id}"`,
    `token = "${out.token}"`,
    `run_id = "${session ? session.run.id : "REPLACE-with-the-run-id"}"`,
    `capture_session_id = "${session ? session.id : "REPLACE-with-the-capture-session-id"}"`,
    'source = "serial"                     # or "mqtt" (then no port/baudrate/protocol)',
    'port = "/dev/ttyUSB0"',
    "baudrate = 9600",
    'protocol = "value"                    # value | csv | jsonl | arduino-thermocouple | max31855-hex',
  ].join("\n");
  const token = h("input", { id: "sensor-token", readonly: true, value: out.token, class: "token", "aria-label": "token" });
  const code = h("pre", { id: "edge-snippet", class: "snippet" }, snippet);
  const copied = h("span", { class: "muted", id: "copy-state" });
  box.replaceChildren(h("div", { class: "panel token-panel", id: "token-panel" },
    h("h2", {}, `Token of ${s.name}`),
    h("p", {}, "Shown this once: the server keeps only its hash. Copy it now."),
    h("div", { class: "token-row" }, token,
      h("button", { id: "copy-token", onclick: () => copyText(out.token, token, copied, "Token copied") }, "Copy token"), copied),
    h("p", {}, "Paste into the edge's config (", h("code", {}, "/etc/benchlink/edge.toml"), "), then ", h("code", {}, "systemctl reload benchlink-edge"), ":"),
    code,
    h("div", { class: "actions-bar" },
      h("button", { class: "secondary", id: "copy-snippet", onclick: () => copyText(snippet, null, copied, "Config copied") }, "Copy config"),
      h("button", { class: "secondary", onclick: () => box.replaceChildren() }, "Done"))));
  box.scrollIntoView({ block: "start" });
}

async function copyText(text, input, label, said) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (a page served over plain http from another host): select it for Ctrl+C.
    if (input) { input.focus(); input.select(); }
    label.textContent = "Select and press Ctrl+C";
    return;
  }
  label.textContent = said;
}

// --- deleted (owners) ----------------------------------------------------------------------

async function viewDeleted(view) {
  const body = h("tbody");
  view.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Deleted"),
      h("div", { class: "muted" }, "Deleted experiments and runs, restorable until they are purged with their data"))),
    h("div", { class: "panel" }, h("table", { id: "deleted-table" },
      h("thead", {}, h("tr", {}, ["What", "Deleted", "Purged after", ""].map((t) => h("th", {}, t)))), body)),
  );
  if (!can("owner")) { body.append(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "Only a project's owners delete and restore."))); return; }
  const { items } = await api("/api/v1/deleted");
  body.replaceChildren(...items.map((d) => h("tr", { dataset: { deletedId: d.id, kind: d.kind } },
    h("td", {}, h("span", { class: "chip" }, d.kind), ` ${d.name || short(d.id)}`),
    h("td", { class: "muted" }, fmtTime(d.deleted_at)),
    h("td", { class: "muted" }, fmtTime(d.purge_after)),
    h("td", {}, h("button", { class: "secondary small", onclick: async () => {
      try {
        await api(`/api/v1/${d.kind === "run" ? "runs" : "experiments"}/${d.id}/restore`, { method: "POST" });
        navigate(d.kind === "run" ? `/runs/${d.id}` : `/experiments/${d.id}`);
      } catch (e) { notice(e.message); }
    } }, "Restore")))));
  if (!items.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "Nothing deleted.")));
}

// --- start -------------------------------------------------------------------------------

(async () => {
  try { state.config = await (await fetch("/portal/config.json")).json(); } catch { /* gateway mode */ }
  loadIdentity();
  try { await applyDefaultIdentity(); } catch (e) { console.error(e); }
  setupIdentityDialog();
  renderIdentity();
  await loadRole();
  route();
})();
