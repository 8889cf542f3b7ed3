"""A run's readings and metrics read through the cloud's Arrow export, against a real cloud:
the values of the JSON lists exactly, the export's description on the frame, progress as the
bytes arrive, files written to disk whole or not at all; and, without pyarrow, the same frame
from the JSON list."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from benchlink import CaptureSession, Client, ExportProgress, NotFound, Run, TransportError
from benchlink._runs import ExportFormat, RunData
from tests.client.conftest import QUICK, send_readings
from tests.support.cloud import REPO, CloudServer

COLUMNS = [
    "sensor",
    "sensor_id",
    "capture_session_id",
    "raw_value",
    "raw_unit",
    "value",
    "unit",
    "profile_version",
    "late",
]


FORMATS: tuple[ExportFormat, ...] = ("arrow", "parquet")


def _listed(client: Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a JSON list, following its cursors: what the export must equal."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = client.http.request("GET", path, params={**params, "cursor": cursor})
        out += body[key]
        cursor = body.get("next_cursor")
        if not cursor:
            return out


def _linear(client: Client, name: str, a: float, unit: str) -> Any:
    profile = {"kind": "linear", "payload": {"a": a, "b": 1.0}}
    return client.sensors.create(
        name, type="thermocouple", input_unit="mV", display_unit=unit, profile=profile
    )


def _a_run(cloud: CloudServer, client: Client) -> tuple[Run, CaptureSession, CaptureSession]:
    """Two sensors in two capture sessions, a profile version change, a late reading."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    oven, probe = _linear(client, "oven", 2.0, "C"), _linear(client, "probe", 0.5, "K")
    run = client.experiments.create("furnace").runs.create("r", params={"setpoint_c": 420})
    first = run.sessions.create(started_at=start)
    send_readings(cloud.url, oven.token, oven.sensor.id, first, [1.0, 2.0, 3.5], start=start)
    t = start + timedelta(seconds=1)
    send_readings(cloud.url, probe.token, probe.sensor.id, first, [10.0, -20.25], start=t)
    first.stop()
    late = start + timedelta(seconds=2)
    send_readings(cloud.url, probe.token, probe.sensor.id, first, [30.0], start=late)
    # v2 (the oven in K) takes effect with the second session's readings.
    t = start + timedelta(minutes=2)
    sensor = client.http.request(
        "PATCH",
        f"/api/v1/sensors/{oven.sensor.id}",
        json={"display_unit": "K", "effective_from": t.isoformat()},
    )
    assert sensor["conversion_profile"]["version"] == "v2"  # errors raise
    second = run.sessions.create(started_at=start + timedelta(minutes=1))
    send_readings(cloud.url, oven.token, oven.sensor.id, second, [4.0, 5.0], start=t)
    return run, first, second


def test_readings_come_through_the_export_as_the_list_has_them(
    cloud: CloudServer, client: Client
) -> None:
    run, first, second = _a_run(cloud, client)
    seen: list[ExportProgress] = []

    df = run.telemetry(progress=seen.append)

    items = _listed(client, "/api/v1/telemetry", "items", run_id=run.id, limit=10_000)
    assert len(df) == len(items) == 8
    assert list(df.index) == [pd.Timestamp(i["timestamp"]) for i in items]
    assert str(df.index.tz) == "UTC" and list(df.columns) == COLUMNS
    for col in ("sensor_id", "capture_session_id", "raw_value", "value", "profile_version"):
        assert list(df[col]) == [i[col] for i in items], col
    assert list(df["late"]) == [i["late"] for i in items] and df["late"].sum() == 1
    units = {
        (s, v): u for s, v, u in zip(df["sensor"], df["profile_version"], df["unit"], strict=True)
    }
    assert units == {("oven", "v1"): "°C", ("probe", "v1"): "K", ("oven", "v2"): "K"}
    about = df.attrs["benchlink"]
    assert [r["name"] for r in about["runs"]] == ["r"]
    assert about["runs"][0]["params"] == {"setpoint_c": 420}
    assert [e["name"] for e in about["experiments"]] == ["furnace"]
    assert {s["name"]: len(s["profiles"]) for s in about["sensors"]} == {"oven": 2, "probe": 1}
    assert {c["id"] for c in about["capture_sessions"]} == {first.id, second.id}
    assert seen[-1].rows == seen[-1].total == 8 and seen[-1].bytes > 0 and seen[-1].done
    assert [p.bytes for p in seen] == sorted(p.bytes for p in seen)
    assert all(p.total == 8 for p in seen) and seen[-1].percent == 100

    assert list(second.telemetry()["raw_value"]) == [4.0, 5.0]
    assert list(run.telemetry(profile_version="v2")["raw_value"]) == [4.0, 5.0]
    table = run.telemetry(frame="arrow")
    assert json.loads(table.schema.metadata[b"benchlink"])["runs"][0]["id"] == run.id
    assert table.column("raw_value").to_pylist() == [i["raw_value"] for i in items]
    polars = run.telemetry(frame="polars", sensor="probe")
    assert isinstance(polars, pl.DataFrame) and polars["value"].to_list() == [6.0, -9.125, 16.0]
    assert _without_pyarrow(client, run.id) == _as_text(df)


def _as_text(df: pd.DataFrame) -> dict[str, list[str]]:
    flat = df.reset_index()
    return {c: [str(v) for v in flat[c]] for c in flat.columns}


def _without_pyarrow(client: Client, run_id: str) -> dict[str, list[str]]:
    """``run.telemetry()`` in a process where pyarrow cannot be imported: from the list."""
    code = (
        "import json, sys\n"
        "sys.modules['pyarrow'] = None  # as if not installed\n"
        "from benchlink import Client\n"
        f"c = Client({client.config.url!r}, user={client.config.user!r},"
        f" project={client.config.project!r}, role='owner')\n"
        f"df = c.runs.get({run_id!r}).telemetry()\n"
        "assert 'benchlink' not in df.attrs and sys.modules['pyarrow'] is None\n"
        "flat = df.reset_index()\n"
        "print(json.dumps({k: [str(v) for v in flat[k]] for k in flat.columns}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout))


def test_metrics_come_through_the_export_as_the_list_has_them(
    cloud: CloudServer, client: Client
) -> None:
    run = client.experiments.create("e").runs.create("trained")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for step in range(5):
        t = start + timedelta(minutes=step)
        run.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step, timestamp=t)
    run.log_metrics({"temp": 21.5}, step=0, unit="degC")
    run.flush()

    every = run.metrics()
    loss = run.metrics("loss", frame="arrow")

    points = _listed(client, f"/api/v1/runs/{run.id}/metrics", "points", limit=10_000)
    flat = every.reset_index()
    for col in ("name", "step", "value"):
        assert list(flat[col]) == [p[col] for p in points], col
    assert list(flat["timestamp"]) == [pd.Timestamp(p["timestamp"]) for p in points]
    assert list(flat["unit"]) == [p.get("unit") or "" for p in points]
    assert every.attrs["benchlink"]["kind"] == "metrics"
    assert every.attrs["benchlink"]["runs"][0]["name"] == "trained"
    assert loss.column("value").to_pylist() == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert json.loads(loss.schema.metadata[b"benchlink"])["filter"]["name"] == "loss"
    chart = run.metrics("loss", max_points=3)  # downsampled: from the list
    assert chart.index[0] == 0 and chart.index[-1] == 4 and len(chart) < 5
    assert "benchlink" not in chart.attrs


def test_exports_are_written_to_disk_whole(
    cloud: CloudServer, client: Client, tmp_path: Path
) -> None:
    run, _, _ = _a_run(cloud, client)
    run.log_metrics({"loss": 0.5}, step=1)
    run.flush()
    seen: list[ExportProgress] = []

    parquet = run.export(tmp_path / "run.parquet", progress=seen.append)
    stream = run.export(tmp_path, "arrow")
    text = run.export(tmp_path / "run.csv", "csv", sensor="oven")
    metrics = run.export_metrics(tmp_path, name="loss")

    df = run.telemetry()
    back = pd.read_parquet(parquet).set_index("timestamp")
    pd.testing.assert_index_equal(back.index, df.index)
    for col in ("raw_value", "value", "late"):
        assert list(back[col]) == list(df[col]), col
    for col in ("sensor", "sensor_id", "capture_session_id", "raw_unit", "profile_version"):
        assert list(back[col].astype(str)) == list(df[col].astype(str)), col
    assert list(back["value_unit"].astype(str)) == list(df["unit"].astype(str))
    assert back.attrs["benchlink"]["runs"][0]["params"] == {"setpoint_c": 420}
    assert seen[-1].done and seen[-1].rows == seen[-1].total == len(df) == 8
    assert [p.rows for p in seen] == sorted(p.rows or 0 for p in seen)
    assert stream == tmp_path / f"telemetry-run-{run.id}.arrows"
    arrows = pa.ipc.open_stream(stream.read_bytes()).read_all()
    assert arrows.column("raw_value").to_pylist() == list(df["raw_value"])
    assert len(text.read_text().splitlines()) == 1 + 5  # the header and the oven's readings
    assert metrics.name == f"metrics-run-{run.id}.parquet"
    assert pd.read_parquet(metrics)["value"].tolist() == [0.5]
    assert not list(tmp_path.glob("*.part"))

    with pytest.raises(NotFound):
        RunData(client, str(uuid.uuid4())).export(tmp_path / "none.parquet")
    assert not (tmp_path / "none.parquet").exists()
    assert not list(tmp_path.glob("*.part"))


class CutExports(httpx.BaseTransport):
    """The real transport, whose export answers break after ``after[format]`` bytes, as a
    dropped connection does."""

    def __init__(self, after: dict[str, int]) -> None:
        self.real, self.after = httpx.HTTPTransport(), after

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        if not request.url.path.endswith("/export"):
            return response
        after = self.after[request.url.params["format"]]
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Cut(response, after)
        )

    def close(self) -> None:
        self.real.close()


class _Cut(httpx.SyncByteStream):
    def __init__(self, inner: httpx.Response, after: int) -> None:
        self.inner, self.after = inner, after

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner.iter_raw():
            if sent + len(chunk) >= self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("connection reset by peer")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def test_a_cut_export_is_an_error_not_a_short_frame_or_file(
    cloud: CloudServer, client: Client, tmp_path: Path
) -> None:
    run, _, _ = _a_run(cloud, client)
    # The schema and some batches arrive, not the end.
    after = {f: run.export(tmp_path / f"whole.{f}", f).stat().st_size - 100 for f in FORMATS}
    cfg = client.config
    cut = CutExports(after)
    with Client(
        cfg.url, user=cfg.user, project=cfg.project, role="owner", retry=QUICK, transport=cut
    ) as lossy:
        broken = lossy.runs.get(run.id)
        with pytest.raises(TransportError, match="stopped after"):
            broken.telemetry()
        with pytest.raises(TransportError, match="stopped after"):
            broken.export(tmp_path / "cut.parquet")
    assert not (tmp_path / "cut.parquet").exists()
    assert not list(tmp_path.glob("*.part"))
