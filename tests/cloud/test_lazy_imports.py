"""pyarrow and numpy are loaded by the first export or calibration fit that needs them, not when
the app is built: each is tens of MB of every API process's memory, and most processes never
export a Parquet file or fit a calibration.

Checked in a fresh interpreter (this test process has imported both long since): building and
starting the app, and serving what most requests do (ingest, charts, lists, a CSV export),
leave both out of ``sys.modules``; a Parquet export then loads pyarrow, a fit numpy, and both
answer as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cloud.migrate import upgrade

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import io, json, sys

HEAVY = ("numpy", "pyarrow")
loaded = lambda: sorted(m for m in HEAVY if m in sys.modules)
seen = {}

from tests.cloud.conftest import Api, make_client
seen["import"] = loaded()
with make_client(sys.argv[1]) as client:
    seen["started"] = loaded()
    api = Api(client)
    who = api.project()
    ids = api.stack(who)
    readings = [
        {"timestamp": f"2024-01-01T00:00:{s:02d}Z", "raw_value": float(s)} for s in range(20)
    ]
    assert api.ingest(ids, readings).status_code == 202
    h = who.headers()
    chart = client.get(
        "/api/v1/telemetry/series",
        params={"sensor_id": ids["sensor_id"], "max_points": 5},
        headers=h,
    )
    assert chart.status_code == 200 and chart.json()["total"] == 20, chart.text
    assert len(api.readings(who, run_id=ids["run_id"])) == 20
    csv = client.get("/api/v1/telemetry/export", params={"run_id": ids["run_id"]}, headers=h)
    assert csv.status_code == 200 and csv.text.count("\n") == 21, csv.text
    seen["served"] = loaded()

    parquet = client.get(
        "/api/v1/telemetry/export",
        params={"run_id": ids["run_id"], "format": "parquet"},
        headers=h,
    )
    assert parquet.status_code == 200, parquet.text
    import pyarrow.parquet as pq

    seen["parquet_rows"] = pq.read_table(io.BytesIO(parquet.content)).num_rows
    points = [{"value": v, "reference": 2.0 * v + 1.0} for v in (1.0, 2.0, 3.0, 4.0)]
    fit = client.post(
        f"/api/v1/sensors/{ids['sensor_id']}/calibrations",
        json={"points": points, "degree": 1},
        headers=h,
    )
    assert fit.status_code == 201, fit.text
    seen["coefficients"] = [round(c, 9) for c in fit.json()["coefficients"]]
print(json.dumps(seen))
"""


def test_the_app_loads_pyarrow_and_numpy_only_when_an_export_or_a_fit_needs_them(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["import"] == [], seen
    assert seen["started"] == [], seen
    assert seen["served"] == [], seen
    assert seen["parquet_rows"] == 20
    assert seen["coefficients"] == [1.0, 2.0]
