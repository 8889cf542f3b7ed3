"""What the demo tells a person: how to look at it while it runs (portal, live stream
commands), and at the end the wrap-up of the run and a summary of what landed."""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from demo_feed import log_metrics
from demo_scene import Scene
from demo_seed import PROJECT_NAME, Api

_transcripts: list[TextIO] = []


def keep_transcript(path: Path) -> None:
    """Also append every line the demo says to ``path``: once stdout is gone it is the only
    place the wrap-up, or the error that stopped it, can still be read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _transcripts.append(path.open("a", encoding="utf-8"))
    say(f"== make demo, {datetime.now(UTC).isoformat(timespec='seconds')} ==", terminal=False)


def say(message: str = "", *, terminal: bool = True) -> None:
    """Print a line. Once stdout is gone (``make demo | tee demo.log`` and Ctrl-C, which stops
    tee too), go on without it: the wrap-up must still stop the session, close the run and
    write summary.json."""
    for transcript in _transcripts:
        transcript.write(message + "\n")
        transcript.flush()
    if not terminal:
        return
    try:
        print(message, flush=True)
    except (BrokenPipeError, ValueError):  # ValueError: stdout was closed
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # also the flush at exit, which would fail again
        os.close(devnull)


def wrap_up(api: Api, scene: Scene, metric_steps: int) -> dict[str, Any]:
    run, session = scene.run_id, scene.session_id
    stopped = api.post(
        f"/api/v1/runs/{run}/capture-sessions/{session}/stop",
        {"status": "succeeded", "stopped_at": datetime.now(UTC).isoformat()},
    )
    log_metrics(api, run, range(metric_steps + 1, metric_steps + 4))
    loss = api.get(f"/api/v1/runs/{run}/metrics", name="loss")["points"]
    patched = api.patch(f"/api/v1/runs/{run}", {"status": "succeeded"})
    archived = api.post(f"/api/v1/experiments/{scene.experiment_id}/archive")
    batch = api.post(
        "/api/v1/runs:batch-status", {"run_ids": [scene.warmup_run_id], "status": "cancelled"}
    )
    say(f"capture session {session}: {stopped['status']}")
    say(f"metrics: {len(loss)} loss points read back, last {loss[-1]['value'] if loss else '-'}")
    say(f"run {run}: {patched['status']}; experiment {scene.experiment_id}: {archived['status']}")
    say(f"batch status: warm-up run -> {batch['results'][0]['status']} ({batch['succeeded']} ok)")
    return {"loss_points": len(loss)}


def summarize(api: Api, scene: Scene) -> dict[str, Any]:
    readings = {}
    for name, sid in scene.sensors.items():
        series = api.get(
            "/api/v1/telemetry/series", sensor_id=sid, run_id=scene.run_id, max_points=2
        )
        readings[name] = series["total"]
    events = api.items(f"/api/v1/experiments/{scene.experiment_id}/events", limit=1000)
    session = api.get(f"/api/v1/runs/{scene.run_id}/capture-sessions/{scene.session_id}")
    return {
        "project_id": scene.seed.project_id,
        "owner_user_id": scene.seed.owner_user_id,
        "experiment_id": scene.experiment_id,
        "run_id": scene.run_id,
        "warmup_run_id": scene.warmup_run_id,
        "capture_session_id": scene.session_id,
        "sensors": scene.sensors,
        "readings": readings,
        "metrics": api.get(f"/api/v1/runs/{scene.run_id}/metrics/summary"),
        "events": dict(Counter(e["kind"] for e in events)),
        "statuses": {
            "capture_session": session["status"],
            "run": api.get(f"/api/v1/runs/{scene.run_id}")["status"],
            "warmup_run": api.get(f"/api/v1/runs/{scene.warmup_run_id}")["status"],
            "experiment": api.get(f"/api/v1/experiments/{scene.experiment_id}")["status"],
        },
    }


def print_summary(summary: dict[str, Any]) -> None:
    say("\n== what landed ==")
    for name, n in summary["readings"].items():
        say(f"  readings  {name:16} {n}")
    for m in summary["metrics"]:
        say(f"  metric    {m['name']:16} {m['count']} points, last {m['last']}")
    for kind, n in sorted(summary["events"].items()):
        say(f"  events    {kind:32} {n}")
    for what, status in summary["statuses"].items():
        say(f"  status    {what:16} {status}")


def live_stream_lines(api: Api, base_url: str, sensor_id: str) -> list[str]:
    """How to follow the live stream from a terminal. A WebSocket URL needs a stream ticket
    (browsers cannot send the identity headers), which is short-lived and good for one
    connection; the SSE endpoint takes the headers themselves, so its command works any time."""
    ticket = api.post("/api/v1/stream-tickets")
    ws = base_url.replace("http", "ws", 1)
    query = f"sensor_id={sensor_id}"
    headers = " ".join(f"-H {shlex.quote(f'{k}: {v}')}" for k, v in api.headers().items())
    return [
        f"  live stream {ws}/api/v1/telemetry/stream?{query}&ticket={ticket['ticket']}",
        f"              (that ticket: one connection within {ticket['expires_in']} s; a new "
        "one: POST /api/v1/stream-tickets with the headers below)",
        f"              any time, as SSE: curl -N {headers} \\",
        f"                '{base_url}/api/v1/telemetry/stream/sse?{query}'",
    ]


def guide(api: Api, base_url: str, scene: Scene, mqtt: str | None) -> None:
    live = "\n".join(live_stream_lines(api, base_url, scene.sensor_id))
    say(
        f"""
== the demo is running ==
  portal      {base_url}/   (opens on {PROJECT_NAME} as its owner: development identity)
  this run    {base_url}/runs/{scene.run_id}
{live}
  API docs    {base_url}/docs
Look at: {PROJECT_NAME} -> the "Demo ..." experiment -> run "heat-up" -> capture session 1:
  temperature_raw  streamed by bin/demo_sensor.py (linear profile a=1.23 b=0.2), 10 Hz
  furnace_tc_k     the simulator on a pty -> benchlink-edge (serial, type K, NIST) -> cloud
  chamber_mqtt     {"a device over MQTT -> the edge -> cloud" if mqtt else "off: no broker"}
  loss             a metric logged every 2 s; the event journal on the run page
"""
    )
