"""CSV export: cells a spreadsheet would run as formulas are neutralised, numbers stay exact."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from tests.cloud.conftest import Api, assert_problem

FORMULA = '=HYPERLINK("http://evil.example/x","open")'


def test_export_neutralises_formula_text_and_keeps_numbers_exact(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    # An editor chooses the profile version, which every exported reading carries (it
    # converts the readings stamped from its effective_from on).
    now = datetime.now(UTC)
    r = api.put(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profile",
        {
            "version": FORMULA,
            "kind": "linear",
            "payload": {"a": 1.0, "b": 0.0},
            "effective_from": (now - timedelta(seconds=60)).isoformat(),
        },
        headers=owner.headers(),
    )
    assert r.status_code in (200, 201), r.text
    raws = [-3.5, 0.1, -1e-300, 1.0000000000000002]
    readings = [
        {"timestamp": (now - timedelta(seconds=10 - i)).isoformat(), "raw_value": v}
        for i, v in enumerate(raws)
    ]
    assert api.ingest(ids, readings).status_code == 202

    r = api.get(
        "/api/v1/telemetry/export.csv",
        params={"run_id": ids["run_id"]},
        headers=owner.headers("viewer"),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["profile_version"] for row in rows] == ["'" + FORMULA] * len(raws)
    # Numeric cells are data, even when negative: written exactly, never quoted.
    assert [row["raw_value"] for row in rows] == [repr(v) for v in raws]
    assert [float(row["value"]) for row in rows] == raws
    assert all(not row[k].startswith("'") for row in rows for k in row if k != "profile_version")


def test_text_cells_that_start_a_formula_get_a_quote() -> None:
    from cloud.services.telemetry_export import text_cell

    for bad in ("=1+1", "+1", "-1+2", "@SUM(A1)", "\t=1", "\r=1"):
        assert text_cell(bad) == "'" + bad
    for fine in ("v1", "1.2", "", "a=b", "'=1"):
        assert text_cell(fine) == fine


def test_export_needs_a_filter(api: Api) -> None:
    owner = api.project()
    r = api.get("/api/v1/telemetry/export.csv", headers=owner.headers())
    assert_problem(r, 422, "run_id")
