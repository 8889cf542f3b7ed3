"""Progress of exports as a share of the whole: the server declares the rows an export holds
(``Benchlink-Rows``: a streamed answer has no Content-Length) and the client counts the rows
it has received against it, for frames and for files of every format, on a real cloud."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchlink import Client, ExportProgress, Run
from tests.client.conftest import send_readings
from tests.support.cloud import REPO, CloudServer

#: Three record batches of the server's (10,000 readings each) and a part of a fourth.
N = 25_000
POST = 10_000  # the most one POST of the API takes
LINEAR = {"kind": "linear", "payload": {"a": 2.0, "b": 1.0}}


def _big_run(cloud: CloudServer, client: Client) -> tuple[Run, str, datetime]:
    new = client.sensors.create(
        "oven", type="thermocouple", input_unit="mV", display_unit="C", profile=LINEAR
    )
    start = datetime.now(UTC) - timedelta(hours=1)
    run = client.experiments.create("e").runs.create("big")
    session = run.sessions.create(started_at=start)
    step = timedelta(milliseconds=1)
    for lo in range(0, N, POST):
        raws = [float(i % 100) for i in range(lo, min(N, lo + POST))]
        send_readings(
            cloud.url, new.token, new.sensor.id, session, raws, start=start + step * lo, step=step
        )
    for step_no in range(7):
        run.log_metrics({"loss": 1 / (step_no + 1)}, step=step_no)
    run.flush()
    return run, new.sensor.id, start


def _check(seen: list[ExportProgress], total: int, *, steps: bool = True) -> None:
    """Progress that climbs to the declared total and says so once, at the end."""
    assert seen, "no progress reported"
    assert all(p.total == total for p in seen)
    rows = [p.rows or 0 for p in seen]
    assert rows == sorted(rows) and rows[-1] == total
    assert [p.done for p in seen] == [False] * (len(seen) - 1) + [True]
    assert seen[-1].fraction == 1.0 and seen[-1].percent == 100
    if steps:  # a share between nothing and all along the way, for a progress bar to show
        assert any(0 < (p.fraction or 0) < 1 for p in seen), [str(p) for p in seen]
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(f or 0 for f in fractions)


def test_the_server_declares_the_rows_of_every_export(cloud: CloudServer, client: Client) -> None:
    run, sensor_id, start = _big_run(cloud, client)
    headers = dict(client.http.identity())
    cut = (start + timedelta(milliseconds=1000)).isoformat()  # the first 1000 readings
    with httpx.Client(base_url=cloud.url, headers=headers, timeout=60) as h:
        for fmt in ("csv", "parquet", "arrow"):
            for params, rows in (
                ({"run_id": run.id}, N),
                ({"sensor_id": sensor_id, "until": cut}, 1000),
            ):
                q = {**params, "format": fmt}
                with h.stream("GET", "/api/v1/telemetry/export", params=q) as r:
                    assert r.status_code == 200, r.read()
                    assert r.headers["benchlink-rows"] == str(rows), (fmt, params)
            path = f"/api/v1/runs/{run.id}/metrics/export"
            for name, points in ((None, 7), ("loss", 7), ("nothing", 0)):
                q = {"format": fmt, **({"name": name} if name else {})}
                r = h.get(path, params=q)
                assert r.status_code == 200 and r.headers["benchlink-rows"] == str(points)


def test_frames_and_files_report_their_share(
    cloud: CloudServer, client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _, _ = _big_run(cloud, client)

    seen: list[ExportProgress] = []
    df = run.telemetry(progress=seen.append)
    assert len(df) == N
    _check(seen, N)

    for fmt in ("parquet", "arrow", "csv"):
        seen = []
        path = run.export(tmp_path, fmt, progress=seen.append)  # type: ignore[arg-type]
        _check(seen, N)
        if fmt == "parquet":
            table = pq.read_table(path)
            assert path.name == f"telemetry-run-{run.id}.parquet"
            assert b"benchlink" in (pq.read_schema(path).metadata or {})
        elif fmt == "arrow":
            table = pa.ipc.open_stream(path.read_bytes()).read_all()
        else:
            assert len(path.read_text().splitlines()) == N + 1
            continue
        assert table.num_rows == N
        assert table.column("raw_value").to_pylist() == list(df["raw_value"])

    seen = []
    metrics = run.export_metrics(tmp_path / "m.parquet", progress=seen.append)
    _check(seen, 7, steps=False)
    assert pq.read_table(metrics).num_rows == 7

    capsys.readouterr()
    run.export(tmp_path / "shown.parquet", progress=True)
    shown = capsys.readouterr().err
    # One line that rewrites itself, ending at the whole.
    assert "\r" in shown and shown.count("\n") == 1
    assert re.search(rf"\rexport 100% \({N:,} of {N:,} rows, [0-9.]+ MB\)\n$", shown), shown[-200:]


def test_without_pyarrow_a_parquet_download_reports_bytes_and_its_end(
    cloud: CloudServer, client: Client, tmp_path: Path
) -> None:
    """Parquet's rows cannot be counted in its bytes: the share is unknown until the end."""
    run, _, _ = _big_run(cloud, client)
    cfg = client.config
    code = (
        "import sys\n"
        "sys.modules['pyarrow'] = None  # as if not installed\n"
        "from benchlink import Client\n"
        f"c = Client({cfg.url!r}, user={cfg.user!r}, project={cfg.project!r}, role='owner')\n"
        "seen = []\n"
        f"path = c.runs.get({run.id!r}).export({str(tmp_path / 'raw.parquet')!r},"
        " progress=seen.append)\n"
        "assert all(p.rows is None and p.total == " + str(N) + " for p in seen), seen\n"
        "assert [p.fraction for p in seen[:-1]] == [None] * (len(seen) - 1), seen\n"
        "assert seen[-1].done and seen[-1].fraction == 1.0\n"
        "assert seen[-1].bytes == path.stat().st_size\n"
        "print(len(seen))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_table(tmp_path / "raw.parquet").num_rows == N
