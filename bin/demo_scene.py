"""What the demo sets up in the cloud and on the bench: the scenario's sensor, registered
exactly as its curl line does, the experiment, runs and capture session, and the simulator
and edge config that feed them."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from demo_children import PYTHON, Children
from demo_seed import Api, ApiError, Seed

#: The scenario's sensor registration, byte for byte the body of its curl line.
SCENARIO_SENSOR = {
    "project_id": "<project_id>",
    "name": "temperature_raw",
    "type": "thermocouple",
    "input_unit": "mV",
    "display_unit": "C",
    "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1.23, "b": 0.2}},
}
SCENARIO_KEY = "demo-sensor-1"


def register_scenario_sensor(api: Api) -> tuple[str, str]:
    """The scenario's curl line: ``-d`` without a content type, Idempotency-Key demo-sensor-1.

    A re-run with the same owner replays the first answer: the same sensor, but without its
    token, which the cloud shows only once; once the key has expired the name is taken (409).
    Either way the sensor is found and its token rotated."""
    body = json.dumps({**SCENARIO_SENSOR, "project_id": api.project_id})
    headers = api.headers(SCENARIO_KEY) | {"Content-Type": "application/x-www-form-urlencoded"}
    r = api.http.post(api.base_url + "/api/v1/sensors", content=body, headers=headers)
    if r.status_code == 201 and r.json()["token"]:
        return str(r.json()["sensor"]["id"]), str(r.json()["token"])
    if r.status_code not in (201, 409):
        raise ApiError("POST", "/api/v1/sensors", r.status_code, r.text)
    sensor = api.get("/api/v1/sensors", name="temperature_raw", limit=1)["items"][0]
    rotated = api.post(f"/api/v1/sensors/{sensor['id']}/rotate-token")
    return str(sensor["id"]), str(rotated["token"])


#: The demo's bench PC as the cloud knows it (docs/fleet.md).
DEMO_EDGE = "demo bench PC"


def register_edge(api: Api) -> tuple[str, str]:
    """The demo's edge daemon, registered so that its heartbeats account for every reading
    it captured (the run page's completeness line: captured, arrived, unaccounted 0). A
    re-run finds the edge registered before and rotates its token (shown only once)."""
    found = api.get("/api/v1/edges", name=DEMO_EDGE, limit=1)["items"]
    if found:
        out = api.post(f"/api/v1/edges/{found[0]['id']}/rotate-token")
    else:
        out = api.post("/api/v1/edges", {"project_id": api.project_id, "name": DEMO_EDGE})
    return str(out["edge"]["id"]), str(out["token"])


@dataclass
class Scene:
    """Everything the demo created, for the wrap-up and the summary."""

    seed: Seed
    sensor_id: str
    token: str
    experiment_id: str
    run_id: str
    warmup_run_id: str
    session_id: str
    edge_id: str = ""
    edge_token: str = ""
    sensors: dict[str, str] = field(default_factory=dict)


def set_the_scene(api: Api, seeded: Seed) -> Scene:
    sensor_id, token = register_scenario_sensor(api)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    experiment = api.post(
        "/api/v1/experiments",
        {
            "project_id": api.project_id,
            "name": f"Demo {stamp} UTC",
            "description": "make demo: furnace heat-up, type K over serial, chamber over MQTT.",
            "tags": ["demo", "furnace"],
        },
    )
    eid = experiment["id"]
    warmup = api.post(f"/api/v1/experiments/{eid}/runs", {"name": "warm-up"})
    run = api.post(f"/api/v1/experiments/{eid}/runs", {"name": "heat-up", "params": {"sp": 420}})
    session = api.post(
        f"/api/v1/runs/{run['id']}/capture-sessions", {"ordinal_number": 1, "status": "running"}
    )
    sensors = {"temperature_raw": sensor_id} | {s.name: s.id for s in seeded.sensors}
    edge_id, edge_token = register_edge(api)
    return Scene(
        seeded, sensor_id, token, eid, run["id"], warmup["id"], session["id"],
        edge_id=edge_id, edge_token=edge_token, sensors=sensors,
    )  # fmt: skip


def start_simulator(children: Children, state: Path, rate: float) -> str:
    link = state / "tty-furnace"
    argv = [PYTHON, "-m", "hardware.simulator", "--protocol", "value", "--type", "K"]
    argv += ["--rate", str(rate), "--profile", "heat", "--start-c", "25", "--peak-c", "420"]
    argv += ["--period-s", "60", "--cold-junction-c", "24.5", "--link", str(link)]
    proc = children.start("simulator", argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline().decode().strip()  # the simulator prints its device first
    if not first:
        raise RuntimeError("the simulator did not report its device; see its log")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return first


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only: the edge config holds sensor tokens (the
    daemon warns about a config others may read)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT


def edge_toml(scene: Scene, base_url: str, state: Path, device: str, mqtt: str | None) -> str:
    furnace = scene.seed.sensor("furnace_tc_k")
    lines = [
        "# Written by bin/demo.py for this demo run.",
        f'[cloud]\nurl = "{base_url}"\n',
        f'[edge]\nid = "{scene.edge_id}"\ntoken = "{scene.edge_token}"\nheartbeat_s = 5\n',
        f'[buffer]\npath = "{state / "edge-buffer.db"}"\nmax_bytes = 200_000_000\n',
        "[sync]\nbatch_size = 500\ninterval_s = 0.5\n",
        "[metrics]\nenabled = false\n",
        sensor_block(furnace.id, furnace.token, scene, source="serial"),
        f'port = "{device}"\nbaudrate = 9600\nprotocol = "value"\n',
    ]
    if mqtt:
        chamber = scene.seed.sensor("chamber_mqtt")
        lines.insert(4, f'[mqtt]\nurl = "{mqtt}"\nclient_id = "{edge_client_id(scene)}"\n')
        lines.append(sensor_block(chamber.id, chamber.token, scene, source="mqtt"))
    return "\n".join(lines)


def edge_client_id(scene: Scene) -> str:
    """The demo edge's MQTT client id: known here, so the demo can remove its session."""
    return f"benchlink-demo-{scene.run_id}"


def sensor_block(sensor_id: str, token: str | None, scene: Scene, *, source: str) -> str:
    return (
        f'[[sensors]]\nsensor_id = "{sensor_id}"\ntoken = "{token}"\n'
        f'run_id = "{scene.run_id}"\ncapture_session_id = "{scene.session_id}"\n'
        f'source = "{source}"'
    )


def edge_argv(config: Path, *command: str) -> list[str]:
    return [PYTHON, "-m", "edge.cli", "--config", str(config), *command]
