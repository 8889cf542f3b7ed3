"""Exports as Parquet, Arrow and CSV (both databases): what pyarrow, pandas and polars read
from them is what the list endpoints answer, and the files name the run they came from."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cloud.conftest import Api, Identity, assert_problem

EXPORT = "/api/v1/telemetry/export"
COLUMNS = [
    "timestamp",
    "sensor_id",
    "sensor",
    "run_id",
    "capture_session_id",
    "raw_value",
    "raw_unit",
    "value",
    "value_unit",
    "profile_version",
    "late",
]
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _readings(start: datetime, raws: list[float]) -> list[dict[str, Any]]:
    return [
        {"timestamp": (start + timedelta(milliseconds=250 * i)).isoformat(), "raw_value": v}
        for i, v in enumerate(raws)
    ]


def _scenario(api: Api) -> tuple[Identity, dict[str, Any]]:
    """A run with two sensors, one of which changed its display unit (a new profile version)
    during the run, and another run whose readings no export of the first may hold."""
    owner = api.project()
    ids = api.stack(owner)
    h = owner.headers()
    exp = api.experiment(owner, name="furnace", tags=["oven", "k-type"])
    run = api.run(owner, exp, {"name": "ramp 7", "params": {"rate_c_min": 5, "gas": "N2"},
                               "tags": ["ramp"]})  # fmt: skip
    session = api.session(owner, run)
    api.backdate(session, T0 - timedelta(days=1))
    other_id, other_token = api.sensor(owner, name="chamber", display_unit="K")
    a = {**ids, "run_id": run, "capture_session_id": session}
    b = {**a, "sensor_id": other_id, "token": other_token}
    assert api.ingest(a, _readings(T0, [-3.5, 0.1, 1.0000000000000002])).status_code == 202
    later = T0 + timedelta(seconds=10)  # v2 (in °F) converts from then on
    body = {"display_unit": "degF", "effective_from": later.isoformat()}
    r = api.patch(f"/api/v1/sensors/{a['sensor_id']}", body, headers=h)
    assert r.status_code == 200 and r.json()["conversion_profile"]["version"] == "v2", r.text
    assert api.ingest(a, _readings(later, [2.5, -1e-300])).status_code == 202
    assert (
        api.ingest(b, _readings(T0 + timedelta(milliseconds=100), [7.0, 8.0, 9.5])).status_code
        == 202
    )
    # The stack's own run: same sensor, other readings, not part of the run above.
    assert api.ingest(ids, _readings(T0 - timedelta(hours=1), [42.0])).status_code == 202
    return owner, {"a": a, "b": b, "run": run, "session": session, "first_run": ids["run_id"]}


def _expected(api: Api, who: Identity, **params: str) -> list[dict[str, Any]]:
    """The list endpoint's readings of ``params``, with their units and sensor names."""
    h = who.headers()
    units: dict[tuple[str, str], tuple[str, str]] = {}
    names: dict[str, str] = {}
    items = api.readings(who, **params)
    for sid in {i["sensor_id"] for i in items}:
        names[sid] = api.get(f"/api/v1/sensors/{sid}", headers=h).json()["name"]
        history = api.get(f"/api/v1/sensors/{sid}/conversion-profiles", headers=h).json()
        for p in history["items"]:
            units[sid, p["version"]] = (p["input_unit"], p["display_unit"])
    return [
        {
            "timestamp": datetime.fromisoformat(i["timestamp"]),
            "sensor_id": i["sensor_id"],
            "sensor": names[i["sensor_id"]],
            "run_id": i["run_id"],
            "capture_session_id": i["capture_session_id"],
            "raw_value": i["raw_value"],
            "raw_unit": units[i["sensor_id"], i["profile_version"]][0],
            "value": i["value"],
            "value_unit": units[i["sensor_id"], i["profile_version"]][1],
            "profile_version": i["profile_version"],
            "late": i["late"],
        }
        for i in items
    ]


def _download(api: Api, who: Identity, fmt: str, path: str = EXPORT, **params: str) -> bytes:
    r = api.get(path, params={"format": fmt, **params}, headers=who.headers("viewer"))
    assert r.status_code == 200, r.text
    return r.content


def _description(schema: pa.Schema) -> dict[str, Any]:
    assert schema.metadata is not None
    described: dict[str, Any] = json.loads(schema.metadata[b"benchlink"])
    return described


def test_parquet_and_arrow_hold_the_list_endpoints_readings(api: Api) -> None:
    owner, s = _scenario(api)
    expected = _expected(api, owner, run_id=s["run"])
    assert len(expected) == 8 and {e["value_unit"] for e in expected} == {"°C", "°F", "K"}
    parquet = pq.read_table(io.BytesIO(_download(api, owner, "parquet", run_id=s["run"])))
    arrow = pa.ipc.open_stream(_download(api, owner, "arrow", run_id=s["run"])).read_all()
    for table in (parquet, arrow):
        assert table.column_names == COLUMNS
        assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("value").type == pa.float64()
        assert table.to_pylist() == expected  # exact floats, aware UTC timestamps


def test_the_files_describe_the_run(api: Api) -> None:
    owner, s = _scenario(api)
    blob = _download(api, owner, "parquet", run_id=s["run"])
    for schema in (
        pq.read_schema(io.BytesIO(blob)),
        pa.ipc.open_stream(_download(api, owner, "arrow", run_id=s["run"])).schema,
    ):
        d = _description(schema)
        assert d["kind"] == "telemetry" and d["filter"] == {"run_id": s["run"]}
        [run] = d["runs"]
        assert run["id"] == s["run"] and run["name"] == "ramp 7"
        assert run["params"] == {"rate_c_min": 5, "gas": "N2"} and run["tags"] == ["ramp"]
        [exp] = d["experiments"]
        assert exp["name"] == "furnace" and exp["tags"] == ["oven", "k-type"]
        assert [c["id"] for c in d["capture_sessions"]] == [s["session"]]
        sensors = {x["id"]: x for x in d["sensors"]}
        assert set(sensors) == {s["a"]["sensor_id"], s["b"]["sensor_id"]}
        a = sensors[s["a"]["sensor_id"]]
        assert a["display_unit"] == "°F" and a["profile_version"] == "v2"
        assert [(p["version"], p["input_unit"], p["display_unit"]) for p in a["profiles"]] == [
            ("v1", "mV", "°C"),
            ("v2", "mV", "°F"),
        ]
        assert a["profiles"][0]["payload"] == {"a": 2.0, "b": 1.0}
        assert sensors[s["b"]["sensor_id"]]["name"] == "chamber"


def test_pandas_and_polars_read_them(api: Api) -> None:
    owner, s = _scenario(api)
    expected = _expected(api, owner, run_id=s["run"])
    blob = _download(api, owner, "parquet", run_id=s["run"])
    stream = _download(api, owner, "arrow", run_id=s["run"])

    df = pd.read_parquet(io.BytesIO(blob))
    assert df.attrs["benchlink"]["runs"][0]["name"] == "ramp 7"  # pandas keeps the metadata
    assert str(df["timestamp"].dtype) == "datetime64[us, UTC]"
    assert list(df["timestamp"]) == [pd.Timestamp(e["timestamp"]) for e in expected]
    assert df["value"].tolist() == [e["value"] for e in expected]
    assert df["value_unit"].astype(str).tolist() == [e["value_unit"] for e in expected]
    frame = pa.ipc.open_stream(stream).read_pandas()
    assert frame["raw_value"].tolist() == [e["raw_value"] for e in expected]

    for frame_pl in (pl.read_parquet(io.BytesIO(blob)), pl.read_ipc_stream(io.BytesIO(stream))):
        assert frame_pl.columns == COLUMNS
        assert frame_pl.schema["timestamp"] == pl.Datetime("us", "UTC")
        rows = frame_pl.with_columns(pl.col(pl.Categorical).cast(pl.String)).to_dicts()
        assert rows == expected
    meta = pl.read_parquet_metadata(io.BytesIO(blob))
    assert json.loads(meta["benchlink"])["runs"][0]["id"] == s["run"]


def test_by_session_and_by_sensor(api: Api) -> None:
    owner, s = _scenario(api)
    a = s["a"]["sensor_id"]
    for params, sensors in (
        ({"capture_session_id": s["session"]}, 2),
        ({"sensor_id": a}, 1),
        ({"sensor_id": a, "run_id": s["run"], "since": (T0 + timedelta(seconds=5)).isoformat()}, 1),
    ):
        expected = _expected(api, owner, **params)
        for fmt in ("parquet", "arrow"):
            blob = _download(api, owner, fmt, **params)
            table = pq.read_table(io.BytesIO(blob)) if fmt == "parquet" else (
                pa.ipc.open_stream(blob).read_all())  # fmt: skip
            assert table.to_pylist() == expected, params
            assert len(_description(table.schema)["sensors"]) == sensors
    # A sensor's export spans its runs: both are described.
    d = _description(pq.read_schema(io.BytesIO(_download(api, owner, "parquet", sensor_id=a))))
    assert {r["id"] for r in d["runs"]} == {s["run"], s["first_run"]}


def test_csv_is_the_same_readings(api: Api) -> None:
    owner, s = _scenario(api)
    expected = _expected(api, owner, run_id=s["run"])
    rows = list(csv.DictReader(io.StringIO(_download(api, owner, "csv", run_id=s["run"]).decode())))
    assert [float(r["value"]) for r in rows] == [e["value"] for e in expected]
    assert [r["value_unit"] for r in rows] == [e["value_unit"] for e in expected]
    # The earlier address answers the same file.
    earlier = _download(api, owner, "csv", path=EXPORT + ".csv", run_id=s["run"])
    assert earlier == _download(api, owner, "csv", run_id=s["run"])


@pytest.mark.parametrize(
    ("fmt", "media_type", "extension"),
    [
        ("parquet", "application/vnd.apache.parquet", "parquet"),
        ("arrow", "application/vnd.apache.arrow.stream", "arrows"),
        ("csv", "text/csv; charset=utf-8", "csv"),
    ],
)
def test_download_headers(api: Api, fmt: str, media_type: str, extension: str) -> None:
    owner = api.project()
    ids = api.stack(owner)
    assert api.ingest(ids, _readings(T0, [1.0])).status_code == 202
    h = owner.headers("viewer")
    r = api.get(EXPORT, params={"format": fmt, "run_id": ids["run_id"]}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == media_type
    name = f"telemetry-run-{ids['run_id']}.{extension}"
    assert r.headers["content-disposition"] == f'attachment; filename="{name}"'
    params = {"format": fmt, "capture_session_id": ids["capture_session_id"]}
    r = api.get(EXPORT, params=params, headers=h)
    assert f"telemetry-session-{ids['capture_session_id']}." in r.headers["content-disposition"]
    r = api.get(f"/api/v1/runs/{ids['run_id']}/metrics/export", params={"format": fmt}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == media_type
    name = f"metrics-run-{ids['run_id']}.{extension}"
    assert r.headers["content-disposition"] == f'attachment; filename="{name}"'


def test_an_unknown_format_is_refused(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    h = owner.headers("viewer")
    r = api.get(EXPORT, params={"format": "xlsx", "run_id": ids["run_id"]}, headers=h)
    body = assert_problem(r, 422, "format")
    assert "parquet" in body["detail"]
    r = api.get(
        f"/api/v1/runs/{ids['run_id']}/metrics/export", params={"format": "hdf5"}, headers=h
    )
    assert_problem(r, 422, "format")
    assert_problem(api.get(EXPORT, params={"format": "arrow"}, headers=h), 422, "run_id")


def test_a_viewer_of_another_project_gets_404(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    assert api.ingest(ids, _readings(T0, [1.0])).status_code == 202
    stranger = api.project("elsewhere").headers("viewer")
    mine = owner.headers("viewer")
    for fmt in ("parquet", "arrow", "csv"):
        for key in ("run_id", "capture_session_id", "sensor_id"):
            params = {"format": fmt, key: ids[key]}
            assert api.get(EXPORT, params=params, headers=mine).status_code == 200
            assert_problem(api.get(EXPORT, params=params, headers=stranger), 404)
        path = f"/api/v1/runs/{ids['run_id']}/metrics/export"
        assert api.get(path, params={"format": fmt}, headers=mine).status_code == 200
        r = api.get(f"/api/v1/runs/{ids['run_id']}/metrics/export", params={"format": fmt},
                    headers=stranger)  # fmt: skip
        assert_problem(r, 404)


def test_metrics_export_holds_the_list_endpoints_points(api: Api) -> None:
    owner, s = _scenario(api)
    h = owner.headers()
    points = [{"name": "loss", "step": k, "value": 1 / (k + 1), "unit": None} for k in range(5)] + [
        {"name": "temp", "step": k, "value": 20.5 + k, "unit": "degC"} for k in range(3)
    ]
    r = api.post(f"/api/v1/runs/{s['run']}/metrics", {"metrics": points}, headers=h)
    assert r.status_code == 201, r.text
    listed = api.get(f"/api/v1/runs/{s['run']}/metrics", headers=h).json()["points"]
    expected = [
        {
            "name": p["name"],
            "step": p["step"],
            "value": p["value"],
            "timestamp": datetime.fromisoformat(p["timestamp"]),
            "unit": p["unit"],
        }
        for p in listed
    ]
    path = f"/api/v1/runs/{s['run']}/metrics/export"
    blob = _download(api, owner, "parquet", path=path)
    stream = _download(api, owner, "arrow", path=path)
    for table in (pq.read_table(io.BytesIO(blob)), pa.ipc.open_stream(stream).read_all()):
        assert table.to_pylist() == expected
        d = _description(table.schema)
        assert d["kind"] == "metrics" and d["runs"][0]["name"] == "ramp 7"
        assert d["experiments"][0]["name"] == "furnace"
    assert pd.read_parquet(io.BytesIO(blob)).attrs["benchlink"]["runs"][0]["id"] == s["run"]
    assert pl.read_ipc_stream(io.BytesIO(stream))["value"].to_list() == [
        e["value"] for e in expected
    ]
    one = pq.read_table(io.BytesIO(_download(api, owner, "parquet", path=path, name="temp")))
    assert one.to_pylist() == [e for e in expected if e["name"] == "temp"]
    rows = list(csv.DictReader(io.StringIO(_download(api, owner, "csv", path=path).decode())))
    assert [(r["name"], int(r["step"]), float(r["value"]), r["unit"]) for r in rows] == [
        (e["name"], e["step"], e["value"], e["unit"] or "") for e in expected
    ]


def test_an_empty_export_is_a_valid_file(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    table = pq.read_table(io.BytesIO(_download(api, owner, "parquet", run_id=ids["run_id"])))
    assert table.num_rows == 0 and table.column_names == COLUMNS
    d = _description(table.schema)
    assert d["runs"][0]["id"] == ids["run_id"] and d["sensors"] == []
    stream = pa.ipc.open_stream(_download(api, owner, "arrow", run_id=ids["run_id"])).read_all()
    assert stream.num_rows == 0
