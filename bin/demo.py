#!/usr/bin/env python3
"""``make demo``: the seed scenario end to end, on embedded defaults, in one command.

1. migrate the database (SQLite under var/ unless ``--database-url``) and start the cloud
   (``benchlink-cloud serve --dev-identity``, so the portal works in a plain browser);
2. seed ``demo_project`` (bin/demo_seed.py) and register the scenario's ``temperature_raw``
   sensor exactly as its curl line does;
3. create an experiment, a run and a running capture session;
4. start the thermocouple simulator on a pseudo-terminal and the edge daemon reading it
   (``furnace_tc_k``, type K); if a Mosquitto broker answers (``--mqtt-url``), a device
   publishes ``chamber_mqtt`` readings over MQTT through the edge as well;
5. stream ``temperature_raw`` with bin/demo_sensor.py and log ``loss`` metrics as it goes;
6. print the portal URL and what to look at, and keep running until Ctrl-C, or for
   ``--duration`` / ``$DURATION`` seconds; then wrap up: stop the capture session, log the
   last metrics and read them back, mark the run succeeded, archive the experiment, cancel
   the warm-up run with a batch status change, and print what landed.

Every child (cloud, simulator, edge) runs in its own process group, so Ctrl-C reaches only
this script, which wraps up through the still-running cloud and then stops them all. A second
Ctrl-C skips the wrap-up. Logs: ``<state-dir>/logs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from demo_seed import (
    PROJECT_NAME,
    Api,
    ApiError,
    Seed,
    add_owner_options,
    resolve_owner,
    seed,
    tokens_beside,
)
from demo_sensor import Signal, TelemetryClient, run_stream

from common.cli import add_version, plain

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

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


def say(message: str = "") -> None:
    """Print a line. Once stdout is gone (``make demo | tee demo.log`` and Ctrl-C, which stops
    tee too), go on without it: the wrap-up must still stop the session, close the run and
    write summary.json."""
    try:
        print(message, flush=True)
    except (BrokenPipeError, ValueError):  # ValueError: stdout was closed
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # also the flush at exit, which would fail again
        os.close(devnull)


# --- child processes ----------------------------------------------------------------------


@dataclass
class Children:
    """The demo's child processes, each in its own process group, stopped in reverse order."""

    log_dir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_all
        self.logs.append(log)
        kw.setdefault("stdout", log)
        proc = subprocess.Popen(
            argv, cwd=REPO, stderr=log, start_new_session=True, env=child_env(), **kw
        )
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; see {self.log_dir / name}.log"
                )

    def stop(self, name: str, timeout: float = 15.0) -> None:
        for n, proc in self.procs:
            if n == name:
                terminate(proc, timeout)

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            terminate(proc, 15.0)
        for log in self.logs:
            log.close()


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_env() -> dict[str, str]:
    # The children import the repo's packages even when it is not installed in this venv.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the cloud exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the cloud did not become ready at {url}")


# --- steps --------------------------------------------------------------------------------


def migrate(database_url: str) -> None:
    subprocess.run(
        [PYTHON, str(REPO / "bin" / "migrate.py"), "--database-url", database_url],
        cwd=REPO,
        env=child_env(),
        check=True,
    )


def serve_options(args: argparse.Namespace, owner: str) -> list[str]:
    """``benchlink-cloud serve`` as the demo runs it: the portal opens on demo_project as its
    owner (the development identity, with that owner as its default)."""
    return [
        *("--host", args.host, "--port", str(args.port), "--database-url", args.database_url),
        *("--dev-identity", "--dev-identity-user", owner, "--dev-identity-project", PROJECT_NAME),
    ]


def start_cloud(children: Children, args: argparse.Namespace, owner: str) -> str:
    if port_open(args.host, args.port):
        raise RuntimeError(f"something already listens on {args.host}:{args.port}; use --port")
    url = f"http://{args.host}:{args.port}"
    argv = [PYTHON, "-m", "cloud.cli", "serve", *serve_options(args, owner), "--no-migrate"]
    wait_ready(url, children.start("cloud", [*argv, "--log-level", "warning"]))
    return url


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
    return Scene(
        seeded, sensor_id, token, eid, run["id"], warmup["id"], session["id"], sensors=sensors
    )


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


def forget_mqtt_session(url: str, client_id: str, timeout: float = 10.0) -> None:
    """End the broker's session of ``client_id`` (clean start, session expiry 0): the demo's
    edge never comes back for it, and a kept session would queue readings for ever."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(
        parts.hostname or "127.0.0.1", parts.port or 1883, clean_start=True, properties=props
    )
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise RuntimeError(f"MQTT: no answer from {url} to remove the demo's session")
    finally:
        client.disconnect()
        client.loop_stop()


def sensor_block(sensor_id: str, token: str | None, scene: Scene, *, source: str) -> str:
    return (
        f'[[sensors]]\nsensor_id = "{sensor_id}"\ntoken = "{token}"\n'
        f'run_id = "{scene.run_id}"\ncapture_session_id = "{scene.session_id}"\n'
        f'source = "{source}"'
    )


def edge_argv(config: Path, *command: str) -> list[str]:
    return [PYTHON, "-m", "edge.cli", "--config", str(config), *command]


def mqtt_broker(url: str) -> tuple[str | None, str]:
    """The broker's URL if the demo's device and edge (which log in without a password) may
    use it, else None and why not: a broker set up as mosquitto/ is, refuses them."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    if not port_open(host, port, timeout=1.0):
        return None, f"no broker at {url}"
    refused = anonymous_refused(host, port)
    if refused:
        return None, f"the broker at {url} refuses clients without a password ({refused})"
    return url, ""


def anonymous_refused(host: str, port: int, timeout: float = 5.0) -> str | None:
    """The broker's reason for refusing a client without credentials, or None."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answer: list[str | None] = []
    answered = threading.Event()

    def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        answer.append(str(reason) if reason.is_failure else None)
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-probe-{os.getpid()}")
    client.on_connect = on_connect
    try:
        client.connect(host, port)
        client.loop_start()
        if not answered.wait(timeout):
            return "no answer to CONNECT"
        return answer[0]
    except OSError as exc:
        return str(exc)
    finally:
        client.loop_stop()
        client.disconnect()


# --- background producers -----------------------------------------------------------------


@dataclass
class Producers:
    """Threads that feed the demo while it runs; the first error stops the demo."""

    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def spawn(self, name: str, target: Callable[[], object]) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:  # reported by check(): a dead producer ends the demo
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def check(self) -> None:
        if self.errors:
            raise RuntimeError("; ".join(self.errors))

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def stream_scenario_sensor(scene: Scene, base_url: str, stop: threading.Event) -> Any:
    client = TelemetryClient(base_url, scene.token, scene.sensor_id, scene.run_id, scene.session_id)
    signal_ = Signal(profile="heat", scale=1.23, offset=0.2)  # raw = (T - b) / a
    try:
        return run_stream(
            client, signal_, duration_s=0, rate_hz=10, batch_size=5, should_stop=stop.is_set
        )
    finally:
        client.close()


def publish_mqtt(scene: Scene, url: str, stop: threading.Event) -> None:
    """A device on the chamber: JSON readings on its own topic, QoS 1, twice a second."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    chamber = scene.seed.sensor("chamber_mqtt").id
    topic = f"benchlink/sensors/{chamber}/readings"
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-device-{chamber[:8]}")
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    signal_ = Signal(profile="cycle", noise_c=0.3)
    try:
        step, t0 = 0, time.monotonic()
        while not stop.wait(0.5):
            step += 1
            reading = {
                "timestamp": datetime.now(UTC).isoformat(),
                "raw_value": signal_.raw(time.monotonic() - t0),
                "meta": {"step": step},
            }
            client.publish(topic, json.dumps(reading), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def loss_at(step: int) -> float:
    return round(0.9 * math.exp(-step / 10) + 0.05 + random.uniform(0, 0.01), 4)


def log_metrics(api: Api, run_id: str, steps: range) -> None:
    now = datetime.now(UTC).isoformat()
    points = [{"name": "loss", "step": s, "value": loss_at(s), "timestamp": now} for s in steps]
    api.post(f"/api/v1/runs/{run_id}/metrics", {"metrics": points})


def metrics_while_running(
    api_factory: Callable[[], Api], run_id: str, stop: threading.Event
) -> int:
    api, step = api_factory(), 0
    try:
        while not stop.wait(2.0):
            step += 1
            log_metrics(api, run_id, range(step, step + 1))
    finally:
        api.close()
    return step


# --- wrap-up and summary ------------------------------------------------------------------


def drain_edge(children: Children, config: Path) -> None:
    """Stop the simulator, let the edge sync what it buffered, then flush the rest."""
    children.stop("simulator")
    time.sleep(1.5)  # the edge's sync interval is 0.5 s
    children.stop("edge")
    subprocess.run(edge_argv(config, "flush"), cwd=REPO, env=child_env(), check=False, timeout=120)


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


def browse_again(args: argparse.Namespace, owner: str) -> str:
    """The command that serves the demo's database again, portal as after ``make demo``."""
    cloud = Path(PYTHON).parent / "benchlink-cloud"
    shown = cloud.relative_to(REPO) if cloud.is_relative_to(REPO) else cloud
    return shlex.join([str(shown), "serve", *serve_options(args, owner)])


# --- main ---------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def install_signals(stop: threading.Event) -> None:
    """First Ctrl-C / SIGTERM: wrap up. A second one: stop at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise Interrupted(signal.Signals(signum).name)
        say(f"\n{signal.Signals(signum).name}: wrapping up (again to stop at once)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def wait_until(stop: threading.Event, duration: float, checks: list[Callable[[], None]]) -> None:
    deadline = time.monotonic() + duration if duration else math.inf
    while not stop.wait(0.5) and time.monotonic() < deadline:
        for check in checks:
            check()


def run_demo(args: argparse.Namespace, children: Children, stop: threading.Event) -> int:
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "edge-buffer.db").unlink(missing_ok=True)  # a scratch buffer per demo run
    migrate(args.database_url)
    owner = resolve_owner(args.owner_user_id, args.owner_file)
    base_url = start_cloud(children, args, owner)
    say(f"cloud: {base_url} ({args.database_url})")
    seeded = seed(base_url, owner, need_tokens=True, tokens_file=tokens_beside(args.owner_file))
    say(f"seeded demo_project {seeded.project_id} for owner {owner}")
    api = Api(base_url, owner, seeded.project_id)
    scene = set_the_scene(api, seeded)
    say(f"scenario sensor temperature_raw {scene.sensor_id}; run {scene.run_id}")
    mqtt, why_not = (None, "--no-mqtt") if args.no_mqtt else mqtt_broker(args.mqtt_url)
    if mqtt is None:
        say(f"MQTT: {why_not}; going on without the MQTT device")
    config = state / "edge.toml"
    producers = Producers()
    checks = [children.check, producers.check]
    if not args.no_edge:
        device = start_simulator(children, state, args.rate)
        write_private(config, edge_toml(scene, base_url, state, device, mqtt))
        children.start("edge", edge_argv(config, "run"))
        say(f"simulator on {device}; edge daemon with {config}")
    producers.spawn("demo_sensor", lambda: stream_scenario_sensor(scene, base_url, producers.stop))
    metric_steps: list[int] = []

    def metrics() -> None:
        factory = lambda: Api(base_url, owner, seeded.project_id)  # noqa: E731
        metric_steps.append(metrics_while_running(factory, scene.run_id, producers.stop))

    producers.spawn("metrics", metrics)
    if mqtt and not args.no_edge:
        producers.spawn("mqtt device", lambda: publish_mqtt(scene, mqtt, producers.stop))
    guide(api, base_url, scene, mqtt if not args.no_edge else None)
    wait_until(stop, args.duration, checks)
    producers.join()
    producers.check()
    if not args.no_edge:
        drain_edge(children, config)
        if mqtt:
            try:
                forget_mqtt_session(mqtt, edge_client_id(scene))
            except (OSError, RuntimeError) as exc:
                say(f"MQTT: the demo edge's session was not removed from the broker: {exc}")
    wrap_up(api, scene, metric_steps[0] if metric_steps else 0)
    summary = summarize(api, scene)
    api.close()
    print_summary(summary)
    (state / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.serve_after:
        say(f"\nThe cloud keeps serving {base_url}/ until Ctrl-C.")
        stop.clear()
        wait_until(stop, 0, [children.check])
    say(f"\nEverything stays in {args.database_url}. To browse it again at {base_url}/:")
    say(f"  {browse_again(args, owner)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(p)
    p.add_argument("--host", default="127.0.0.1", help="the cloud's address (%(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8002")),
        help="the cloud's port (default: $PORT or 8002)",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCHLINK_DATABASE_URL", f"sqlite:///{REPO / 'var' / 'demo.db'}"),
        help="the cloud's database (default: $BENCHLINK_DATABASE_URL or var/demo.db)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DURATION") or 0),
        help="seconds, then wrap up and exit (default: $DURATION, else until Ctrl-C)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=REPO / "var" / "demo",
        help="edge config, buffer and logs (default: var/demo)",
    )
    add_owner_options(p, default=None, help="the demo project's owner (a UUID)")
    p.add_argument(
        "--mqtt-url", default="mqtt://127.0.0.1:1883", help="the broker to try (%(default)s)"
    )
    p.add_argument("--no-mqtt", action="store_true", help="do not use a broker even if one runs")
    p.add_argument("--no-edge", action="store_true", help="no simulator and edge daemon")
    p.add_argument("--rate", type=float, default=10.0, help="simulator samples per second")
    p.add_argument("--serve-after", action="store_true", help="keep the cloud up at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    children = Children(args.state_dir / "logs")
    stop = threading.Event()
    install_signals(stop)
    try:
        return run_demo(args, children, stop)
    except Interrupted as exc:
        say(f"{exc}: stopping at once")
        return 130
    except (RuntimeError, ApiError, httpx.HTTPError, subprocess.CalledProcessError) as exc:
        say(f"demo: {exc}")
        say(f"logs: {children.log_dir}")
        return 1
    finally:
        children.stop_all()


if __name__ == "__main__":
    sys.exit(main())
