"""Chart series (``GET /telemetry/series``): the downsampled answer bucket by bucket, against a
reference computed here from the readings sent, on SQLite and PostgreSQL.

The rule (cloud/services/telemetry_query.py): [first, last reading] is split at the whole
microseconds ``edge k = first + floor(k * span / max_points)``; bucket k holds the readings with
``edge k <= ts < edge k+1`` (the last bucket also the last reading) and is answered, if not
empty, at ``first + (offset k + offset k+1) // 2`` microseconds with min, max, mean and count.
Values are small multiples of 1/4 so that every sum is exact whatever the order of addition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.cloud.conftest import Api, Identity

US = timedelta(microseconds=1)
BASE = datetime(2026, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)  # the past: nothing is "late"


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


@pytest.fixture
def ids(api: Api, owner: Identity) -> dict[str, str]:
    return api.stack(owner)


def value(raw: float) -> float:
    return 2.0 * raw + 1.0  # the stack's sensor profile: linear a=2, b=1


def reference(
    readings: list[tuple[datetime, float]], max_points: int
) -> tuple[list[dict[str, Any]], int, bool]:
    """The series the API must answer for these (timestamp, raw value) readings, brute force."""
    readings = sorted(readings, key=lambda r: r[0])  # stable: same-time readings in sent order
    if len(readings) <= max_points:
        points = [
            {"timestamp": t, "value": value(v), "min": value(v), "max": value(v), "count": 1}
            for t, v in readings
        ]
        return points, len(readings), False
    first, last = readings[0][0], readings[-1][0]
    span = (last - first) // US
    offsets = [k * span // max_points for k in range(max_points + 1)]
    buckets: dict[int, list[float]] = {}
    for t, v in readings:
        d = (t - first) // US
        k = max(k for k in range(max_points) if offsets[k] <= d)
        buckets.setdefault(k, []).append(value(v))
    points = [
        {
            "timestamp": first + US * ((offsets[k] + offsets[k + 1]) // 2),
            "value": sum(vs) / len(vs),
            "min": min(vs),
            "max": max(vs),
            "count": len(vs),
        }
        for k, vs in sorted(buckets.items())
    ]
    return points, len(readings), True


def fetch(
    api: Api, owner: Identity, ids: dict[str, str], max_points: int, **params: str
) -> tuple[list[dict[str, Any]], int, bool]:
    r = api.get(
        "/api/v1/telemetry/series",
        params={
            "sensor_id": ids["sensor_id"],
            "capture_session_id": ids["capture_session_id"],
            "max_points": max_points,
            **params,
        },
        headers=owner.headers(),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sensor_id"] == ids["sensor_id"] and body["display_unit"] == "C"
    points = [{**p, "timestamp": datetime.fromisoformat(p["timestamp"])} for p in body["points"]]
    return points, body["total"], body["downsampled"]


def send(api: Api, ids: dict[str, str], readings: list[tuple[datetime, float]]) -> None:
    body = [{"timestamp": t.isoformat(), "raw_value": v} for t, v in readings]
    r = api.ingest(ids, body)
    assert r.status_code == 202, r.text


def test_bucket_edges_fall_on_readings(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # One reading a second for 100 s in 10 buckets: every edge is a reading's time. A reading
    # on an edge opens the next bucket; the last bucket also takes the last reading (11).
    readings = [(BASE + timedelta(seconds=i), float(i % 7) - 2.25) for i in range(101)]
    send(api, ids, readings)
    points, total, down = fetch(api, owner, ids, 10)
    assert (points, total, down) == reference(readings, 10)
    assert [p["count"] for p in points] == [10] * 9 + [11]
    assert [p["timestamp"] for p in points] == [
        BASE + timedelta(seconds=5 + 10 * k) for k in range(10)
    ]


def test_uneven_span_and_peaks(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # A span in microseconds that max_points does not divide, readings at odd offsets (some on
    # an edge, some a microsecond either side of one), two peaks.
    offsets = sorted({(i * 7_919_111) % 10_000_019 for i in range(600)} | {0, 10_000_019})
    raws = {o: float((o % 11) - 5) * 0.25 for o in offsets}
    edge = 10_000_019 * 37 // 97  # edge 37 of 97
    for o in (edge - 1, edge, edge + 1):
        raws[o] = 1.5
    raws[offsets[123]], raws[offsets[321]] = 1000.0, -500.0
    readings = [(BASE + US * o, v) for o, v in sorted(raws.items())]
    send(api, ids, readings)
    points, total, down = fetch(api, owner, ids, 97)
    assert (points, total, down) == reference(readings, 97)
    assert max(p["max"] for p in points) == 2001.0 and min(p["min"] for p in points) == -999.0


def test_gaps_leave_no_empty_buckets(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # Two bursts an hour apart: the buckets between them are left out, not answered as zeros.
    readings = [(BASE + timedelta(milliseconds=i), 1.0) for i in range(50)]
    readings += [(BASE + timedelta(hours=1, milliseconds=i), 3.0) for i in range(50)]
    send(api, ids, readings)
    points, total, down = fetch(api, owner, ids, 20)
    assert (points, total, down) == reference(readings, 20)
    assert [p["count"] for p in points] == [50, 50] and total == 100 and down


def test_span_shorter_than_max_points_microseconds(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    # 30 readings on three microseconds, max_points 20: most buckets are empty spans of zero
    # microseconds; each reading is still counted once, at strictly increasing times.
    readings = [(BASE + US * (i % 3), float(i)) for i in range(30)]
    send(api, ids, readings)
    points, total, down = fetch(api, owner, ids, 20)
    assert (points, total, down) == reference(readings, 20)
    assert sum(p["count"] for p in points) == 30
    times = [p["timestamp"] for p in points]
    assert times == sorted(set(times))


def test_all_readings_at_one_time(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    readings = [(BASE, float(i)) for i in range(5)]
    send(api, ids, readings)
    points, total, down = fetch(api, owner, ids, 2)
    assert (points, total, down) == reference(readings, 2)
    assert points == [{"timestamp": BASE, "value": 5.0, "min": 1.0, "max": 9.0, "count": 5}]


def test_since_until_window(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # The buckets span the window's own first and last readings; since is inclusive, until
    # exclusive, exactly as for GET /telemetry.
    readings = [(BASE + timedelta(milliseconds=10 * i), float(i % 13) * 0.5) for i in range(400)]
    send(api, ids, readings)
    since, until = BASE + timedelta(milliseconds=500), BASE + timedelta(milliseconds=3_210)
    window = [r for r in readings if since <= r[0] < until]
    assert len(window) == 271
    got = fetch(api, owner, ids, 25, since=since.isoformat(), until=until.isoformat())
    assert got == reference(window, 25)
    assert got[0][0]["timestamp"] > since and got[1] == 271
    # Few enough for the window: every reading, in time order, not downsampled.
    got = fetch(api, owner, ids, 300, since=since.isoformat(), until=until.isoformat())
    assert got == reference(window, 300) and got[2] is False and len(got[0]) == 271
    # An empty window.
    later = (BASE + timedelta(days=1)).isoformat()
    assert fetch(api, owner, ids, 25, since=later) == ([], 0, False)


def test_one_session_of_a_sensor(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # Readings of the same sensor in another run's session are not in the chart.
    run_id = api.run(owner, ids["experiment_id"])
    other = {**ids, "run_id": run_id, "capture_session_id": api.session(owner, run_id)}
    mine = [(BASE + timedelta(milliseconds=i), float(i % 5)) for i in range(60)]
    theirs = [(BASE + timedelta(milliseconds=i, microseconds=500), 100.0) for i in range(60)]
    send(api, ids, mine)
    send(api, other, theirs)
    assert fetch(api, owner, ids, 7) == reference(mine, 7)
    assert fetch(api, owner, other, 7) == reference(theirs, 7)
