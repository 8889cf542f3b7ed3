"""Helpers for the edge tests: a scripted cloud in place of the network (MockCloudClient), a
real cloud in a subprocess, the daemon in a subprocess, configs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edge.buffer import Buffer
from edge.cloud_client import Answer, TransportError
from tests.support.services import free_port, unavailable, wait_port

BIN = Path(sys.executable).parent


class MockCloudClient:
    """The edge's cloud client with ``handler`` in place of the network, for a fault at a
    precise moment: the handler takes an ``httpx.Request`` and returns an ``httpx.Response``
    (its answer) or raises an ``httpx`` error (no answer: the client's TransportError)."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> Answer:
        return await self.request("POST", path, content, headers)

    async def request(
        self, method: str, path: str, content: bytes | None, headers: Mapping[str, str]
    ) -> Answer:
        request = httpx.Request(
            method, f"http://cloud.test{path}", content=content, headers=headers
        )
        try:
            return as_answer(self.handler(request))
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc


def as_answer(response: httpx.Response) -> Answer:
    body = response.read()
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Answer(response.status_code, body, headers, response.reason_phrase)


class FakeCloud:
    """Accepts batches like the cloud does (idempotent by key), with scripted faults first."""

    def __init__(self) -> None:
        self.faults: list[Callable[[httpx.Request], httpx.Response | None]] = []
        self.committed: dict[str, list[dict[str, object]]] = {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            answer = self.faults.pop(0)(request)
            if answer is not None:
                return answer
        return self.accept(request)

    def accept(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        body = json.loads(request.content)
        replay = key in self.committed
        self.committed.setdefault(key, body["readings"])
        headers = {"Idempotent-Replayed": "true"} if replay else {}
        n = len(body["readings"])
        return httpx.Response(202, json={"accepted": n, "late": 0}, headers=headers)

    def values(self) -> list[object]:
        return [r["raw_value"] for batch in self.committed.values() for r in batch]


@dataclass
class Bound:
    """A sensor registered in the real cloud with a run and a running capture session."""

    sensor_id: str
    token: str
    run_id: str
    session_id: str
    project_id: str
    user: dict[str, str]


class RealCloud:
    """``benchlink-cloud serve`` in a subprocess, on a SQLite file of its own or on
    ``database_url`` (a PostgreSQL database the caller made for it); stop/start simulate an
    outage."""

    def __init__(self, tmp: Path, database_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "cloud.db"
        self.database_url = database_url or f"sqlite:///{self.db}"
        self.log = tmp / "cloud.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = BIN / "benchlink-cloud"
        if not exe.exists():
            unavailable("cloud", f"{exe} not installed")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(exe),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--database-url",
                    self.database_url,
                    "--migrate",  # on PostgreSQL too (its default there is off)
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=log,
            )
        if not wait_port("127.0.0.1", self.port, timeout=30):
            self.stop()
            raise AssertionError(f"cloud did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def bootstrap(self, n_sensors: int = 1, profile: dict[str, Any] | None = None) -> list[Bound]:
        user = str(uuid.uuid4())
        with self.client(**{"X-User-Id": user}) as c:
            project = _ok(c.post("/api/v1/projects", json={"name": f"p-{user[:8]}"}))
            pid = project.get("project_id") or project["id"]
            h = {"X-User-Id": user, "X-Project-Id": pid, "X-Project-Role": "owner"}
            c.headers.update(h)
            exp = _ok(
                c.post("/api/v1/experiments", json={"project_id": pid, "name": "e", "tags": []})
            )
            run = _ok(c.post(f"/api/v1/experiments/{exp.get('experiment_id') or exp['id']}/runs"))
            run_id = run.get("run_id") or run["id"]
            ses = _ok(
                c.post(
                    f"/api/v1/runs/{run_id}/capture-sessions",
                    json={"ordinal_number": 1, "status": "running"},
                )
            )
            ses_id = ses.get("capture_session_id") or ses["id"]
            out = []
            for i in range(n_sensors):
                body = {
                    "project_id": pid,
                    "name": f"s{i}",
                    "type": "thermocouple",
                    "input_unit": "mV",
                    "display_unit": "C",
                    "conversion_profile": profile
                    or {"version": "1", "kind": "linear", "payload": {"a": 2.0, "b": 1.0}},
                }
                sensor = _ok(c.post("/api/v1/sensors", json=body))
                out.append(Bound(sensor["sensor"]["id"], sensor["token"], run_id, ses_id, pid, h))
            return out

    def stop_session(self, b: Bound) -> None:
        with self.client(**b.user) as c:
            _ok(
                c.post(
                    f"/api/v1/runs/{b.run_id}/capture-sessions/{b.session_id}/stop",
                    json={"status": "succeeded"},
                )
            )

    def telemetry(self, b: Bound) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        with self.client(**b.user) as c:
            while True:
                params = {
                    "run_id": b.run_id,
                    "sensor_id": b.sensor_id,
                    "capture_session_id": b.session_id,
                    "limit": 10000,
                }
                if cursor:
                    params["cursor"] = cursor
                page = _ok(c.get("/api/v1/telemetry", params=params))
                items += page["items"]
                cursor = page.get("next_cursor")
                if not cursor:
                    return items


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code < 300, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def unbound_sensor(sensor_id: str, source: str, **extra: Any) -> dict[str, Any]:
    """A ``[[sensors]]`` table for a daemon without a cloud: a run and session of its own."""
    return {
        "sensor_id": sensor_id,
        "token": "t",
        "run_id": str(uuid.uuid4()),
        "capture_session_id": str(uuid.uuid4()),
        "source": source,
        **extra,
    }


def stored_values(buffer: Path) -> list[float]:
    """Every reading's value in the buffer file, in arrival order."""
    buf = Buffer(buffer)
    try:
        return [r[0] for r in buf.conn.execute("SELECT raw_value FROM readings ORDER BY id")]
    finally:
        buf.close()


def write_config(
    path: Path,
    *,
    cloud_url: str,
    buffer: Path,
    sensors: list[dict[str, Any]],
    mqtt_url: str = "mqtt://127.0.0.1:1883",
    client_id: str | None = None,
    interval_s: float = 0.2,
    batch_size: int = 100,
    extra: str = "",
) -> Path:
    lines = [
        "[cloud]",
        f'url = "{cloud_url}"',
        "timeout_s = 5",
        "[buffer]",
        f'path = "{buffer}"',
        "[sync]",
        f"batch_size = {batch_size}",
        f"interval_s = {interval_s}",
        "backoff_initial_s = 0.1",
        "backoff_max_s = 1.0",
        "[mqtt]",
        f'url = "{mqtt_url}"',
        f'client_id = "{client_id or "edge-" + uuid.uuid4().hex[:8]}"',
        "[metrics]",
        "port = 0",
    ]
    for s in sensors:
        lines.append("[[sensors]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in s.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class EdgeProcess:
    """``benchlink-edge run`` in a subprocess (so kill -9 is a real crash); ``env`` is added to
    this process's environment, for it and for :meth:`cli`."""

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.config, self.log = config, log
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "benchlink-edge"), "--config", str(self.config), "run"],
                stdout=log,
                stderr=log,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.extra_env}

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        rc = self.proc.wait(20)
        self.proc = None
        return rc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "benchlink-edge"), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def running(edge: EdgeProcess) -> Iterator[EdgeProcess]:
    edge.start()
    try:
        yield edge
    finally:
        if edge.proc is not None:
            edge.proc.kill()
            edge.proc.wait()


@contextlib.contextmanager
def simulator(link: Path, *options: str) -> Iterator[subprocess.Popen[str]]:
    """``benchlink-sim`` serving a pseudo-terminal at ``link`` (ready when this yields); killed
    on the way out if the test has not stopped it."""
    sim = subprocess.Popen(
        [str(BIN / "benchlink-sim"), *options, "--link", str(link)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None and sim.stdout.readline().strip()
        yield sim
    finally:
        if sim.poll() is None:
            sim.kill()
        sim.wait(10)


def serial_sensor(bound: Bound, link: Path, protocol: str = "value") -> dict[str, Any]:
    """The edge config's entry for ``bound`` read from the serial port at ``link``."""
    return {
        "sensor_id": bound.sensor_id,
        "token": bound.token,
        "run_id": bound.run_id,
        "capture_session_id": bound.session_id,
        "source": "serial",
        "port": str(link),
        "baudrate": 115200,
        "protocol": protocol,
    }
