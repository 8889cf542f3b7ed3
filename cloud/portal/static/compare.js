// The compare page: runs chosen in an experiment's list, one sensor's readings overlaid (the
// sensor by name, so each run's own sessions line up) on time since each run's first capture
// session started, or on absolute time, and one metric by step; each run in its colour.
// Everything it shows is in its URL, so it can be shared and reloaded:
//   /compare?run=ID&run=ID&sensor=NAME&metric=NAME&axis=run|time

import { h, api, badge, short, fmtInstant, fmtNum, fmtTime, colourOf, fade, onCleanup, apiAll, TIME_AXIS } from "./core.js";

const SENSOR_POINTS = 1000;   // per run; a zoomed window gets as many again
const METRIC_POINTS = 2000;
const HEIGHT = 300;

export async function viewCompare(view) {
  const query = new URLSearchParams(location.search);
  const ids = [...new Set(query.getAll("run"))];
  if (!ids.length) {
    view.replaceChildren(h("div", { class: "panel empty" }, "Choose the runs to compare in an experiment's list of runs."));
    return;
  }
  const runs = await Promise.all(ids.map((id) => api(`/api/v1/runs/${id}`)));
  const [sensors, summaries, exps] = await Promise.all([
    apiAll("/api/v1/sensors"),
    Promise.all(runs.map((r) => api(`/api/v1/runs/${r.id}/metrics/summary`))),
    Promise.all([...new Set(runs.map((r) => r.experiment_id))].map((id) => api(`/api/v1/experiments/${id}`))),
  ]);
  const metricNames = [...new Set(summaries.flat().map((m) => m.name))].sort();
  const page = {
    runs, sensors, summaries, metricNames,
    sensor: query.get("sensor") || await firstSensorWithReadings(runs, sensors),
    metric: query.get("metric") || metricNames[0] || null,
    axis: query.get("axis") === "time" ? "time" : "run",
  };
  const legend = new RunLegend(runs);
  const sensorPanel = h("div", { class: "panel" });
  const metricPanel = h("div", { class: "panel" });
  view.replaceChildren(
    h("div", { class: "crumbs" }, h("a", { href: "/", "data-link": true }, "Experiments"), " / ",
      ...exps.flatMap((e, i) => [i ? ", " : "", h("a", { href: `/experiments/${e.id}`, "data-link": true }, e.name)]), " / compare"),
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, `Compare ${runs.length} runs`),
      h("div", { class: "muted" }, "Each run in its colour; drag across the readings to zoom in (finer data is fetched for the window)."))),
    h("div", { class: "panel" }, controls(page, () => { save(page); sensorChart.show(page); }, () => { save(page); metricChart.show(page); })),
    h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Runs")), legend.el),
    sensorPanel, metricPanel,
  );
  const sensorChart = new CompareChart(sensorPanel, legend, "sensor");
  const metricChart = new CompareChart(metricPanel, legend, "metric");
  onCleanup(() => { sensorChart.destroy(); metricChart.destroy(); });
  save(page);
  await Promise.all([sensorChart.show(page), metricChart.show(page)]);
}

function save(page) {
  const q = new URLSearchParams(page.runs.map((r) => ["run", r.id]));
  if (page.sensor) q.set("sensor", page.sensor);
  if (page.metric) q.set("metric", page.metric);
  q.set("axis", page.axis);
  history.replaceState({}, "", `/compare?${q}`);
}

// The sensor to open with: the one of the first reading of the first run that has any.
async function firstSensorWithReadings(runs, sensors) {
  const names = new Map(sensors.map((s) => [s.id, s.name]));
  for (const r of runs) {
    const { items } = await api("/api/v1/telemetry", { params: { run_id: r.id, limit: 1 } });
    if (items.length && names.has(items[0].sensor_id)) return names.get(items[0].sensor_id);
  }
  return sensors.length ? sensors[0].name : null;
}

function controls(page, onSensor, onMetric) {
  const sensor = h("select", { id: "compare-sensor", "aria-label": "sensor" },
    ...page.sensors.map((s) => h("option", { value: s.name, selected: s.name === page.sensor }, `${s.name} (${s.display_unit})`)));
  sensor.addEventListener("change", () => { page.sensor = sensor.value; onSensor(); });
  const axis = ["run", "time"].map((value) => {
    const input = h("input", { type: "radio", name: "axis", value, id: `axis-${value}`, checked: page.axis === value });
    input.addEventListener("change", () => { page.axis = value; onSensor(); });
    return h("label", {}, input, value === "run" ? "time since the session started" : "absolute time");
  });
  const metric = h("select", { id: "compare-metric", "aria-label": "metric", disabled: !page.metricNames.length },
    ...(page.metricNames.length ? page.metricNames.map((m) => h("option", { value: m, selected: m === page.metric }, m))
      : [h("option", {}, "no metrics logged")]));
  metric.addEventListener("change", () => { page.metric = metric.value; onMetric(); });
  return h("div", { class: "compare-controls" },
    h("label", {}, "Sensor", sensor), h("span", { class: "segmented-radio" }, ...axis), h("label", {}, "Metric", metric));
}

// The runs with their colours, and each one's value where the cursor is on either chart.
class RunLegend {
  constructor(runs) {
    this.cells = new Map();
    this.counts = new Map();
    this.at = h("th", { class: "cursor-at", id: "cursor-at" }, "at the cursor");
    this.el = h("table", { class: "run-legend", id: "run-legend" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), ["Run", "Status", "Params", "First session started", "Readings"].map((t) => h("th", {}, t)), this.at)),
      h("tbody", {}, runs.map((r, i) => {
        const value = h("td", { class: "value" }, "—");
        const count = h("td", { class: "muted count" }, "");
        this.cells.set(r.id, value);
        this.counts.set(r.id, count);
        return h("tr", { dataset: { runId: r.id, colour: colourOf(i) } },
          h("td", {}, h("span", { class: "swatch", style: `background:${colourOf(i)}` })),
          h("td", {}, h("a", { href: `/runs/${r.id}`, "data-link": true }, r.name || `run ${short(r.id)}`)),
          h("td", {}, badge(r.status)),
          h("td", {}, Object.entries(r.params || {}).map(([k, v]) => h("span", { class: "chip kv" }, `${k}=${JSON.stringify(v)}`))),
          h("td", { class: "muted started" }, "—"),
          count, value);
      })));
  }

  started(runId, iso) { this.el.querySelector(`tr[data-run-id='${runId}'] .started`).textContent = iso ? fmtTime(iso) : "never"; }
  count(runId, text) { this.counts.get(runId).textContent = text; }

  // values: Map run id -> text; null clears.
  show(title, values) {
    this.at.textContent = title || "at the cursor";
    for (const [id, cell] of this.cells) cell.textContent = values?.get(id) ?? "—";
  }
}

// Seconds since the start as h:mm:ss (or m:ss), with as many decimals as asked (3: the
// millisecond, for the hover; fewer for an axis' ticks, as their spacing needs).
function fmtSince(s, decimals) {
  const sign = s < 0 ? "−" : "";
  const a = Math.abs(s);
  const hours = Math.floor(a / 3600);
  const min = Math.floor((a % 3600) / 60);
  const sec = a % 60;
  const secs = decimals ? sec.toFixed(decimals).padStart(3 + decimals, "0") : String(Math.floor(sec)).padStart(2, "0");
  return hours ? `${sign}${hours}:${String(min).padStart(2, "0")}:${secs}` : `${sign}${min}:${secs}`;
}

const tickDecimals = (incr) => (incr >= 1 ? 0 : incr >= 0.1 ? 1 : incr >= 0.01 ? 2 : 3);

// The chart of one kind ("sensor": readings by time, "metric": values by step) of all runs.
class CompareChart {
  constructor(panel, legend, kind) {
    this.panel = panel;
    this.legend = legend;
    this.kind = kind;
    this.plot = null;
    this.onResize = () => this.plot?.setSize({ width: this.width(), height: HEIGHT });
    window.addEventListener("resize", this.onResize);
  }

  width() { return Math.max(320, this.panel.clientWidth - 36); }

  async show(page) {
    this.page = page;
    this.seq = (this.seq || 0) + 1;
    const seq = this.seq;
    const tables = this.kind === "sensor" ? await this.sensorTables() : await this.metricTables();
    if (seq !== this.seq) return;  // another choice was made meanwhile
    this.draw(tables);
  }

  // Each run's columns: x, value, min, max (x on the chosen time axis).
  async sensorTables() {
    const p = this.page;
    if (!p.sensor) return { empty: "No sensors in this project." };
    const answer = await compareApi(p, {});
    this.unit = answer.display_unit;
    for (const r of answer.runs) {
      this.legend.started(r.run_id, r.session_started_at);
      this.legend.count(r.run_id, !r.total ? `none of ${p.sensor}` : `${r.total.toLocaleString()}` +
        (r.downsampled ? ` (${r.points.length.toLocaleString()} points, min–max kept)` : ""));
    }
    this.full = answer.runs.map((r) => sensorColumns(r, p.axis));
    return { runs: answer.runs, cols: this.full };
  }

  async metricTables() {
    const p = this.page;
    if (!p.metric) return { empty: "No metrics logged in these runs." };
    const runs = await Promise.all(p.runs.map((r, i) => (p.summaries[i].some((m) => m.name === p.metric)
      ? api(`/api/v1/runs/${r.id}/metrics`, { params: { name: p.metric, max_points: METRIC_POINTS } }).then((s) => s.points)
      : [])));
    this.unit = p.summaries.flat().find((m) => m.name === p.metric)?.unit || "";
    return { runs: runs.map((pts, i) => ({ run_id: p.runs[i].id, points: pts, downsampled: false })),
      cols: runs.map((pts) => [pts.map((x) => x.step), pts.map((x) => x.value), [], []]) };
  }

  title() {
    const p = this.page;
    if (this.kind === "metric") return [p.metric || "Metric", this.unit ? h("span", { class: "muted" }, ` (${this.unit})`) : null];
    return [p.sensor || "Readings", this.unit ? h("span", { class: "muted" }, ` (${this.unit})`) : null,
      h("span", { class: "muted" }, p.axis === "run" ? " · by time since each run's first session started" : " · by absolute time")];
  }

  draw({ runs, cols, empty }) {
    this.plot?.destroy();
    this.plot = null;
    const meta = h("span", { class: "chart-meta" });
    this.reset = h("button", { class: "secondary", hidden: true, onclick: () => this.resetZoom() }, "Reset zoom");
    const box = h("div");
    const withData = runs ? runs.filter((r) => r.points.length).length : 0;
    const chart = h("div", { class: "chart", id: `compare-${this.kind}-chart`,
      dataset: { runs: runs ? runs.length : 0, series: withData, axis: this.kind === "sensor" ? this.page.axis : "step", zoomed: "false" } },
      h("div", { class: "chart-head" }, h("span", { class: "chart-title" }, ...this.title()), h("span", { class: "chart-meta" }, meta, this.reset)), box);
    this.panel.replaceChildren(h("div", { class: "panel-head" }, h("h2", {}, this.kind === "sensor" ? "Readings" : "Metric")), chart);
    this.chart = chart;
    if (empty || !withData) {
      box.append(h("div", { class: "empty" }, empty || (this.kind === "sensor"
        ? `None of these runs has readings of ${this.page.sensor}.` : `None of these runs logged ${this.page.metric}.`)));
      return;
    }
    meta.textContent = this.kind === "sensor" ? "drag to zoom" : "drag to zoom, double-click to reset";
    this.plot = new uPlot(this.options(runs), joinRuns(cols), box);
    chart.dataset.points = String(this.plot.data[0].length);
  }

  options(runs) {
    const sensor = this.kind === "sensor";
    const relative = sensor && this.page.axis === "run";
    const series = [{ label: sensor ? "time" : "step" }];
    const bands = [];
    runs.forEach((r, i) => {
      const c = colourOf(i);
      const name = this.page.runs[i].name || `run ${short(r.run_id)}`;
      series.push({ label: name, stroke: c, width: 2, spanGaps: true },
        { label: `${name} min`, stroke: fade(c, 0.35), width: 1, spanGaps: true, show: !!r.downsampled },
        { label: `${name} max`, stroke: fade(c, 0.35), width: 1, spanGaps: true, show: !!r.downsampled });
      bands.push({ series: [3 * i + 3, 3 * i + 2], fill: fade(c, 0.12) });
    });
    const xAxis = relative
      ? { label: "time since the session started", space: 70, values: (u, splits, ax, space, incr) => splits.map((v) => fmtSince(v, tickDecimals(incr))) }
      : sensor ? { ...TIME_AXIS, label: "time (this browser's time zone)" } : { label: "step" };
    return {
      width: this.width(), height: HEIGHT, series, bands, legend: { show: false },
      scales: { x: { time: sensor && !relative } },
      axes: [xAxis, { label: this.unit || undefined, size: 60 }],
      // The readings chart fetches the window it is zoomed to; the metric chart zooms in place.
      cursor: { drag: { x: true, y: false, setScale: !sensor } },
      hooks: { setSelect: sensor ? [(u) => this.zoom(u)] : [], setCursor: [(u) => this.hover(u)] },
    };
  }

  // What each run reads where the cursor is (its nearest point, within its own span).
  hover(u) {
    const idx = u.cursor.idx;
    if (idx == null) { this.legend.show(null, null); return; }
    const x = u.data[0][idx];
    const sensor = this.kind === "sensor";
    const where = !sensor ? `step ${x}` : this.page.axis === "run" ? `+${fmtSince(x, 3)}` : fmtInstant(x);
    const values = new Map();
    this.page.runs.forEach((r, i) => {
      const v = nearest(u.data[1 + 3 * i], idx);
      values.set(r.id, v == null ? "—" : `${fmtNum(v)}${this.unit ? ` ${this.unit}` : ""}`);
    });
    this.legend.show(`${sensor ? this.page.sensor : this.page.metric} at ${where}`, values);
  }

  async zoom(u) {
    if (u.select.width < 5) return;
    const lo = u.posToVal(u.select.left, "x");
    const hi = u.posToVal(u.select.left + u.select.width, "x");
    u.setSelect({ width: 0, height: 0 }, false);
    u.setScale("x", { min: lo, max: hi });
    this.reset.hidden = false;
    this.chart.dataset.zoomed = "true";
    const range = this.page.axis === "run" ? { t_since: lo, t_until: hi }
      : { since: new Date(lo * 1000).toISOString(), until: new Date(hi * 1000 + 1).toISOString() };
    const seq = this.seq;
    const answer = await compareApi(this.page, range);
    if (seq !== this.seq || this.chart.dataset.zoomed !== "true") return;
    u.setData(joinRuns(answer.runs.map((r) => sensorColumns(r, this.page.axis))), false);
    u.setScale("x", { min: lo, max: hi });
    this.chart.dataset.points = String(u.data[0].length);
    this.chart.dataset.window = `${lo}..${hi}`;
  }

  resetZoom() {
    this.reset.hidden = true;
    this.chart.dataset.zoomed = "false";
    delete this.chart.dataset.window;
    this.plot.setData(joinRuns(this.full), true);
    this.chart.dataset.points = String(this.plot.data[0].length);
  }

  destroy() {
    window.removeEventListener("resize", this.onResize);
    this.plot?.destroy();
  }
}

function compareApi(page, range) {
  return api("/api/v1/runs/compare", {
    params: { run_id: page.runs.map((r) => r.id), sensor: page.sensor, max_points: SENSOR_POINTS, ...range },
  });
}

function sensorColumns(run, axis) {
  const pts = run.points;
  const x = axis === "run" ? pts.map((p) => p.t) : pts.map((p) => Date.parse(p.timestamp) / 1000);
  return [x, pts.map((p) => p.value), pts.map((p) => p.min), pts.map((p) => p.max)];
}

// Runs' columns on one x (uPlot draws every series against one x array); a run has no value
// at another's instants, and its line spans them (spanGaps).
function joinRuns(tables) {
  return uPlot.join(tables.map((t) => (t[2].length ? t : [t[0], t[1], t[1], t[1]])));
}

// A run's value nearest the cursor's index, if the cursor is within the run's own span.
function nearest(ys, idx) {
  let first = -1;
  let last = -1;
  for (let i = 0; i < ys.length; i++) if (ys[i] != null) { if (first < 0) first = i; last = i; }
  if (first < 0 || idx < first || idx > last) return null;
  for (let d = 0; d < ys.length; d++) {
    if (idx - d >= 0 && ys[idx - d] != null) return ys[idx - d];
    if (idx + d < ys.length && ys[idx + d] != null) return ys[idx + d];
  }
  return null;
}
