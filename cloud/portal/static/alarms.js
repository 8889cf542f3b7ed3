// A run's alarms: one store the run page's list and its charts (bands over the alarm's
// period) both draw from, reloaded when the live stream or the journal reports a transition.

import { h, api, apiAll, can, errorPanel, fmtTime, short } from "./core.js";

// The rule of an alarm as an operator says it ("above 850 °C", "silent for 30 s"), its
// numbers in the sensor's display unit.
export function alarmRule(a, unit = "") {
  const r = a.rule || {};
  const u = unit ? ` ${unit}` : "";
  if (a.kind === "above") return `above ${r.threshold}${u}`;
  if (a.kind === "below") return `below ${r.threshold}${u}`;
  if (a.kind === "outside") return `outside ${r.low}…${r.high}${u}`;
  if (a.kind === "rate") return `rate over ${r.threshold}${u}/s in ${r.window_s} s`;
  if (a.kind === "stale") return `silent for ${r.after_s} s`;
  return "probe fault";
}

export class RunAlarms {
  constructor(runId) {
    this.runId = runId;
    this.items = [];
    this.listeners = new Set();
  }

  onChange(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  async load() {
    this.items = await apiAll(`/api/v1/runs/${this.runId}/alarms`);
    for (const fn of this.listeners) fn();
  }
}

// The list, newest first: those still raised on top with an Ack button for editors.
export function showAlarms(list, alarms, sensors) {
  let closed = false;
  const names = new Map(sensors.map((s) => [s.id, s.name]));
  const units = new Map(sensors.map((s) => [s.id, s.display_unit]));
  const nameOf = (id) => names.get(id) || short(id);
  const who = (actor) => actor.startsWith("user:") ? `user ${short(actor.slice(5))}` : actor;
  const num = (v) => `${Number(v.toPrecision(6))}`;
  async function ack(a, button) {
    const note = prompt(`Acknowledge the alarm "${alarmRule(a, units.get(a.sensor_id))}" on ${nameOf(a.sensor_id)}: note`, "");
    if (note === null) return;
    button.disabled = true;
    try { await api(`/api/v1/alarms/${a.id}/ack`, { method: "POST", body: { note } }); }
    catch (e) { alert(e.message); }
    await alarms.load();
  }
  function draw() {
    if (closed) return;
    const items = [...alarms.items];
    if (!items.length) { list.replaceChildren(h("li", { class: "muted" }, "No alarms.")); return; }
    const rank = { raised: 0, acknowledged: 1, cleared: 2 };
    items.sort((x, y) => rank[x.state] - rank[y.state]);
    list.replaceChildren(...items.map((a) => {
      const button = can("editor") && !a.acknowledged_at
        ? h("button", { class: "secondary small ack", onclick: (e) => ack(a, e.currentTarget) }, "Ack") : null;
      return h("li", { class: `alarm ${a.state}`, dataset: { alarmId: a.id, state: a.state } },
        h("span", { class: `badge ${a.state === "raised" ? "failed" : a.state === "acknowledged" ? "draft" : "succeeded"}` }, a.state),
        " ", h("strong", {}, nameOf(a.sensor_id)), ` ${alarmRule(a, units.get(a.sensor_id))}`,
        a.value !== null ? ` · ${num(a.value)} ${units.get(a.sensor_id) || ""}` : "",
        h("span", { class: "muted" }, ` · ${fmtTime(a.raised_at)}`, a.cleared_at ? ` → ${fmtTime(a.cleared_at)}` : "",
          a.late ? " · late" : "", a.acknowledged_by ? ` · acknowledged by ${who(a.acknowledged_by)}${a.ack_note ? `: ${a.ack_note}` : ""}` : ""),
        button ? " " : "", button);
    }));
  }
  const off = alarms.onChange(draw);
  const onAlarm = (e) => { if (e.detail.run_id === alarms.runId) alarms.load().catch(console.error); };
  window.addEventListener("benchlink-alarm", onAlarm);
  alarms.load().catch((e) => list.replaceChildren(h("li", {}, errorPanel(e))));
  return () => { closed = true; off(); window.removeEventListener("benchlink-alarm", onAlarm); };
}
