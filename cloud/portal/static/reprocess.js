// The sensor page's reprocessing: editors re-derive the sensor's stored readings under one
// of its profile versions (POST /sensors/{id}/reprocess), and every role follows the jobs'
// progress: the sensor's jobs (GET /sensors/{id}/jobs, whoever started them), each polled
// (GET /jobs/{id}) while it runs.

import { h, api, can, badge, fmtTime, short, onCleanup, errorPanel } from "./core.js";

const POLL_MS = 1000;
const SHOWN = 20;  // the newest jobs of the sensor
const ACTIVE = new Set(["queued", "running"]);

export function reprocessPanel(sensor, versions) {
  const list = h("tbody");
  const rows = new Map();  // job id -> { row, job }
  let timer = null;
  let closed = false;
  onCleanup(() => { closed = true; clearTimeout(timer); });

  function draw(job) {
    const done = job.progress.done, total = job.progress.total;
    const pct = total ? Math.round((100 * done) / total) : (job.status === "succeeded" ? 100 : 0);
    const cancel = can("editor") && ACTIVE.has(job.status)
      ? h("button", { class: "secondary small", dataset: { action: "cancel-job" }, onclick: () => cancelJob(job.id) }, "Cancel")
      : null;
    const row = h("tr", { dataset: { jobId: job.id, status: job.status } },
      h("td", {}, h("strong", {}, job.profile_version), h("div", { class: "muted kv" }, `job ${short(job.id)}`)),
      h("td", {}, job.run_id ? `run ${short(job.run_id)}` : "every run"),
      h("td", {}, badge(job.status), job.error ? h("div", { class: "error-text" }, job.error) : null),
      h("td", { class: "job-progress" },
        h("progress", { max: String(Math.max(total, 1)), value: String(total ? done : pct ? 1 : 0) }),
        h("span", { class: "progress-text" }, ` ${done.toLocaleString()} / ${total.toLocaleString()} (${pct} %)`),
        h("div", { class: "muted" }, `${job.converted} converted · ${job.unchanged} unchanged · ${job.unconvertible} unconvertible`)),
      h("td", {}, fmtTime(job.started_at || job.created_at), h("div", { class: "muted" }, job.finished_at ? `ended ${fmtTime(job.finished_at)}` : "")),
      h("td", {}, cancel));
    const old = rows.get(job.id)?.row;
    if (old) old.replaceWith(row); else list.prepend(row);
    rows.set(job.id, { row, job });
    empty.hidden = rows.size > 0;
    table.hidden = rows.size === 0;
  }

  async function poll() {
    timer = null;
    const active = [...rows.values()].filter((r) => ACTIVE.has(r.job.status));
    await Promise.all(active.map((r) => api(`/api/v1/jobs/${r.job.id}`).then(draw).catch((e) => console.error(e))));
    schedule();
  }
  function schedule() {
    if (closed || timer) return;
    if ([...rows.values()].some((r) => ACTIVE.has(r.job.status))) timer = setTimeout(poll, POLL_MS);
  }
  async function cancelJob(id) {
    try { draw(await api(`/api/v1/jobs/${id}/cancel`, { method: "POST" })); } catch (e) { formError.replaceChildren(errorPanel(e)); }
  }

  const formError = h("div", { class: "form-error", role: "alert" });
  const form = can("editor") ? reprocessForm(sensor, versions, formError, (job) => { draw(job); schedule(); }) : null;
  const table = h("table", { id: "reprocess-jobs", hidden: true },
    h("thead", {}, h("tr", {}, ["Version", "Scope", "Status", "Progress", "Started", ""].map((t) => h("th", {}, t)))), list);
  const empty = h("div", { class: "empty" }, "This sensor's readings have not been reprocessed.");
  const panel = h("div", { class: "panel", id: "reprocessing" }, h("h2", {}, "Reprocessing"),
    h("p", { class: "muted" }, "Re-derives the stored readings from their raw values under a version; each reading keeps its first value too, and a run's chart can show either. The sensor's newest jobs are listed here, whoever started them."),
    form, formError,
    table, empty);
  // Newest first from the API; drawn oldest first, as each row goes on top.
  api(`/api/v1/sensors/${sensor.id}/jobs`, { params: { limit: SHOWN } })
    .then((page) => { for (const j of [...page.items].reverse()) if (!rows.has(j.id)) draw(j); schedule(); })
    .catch((e) => formError.replaceChildren(errorPanel(e)));
  return panel;
}

function reprocessForm(sensor, versions, formError, started) {
  const current = sensor.conversion_profile?.version;
  const version = h("select", { name: "profile_version", "aria-label": "Version" },
    ...[...versions].reverse().map((p) => h("option", { value: p.version, selected: p.version === current },
      p.version === current ? `${p.version} (current)` : p.version)));
  // The runs of recent capture sessions to pick from; any run's id may be typed too.
  const runs = h("datalist", { id: "reprocess-runs" });
  const run = h("input", { name: "run_id", list: "reprocess-runs", placeholder: "every run (or pick one)", size: "38", "aria-label": "Run id (optional)" });
  api("/api/v1/capture-sessions", { params: { limit: 100 } }).then((page) => {
    const seen = new Map(page.items.map((x) => [x.run.id, `${x.experiment.name} / ${x.run.name || short(x.run.id)}`]));
    runs.replaceChildren(...[...seen].map(([id, label]) => h("option", { value: id }, label)));
  }).catch((e) => console.error(e));
  const submit = h("button", { type: "submit", id: "reprocess-start" }, "Reprocess");
  return h("form", { id: "reprocess-form", class: "inline-form", onsubmit: async (ev) => {
    ev.preventDefault();
    formError.replaceChildren();
    submit.disabled = true;
    try {
      const body = { profile_version: version.value, ...(run.value.trim() ? { run_id: run.value.trim() } : {}) };
      started(await api(`/api/v1/sensors/${sensor.id}/reprocess`, { method: "POST", body }));
    } catch (e) {
      const why = e.errors?.length ? e.errors.map((x) => `${x.field}: ${x.reason}`).join("; ") : e.message;
      formError.replaceChildren(h("div", { class: "error-text" }, why));
    } finally { submit.disabled = false; }
  } }, h("label", {}, "Version ", version), " ", h("label", {}, "Run ", run, runs, h("span", { class: "muted" }, " (optional)")), " ", submit);
}
