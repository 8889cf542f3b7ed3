// The run page's telemetry: a chart per sensor, or per unit (every sensor of one unit on one
// axis, each in its colour). History comes downsampled by the server (each point with the
// min and max of its bucket, drawn as an envelope), live readings are appended, a drag zooms
// (finer data fetched for the window) or, while annotating, marks a range. Annotations and
// alarm periods are drawn over the readings as bands.

import { h, api, apiAll, errorPanel, fmtInstant, fmtNum, short, colourOf, fade, hideLegendRows, TIME_AXIS } from "./core.js";
import { alarmRule } from "./alarms.js";

const HISTORY_POINTS = 1500;   // server-side downsampling target per sensor
const LIVE_REFETCH = 20000;    // live points appended before the history is re-downsampled
const HEIGHT = 260;
const ALARM_RED = "#dc2626";
const OVERLAY_COLOUR = "#ea580c";  // a second profile version over the first: apart from the palette's first

// ctx: { notes, alarms, byUnit }. Returns the function that closes it all.
export function showTelemetry(box, liveState, session, sensors, ctx) {
  const charts = new Map();
  let closed = false;
  let socket = null;
  let retry = null;
  let lastEventId = null;

  // Charts stand in the order of the run's sensors whichever answer comes first.
  const rank = new Map(sensors.map((s, i) => [s.id, i]));
  const rankOf = (id) => rank.get(id) ?? sensors.length;
  const keyOf = (sensor) => (ctx.byUnit ? `unit:${sensor.display_unit}` : sensor.id);

  function chartFor(sensor) {
    const key = keyOf(sensor);
    let c = charts.get(key);
    if (!c) {
      c = new TelemetryChart(sensor.display_unit, session, ctx, rankOf);
      charts.set(key, c);
      box.querySelector(".empty")?.remove();
    }
    if (!c.has(sensor.id)) {
      // A chart stands where its first sensor in the run's order puts it.
      const at = Math.min(rankOf(sensor.id), Number(c.el.dataset.rank ?? Infinity));
      c.el.dataset.rank = String(at);
      const next = [...box.querySelectorAll(".chart")].find((el) => el !== c.el && Number(el.dataset.rank) > at);
      box.insertBefore(c.el, next || null);
      c.add(sensor);
    }
    return c;
  }

  (async () => {
    // Every sensor's history is asked for at once, and each is drawn as soon as it arrives.
    // A running session's histories each say where the live stream goes on from them; the
    // stream starts at the earliest, so nothing stored between a history and the stream is
    // missing (what a later history already holds comes again and is dropped by append).
    const live = session.status === "running";
    let liveFrom = null;
    await Promise.all(sensors.map((s) => fetchSeries(s.id, session.id, {}, "", live).then((data) => {
      const at = positionOf(data.live_from);
      if (at !== null && (liveFrom === null || at < liveFrom)) liveFrom = at;
      if (!closed && data.total > 0) chartFor(s).setHistory(s.id, data);
    })));
    if (liveFrom !== null && !lastEventId) lastEventId = `p${liveFrom}`;
    // A sensor with several profile versions gets its chart's version switch (charts by
    // unit mix sensors, so they keep each one's current version).
    if (!ctx.byUnit) {
      await Promise.all([...charts.values()].map((c) => apiAll(`/api/v1/sensors/${c.members[0].sensor.id}/conversion-profiles`)
        .then((versions) => { if (!closed) c.offerVersions(versions.map((p) => p.version)); })
        .catch((e) => console.error(e))));
    }
    if (closed) return;
    if (!charts.size) box.append(h("div", { class: "empty" }, session.status === "running" ? "Waiting for readings…" : "No readings in this session."));
    if (session.status === "running") connect();
  })().catch((e) => box.replaceChildren(errorPanel(e)));

  async function connect() {
    if (closed) return;
    try {
      const { ticket } = await api("/api/v1/stream-tickets", { method: "POST" });
      // batch: one "readings" message per group of readings, not a frame per reading.
      const params = new URLSearchParams({ capture_session_id: session.id, ticket, batch: "true" });
      if (lastEventId) params.set("last_event_id", lastEventId);
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(`${proto}//${location.host}/api/v1/telemetry/stream?${params}`);
    } catch (e) { console.error(e); return schedule(); }
    socket.onopen = () => { liveState.className = "live-dot"; liveState.textContent = "● live"; };
    socket.onmessage = (msg) => onMessage(JSON.parse(msg.data));
    socket.onclose = () => { liveState.className = "live-dot off"; liveState.textContent = "○ reconnecting"; schedule(); };
  }
  function onMessage(m) {
    // Where the stream starts (the resume point itself, or the commit position now): a
    // connection that drops before the first reading then resumes without a gap.
    if (m.type === "subscribed") {
      if (m.id) lastEventId = m.id;
    } else if (m.type === "readings" || m.type === "reading") {
      for (const r of m.type === "readings" ? m.items : [m]) {
        lastEventId = r.id;
        const sensor = sensors.find((s) => s.id === r.sensor_id) || { id: r.sensor_id, name: short(r.sensor_id), display_unit: r.unit };
        chartFor(sensor).append(sensor.id, r);
      }
    } else if (m.type === "reset") {
      for (const c of charts.values()) c.reload();
    } else if (m.type.startsWith("alarm.")) {
      window.dispatchEvent(new CustomEvent("benchlink-alarm", { detail: m }));
    }
  }
  function schedule() { if (!closed) retry = setTimeout(connect, 1500); }

  return () => {
    closed = true;
    clearTimeout(retry);
    if (socket) { socket.onclose = null; socket.close(); }
    for (const c of charts.values()) c.destroy();
    liveState.className = "live-dot off";
    liveState.textContent = "○ not live";
  };
}

// version: a profile version's name, or "" for the sensor's current one; live: also ask
// where the live stream goes on from this history (live_from).
function fetchSeries(sensorId, sessionId, range = {}, version = "", live = false) {
  return api("/api/v1/telemetry/series", {
    params: { sensor_id: sensorId, capture_session_id: sessionId, max_points: HISTORY_POINTS, profile_version: version,
      ...(live ? { live: "true" } : {}), ...range },
  });
}

// The commit position of a stream resume point ("p123"), else null.
function positionOf(eventId) {
  const m = /^p(\d+)$/.exec(eventId || "");
  return m ? Number(m[1]) : null;
}

// Points as uPlot columns: x (s), value, min, max.
function columns(points) {
  const cols = [[], [], [], []];
  for (const p of points) {
    cols[0].push(Date.parse(p.timestamp) / 1000); cols[1].push(p.value); cols[2].push(p.min); cols[3].push(p.max);
  }
  return cols;
}

// Several sensors' columns on one x: uPlot draws series against one x array. A sensor has
// no value at another's instants; spanGaps draws its line across them.
function joined(tables) {
  return tables.length === 1 ? tables[0] : uPlot.join(tables);
}

class TelemetryChart {
  constructor(unit, session, ctx, rankOf) {
    this.unit = unit;
    this.session = session;
    this.notes = ctx.notes;
    this.alarms = ctx.alarms;
    this.grouped = ctx.byUnit;
    this.rankOf = rankOf;
    this.members = [];  // { sensor, cols, total, downsampled, live }
    this.zoomed = false;
    this.pending = false;
    this.queue = Promise.resolve();  // histories fetched anew, one after the other (refetch)
    this.held = null;       // while one is on its way: the stream's readings, applied again after it
    this.reloading = null;  // the reload queued or on its way
    this.version = "";    // the profile version shown ("": the sensor's current one)
    this.overlay = null;  // { version, cols: [x, value] } drawn over it, in another colour
    this.shownVersion = null;  // the version the server says the values are under
    this.versionBox = h("span", { class: "version-switch", hidden: true });
    this.title = h("span", { class: "chart-title" });
    this.count = h("span", { class: "points" });
    this.resetBtn = h("button", { class: "secondary", hidden: true, onclick: () => this.resetZoom() }, "Reset zoom");
    this.plotBox = h("div");
    this.alarmKey = h("ul", { class: "alarm-key", hidden: true });
    this.el = h("div", { class: "chart", dataset: { points: 0, unit, alarmBands: 0 } },
      h("div", { class: "chart-head" }, this.title, h("span", { class: "chart-meta" }, this.versionBox, this.count, this.resetBtn)),
      this.plotBox, this.alarmKey);
    if (this.grouped) this.el.dataset.group = "unit";
    this.offNotes = this.notes.onChange(() => this.plot?.redraw(false));
    this.offAlarms = this.alarms.onChange(() => { this.plot?.redraw(false); this.drawAlarmKey(); });
    this.onResize = () => this.plot?.setSize({ width: this.width(), height: HEIGHT });
    window.addEventListener("resize", this.onResize);
  }

  has(sensorId) { return this.members.some((m) => m.sensor.id === sensorId); }
  member(sensorId) { return this.members.find((m) => m.sensor.id === sensorId); }
  width() { return Math.max(320, this.el.parentElement.clientWidth - 8); }

  add(sensor) {
    this.members.push({ sensor, cols: [[], [], [], []], total: 0, downsampled: false, live: 0 });
    this.members.sort((a, b) => this.rankOf(a.sensor.id) - this.rankOf(b.sensor.id));
    const ids = this.members.map((m) => m.sensor.id);
    if (this.grouped) {
      this.el.dataset.sensorIds = ids.join(" ");
      this.el.dataset.series = String(ids.length);
      this.title.replaceChildren(this.members.map((m) => m.sensor.name).join(", "), " ", h("span", { class: "muted" }, `(${this.unit})`));
    } else {
      this.el.dataset.sensorId = sensor.id;
      this.title.replaceChildren(`${sensor.name} `, h("span", { class: "muted" }, `(${this.unit})`));
    }
    this.build();
    this.redraw(true);
    this.drawAlarmKey();
  }

  // (Re)made with a series per sensor: value, then the min and max of its envelope.
  build() {
    this.plot?.destroy();
    this.zoomed = false;
    this.resetBtn.hidden = true;
    const series = [{ label: "time", value: (u, v) => (v == null ? "—" : fmtInstant(v)) }];
    const bands = [];
    this.members.forEach((m, i) => {
      const colour = colourOf(this.grouped ? i : 0);
      const label = this.grouped ? `${m.sensor.name} (${this.unit})`
        : this.shownVersion ? `${this.shownVersion} (${this.unit})` : `value (${this.unit})`;
      series.push(
        { label, stroke: colour, width: 1.5, spanGaps: true, value: (u, v) => (v == null ? "—" : fmtNum(v)) },
        { label: "min", stroke: fade(colour, 0.3), width: 1, spanGaps: true, show: m.downsampled },
        { label: "max", stroke: fade(colour, 0.3), width: 1, spanGaps: true, show: m.downsampled },
      );
      bands.push({ series: [3 * i + 3, 3 * i + 2], fill: fade(colour, 0.1) });
    });
    if (this.overlay) {
      series.push({ label: `${this.overlay.version} (${this.unit})`, stroke: OVERLAY_COLOUR, width: 1.5, dash: [6, 3],
        spanGaps: true, value: (u, v) => (v == null ? "—" : fmtNum(v)) });
    }
    this.plot = new uPlot({
      width: this.width(), height: HEIGHT,
      // setScale off: a drag zooms (onSelect) or, while annotating, marks a range instead.
      cursor: { drag: { x: true, y: false, setScale: false } },
      scales: { x: { time: true } },
      axes: [TIME_AXIS, { label: this.unit, size: 60 }],
      series, bands,
      hooks: {
        setSelect: [(u) => this.onSelect(u)],
        draw: [(u) => { this.drawAlarmBands(u); drawNoteBands(u, this.notes, this.members.map((m) => m.sensor.id)); }],
        setCursor: [(u) => this.alarmTip(u)],
      },
    }, this.data(), this.plotBox);
    hideLegendRows(this.plot, this.members.flatMap((m, i) => [3 * i + 2, 3 * i + 3]));
  }

  data() {
    const tables = this.members.map((m) => m.cols);
    if (this.overlay) tables.push(this.overlay.cols);
    return tables.length === 1 ? tables[0] : uPlot.join(tables);
  }

  // The switch between the sensor's profile versions, and a second one to overlay; only
  // for a sensor with more than one version.
  offerVersions(versions) {
    if (versions.length < 2) return;
    const sensor = this.members[0].sensor;
    const current = sensor.conversion_profile?.version || versions[versions.length - 1];
    const pick = h("select", { class: "version-pick", "aria-label": "Profile version shown",
      title: "Each reading's value under this version where it has one (reprocessed, or first converted by it); otherwise its first value",
      onchange: () => this.setVersion(pick.value, over.value) },
      h("option", { value: "" }, `current (${current})`),
      ...versions.map((v) => h("option", { value: v }, v)));
    const over = h("select", { class: "version-overlay", "aria-label": "Profile version overlaid",
      onchange: () => this.setVersion(pick.value, over.value) },
      h("option", { value: "" }, "no overlay"),
      ...versions.map((v) => h("option", { value: v }, `overlay ${v}`)));
    this.versionBox.replaceChildren("profile ", pick, " ", over);
    this.versionBox.hidden = false;
    this.el.dataset.versions = versions.join(" ");
    // The legend names the version the values are under from now on.
    this.shownVersion = this.members[0].version;
    this.el.dataset.version = this.shownVersion || "";
    this.build();
    this.setHistory(sensor.id, this.members[0].answer);
  }

  setVersion(version, overlay) {
    const id = this.members[0].sensor.id;
    return this.refetch(async () => {
      const [main, extra] = await Promise.all([
        fetchSeries(id, this.session.id, {}, version, this.live()),
        overlay ? fetchSeries(id, this.session.id, {}, overlay) : null,
      ]);
      return () => {
        this.version = version;
        this.shownVersion = main.profile_version;
        this.overlay = extra ? { version: extra.profile_version, cols: columns(extra.points).slice(0, 2) } : null;
        this.build();
        this.setHistory(id, main);
        this.el.dataset.version = main.profile_version;
        this.el.dataset.overlay = extra ? extra.profile_version : "";
      };
    });
  }

  live() { return this.session.status === "running"; }

  // Histories fetched anew while the stream goes on (a reload, another profile version):
  // load() fetches and returns what applies the answers. The readings the stream delivers
  // meanwhile are drawn at once and held, then appended again over the new histories, which
  // drop those a history holds already (at or before its live_from): none is lost, none is
  // counted twice. One at a time; an error is logged, and the chart stays as it was.
  refetch(load) {
    const run = this.queue.then(async () => {
      this.held = [];
      try {
        const apply = await load();
        const held = this.held;
        this.held = null;
        apply();
        for (const [id, r] of held) this.append(id, r);
      } finally {
        this.held = null;
      }
    }).catch((e) => console.error(e));
    this.queue = run;
    return run;
  }

  setHistory(sensorId, data) {
    const m = this.member(sensorId);
    // floor: the commit position this history holds the readings up to (live=true), or null.
    Object.assign(m, { cols: columns(data.points), downsampled: data.downsampled, total: data.total, live: 0,
      version: data.profile_version, answer: data, floor: positionOf(data.live_from) });
    const i = this.members.indexOf(m);
    this.plot.setSeries(3 * i + 2, { show: data.downsampled });
    this.plot.setSeries(3 * i + 3, { show: data.downsampled });
    this.redraw(true);
  }

  append(sensorId, r) {
    const m = this.member(sensorId);
    // In the sensor's history already: the stream starts at the earliest of the page's
    // histories, and a reading committed before this one's live_from is drawn in it.
    if (m.floor != null && r.position != null && r.position <= m.floor) return;
    this.held?.push([sensorId, r]);
    const x = Date.parse(r.timestamp) / 1000;
    const [xs, vs, lo, hi] = m.cols;
    let i = xs.length;
    while (i > 0 && xs[i - 1] > x) i--;  // late readings land in place
    // A sensor has one reading per timestamp: one charted already (its history overlapped
    // the stream's start, or a resumed stream sent it again) is not counted twice.
    if (i > 0 && xs[i - 1] === x) return;
    xs.splice(i, 0, x); vs.splice(i, 0, r.value); lo.splice(i, 0, r.value); hi.splice(i, 0, r.value);
    m.total += 1;
    m.live += 1;
    if (m.live > LIVE_REFETCH && !this.reloading) { this.reload(); return; }
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.redraw(!this.zoomed); });
    }
  }

  redraw(rescale) {
    const data = this.data();
    if (!this.zoomed) this.plot.setData(data, rescale);
    const total = this.members.reduce((n, m) => n + m.total, 0);
    const downsampled = this.members.some((m) => m.downsampled);
    this.el.dataset.points = String(data[0].length);
    this.el.dataset.readings = String(total);
    this.count.textContent = `${total.toLocaleString()} readings` +
      (downsampled ? ` · ${data[0].length.toLocaleString()} points shown (downsampled, min–max shaded)` : "");
  }

  reload() {
    const run = this.refetch(async () => {
      const members = [...this.members];  // a sensor joining meanwhile keeps what it has
      const answers = await Promise.all(members.map((m) => fetchSeries(m.sensor.id, this.session.id, {}, this.version, this.live())));
      const overlay = this.overlay && await fetchSeries(members[0].sensor.id, this.session.id, {}, this.overlay.version);
      return () => {
        if (overlay && this.overlay) this.overlay.cols = columns(overlay.points).slice(0, 2);
        this.zoomed = false;
        this.resetBtn.hidden = true;
        members.forEach((m, i) => this.setHistory(m.sensor.id, answers[i]));
      };
    });
    this.reloading = run;
    run.then(() => { if (this.reloading === run) this.reloading = null; });
    return run;
  }

  async onSelect(u) {
    if (u.select.width < 5) return;
    const since = u.posToVal(u.select.left, "x");
    const until = u.posToVal(u.select.left + u.select.width, "x");
    u.setSelect({ width: 0, height: 0 }, false);
    if (this.notes.annotating) { this.notes.ask(since, until, this.members[0].sensor); return; }
    this.plot.setScale("x", { min: since, max: until });
    this.zoomed = true;
    this.resetBtn.hidden = false;
    // Zooming fetches detail: the same number of points for the narrower window.
    const range = { since: new Date(since * 1000).toISOString(), until: new Date(until * 1000 + 1).toISOString() };
    const answers = await Promise.all(this.members.map((m) => fetchSeries(m.sensor.id, this.session.id, range, this.version)));
    const tables = answers.map((a) => columns(a.points));
    if (this.overlay) tables.push(columns((await fetchSeries(this.members[0].sensor.id, this.session.id, range, this.overlay.version)).points).slice(0, 2));
    if (!this.zoomed) return;  // reset while the detail was on its way
    this.plot.setData(joined(tables), false);
    this.plot.setScale("x", { min: since, max: until });
  }

  resetZoom() {
    this.zoomed = false;
    this.resetBtn.hidden = true;
    this.redraw(true);
  }

  // The run's alarms on this chart's sensors, each over [raised_at, cleared_at), or up to
  // the chart's right edge while it is still raised.
  // Those of this session's time only (a run's alarms span its sessions).
  chartAlarms() {
    const ids = new Set(this.members.map((m) => m.sensor.id));
    const from = Date.parse(this.session.started_at);
    const to = this.session.stopped_at ? Date.parse(this.session.stopped_at) : Infinity;
    return this.alarms.items.filter((a) => ids.has(a.sensor_id) && Date.parse(a.raised_at) <= to &&
      (!a.cleared_at || Date.parse(a.cleared_at) >= from));
  }

  alarmText(a) {
    const who = this.grouped ? `${this.member(a.sensor_id)?.sensor.name || short(a.sensor_id)} ` : "";
    return `alarm: ${who}${alarmRule(a, this.unit)}`;
  }

  drawAlarmBands(u) {
    const { ctx, bbox } = u;
    const dpr = devicePixelRatio;
    let drawn = 0;
    ctx.save();
    ctx.beginPath();
    ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
    ctx.clip();
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    for (const a of this.chartAlarms()) {
      const x0 = Math.max(bbox.left, u.valToPos(Date.parse(a.raised_at) / 1000, "x", true));
      const x1 = a.cleared_at ? u.valToPos(Date.parse(a.cleared_at) / 1000, "x", true) : bbox.left + bbox.width;
      if (x1 < bbox.left || x0 > bbox.left + bbox.width) continue;
      const w = Math.max(x1 - x0, 2 * dpr);
      ctx.fillStyle = fade(ALARM_RED, 0.1);
      ctx.fillRect(x0, bbox.top, w, bbox.height);
      // A solid stripe along the bottom: annotations label the top.
      ctx.fillStyle = ALARM_RED;
      ctx.fillRect(x0, bbox.top + bbox.height - 4 * dpr, w, 4 * dpr);
      // Its label inside the plot: an open band at the right edge has it end there.
      const label = `⚠ ${alarmRule(a, this.unit)}${a.cleared_at ? "" : " (raised)"}`;
      const right = bbox.left + bbox.width - ctx.measureText(label).width - 4 * dpr;
      ctx.fillText(label, Math.max(bbox.left + 4 * dpr, Math.min(x0 + 4 * dpr, right)), bbox.top + bbox.height - 8 * dpr);
      drawn += 1;
    }
    ctx.restore();
    this.el.dataset.alarmBands = String(drawn);
  }

  // Hovering inside an alarm's period says which rule it was (the native tooltip).
  alarmTip(u) {
    const x = u.cursor.left;
    if (x == null || x < 0) return;
    const t = u.posToVal(x, "x") * 1000;
    const hits = this.chartAlarms().filter((a) => Date.parse(a.raised_at) <= t && (!a.cleared_at || t < Date.parse(a.cleared_at)));
    u.over.title = hits.map((a) => this.alarmText(a)).join("\n");
  }

  // Under the chart: what each red band is, and when.
  drawAlarmKey() {
    const items = this.chartAlarms().sort((a, b) => Date.parse(a.raised_at) - Date.parse(b.raised_at));
    this.alarmKey.hidden = !items.length;
    this.alarmKey.replaceChildren(...items.map((a) => h("li", { dataset: { alarmId: a.id } },
      h("span", { class: "swatch alarm" }), ` ${this.alarmText(a)} · `,
      h("span", { class: "muted" }, `${fmtInstant(Date.parse(a.raised_at) / 1000)} → ${a.cleared_at ? fmtInstant(Date.parse(a.cleared_at) / 1000) : "still raised"}`))));
  }

  destroy() {
    this.offNotes?.();
    this.offAlarms?.();
    window.removeEventListener("resize", this.onResize);
    this.plot?.destroy();
  }
}

// Bands for ranges and lines for instants, on the charts of the sensors they concern (a
// note about no sensor is on every chart). Text goes on the canvas, never into the page.
function drawNoteBands(u, notes, sensorIds) {
  const { ctx, bbox } = u;
  ctx.save();
  ctx.beginPath();
  ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
  ctx.clip();
  ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
  ctx.textAlign = "left";  // uPlot leaves the axes' alignment on the context
  ctx.textBaseline = "alphabetic";
  for (const a of notes.items) {
    if (a.sensor_id && !sensorIds.includes(a.sensor_id)) continue;
    const x0 = u.valToPos(Date.parse(a.start) / 1000, "x", true);
    const x1 = a.end ? u.valToPos(Date.parse(a.end) / 1000, "x", true) : x0;
    if (x1 < bbox.left || x0 > bbox.left + bbox.width) continue;
    ctx.fillStyle = "rgba(245, 158, 11, 0.16)";
    ctx.fillRect(x0, bbox.top, Math.max(x1 - x0, 2 * devicePixelRatio), bbox.height);
    ctx.fillStyle = "#b45309";
    const label = a.text.length > 40 ? `${a.text.slice(0, 39)}…` : a.text;
    ctx.fillText(label, Math.max(x0, bbox.left) + 4 * devicePixelRatio, bbox.top + 12 * devicePixelRatio);
  }
  ctx.restore();
}
