"""Chart series (``GET /telemetry/series``): the downsampled answer bucket by bucket, against a
reference computed here from the readings sent, on SQLite and PostgreSQL.

The rule (cloud/services/telemetry_query.py, ``Grid``): the cell width is the coarsest of 1 us,
10 ms, 100 ms, 1 s, 10 s, 1 min, 10 min and 1 h that still has at least ``max_points`` cells
(multiples of the width since the Unix epoch) from the first to the last reading; a bucket is
``m`` consecutive cells from the first reading's, ``m`` the fewest that keep the buckets to
``max_points``. A non-empty bucket is answered at the middle of its part of [first, last],
with min, max, mean and count. On the summary widths (10 ms and up) the buckets are added up
from telemetry_rollups, which ingest keeps; the answer must be the same as from the readings.
Values are small multiples of 1/4 so that every sum is exact whatever the order of addition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from cloud.db.engine import make_engine
from tests.cloud.conftest import LONG_AGO, Api, Identity

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


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WIDTHS = (10_000, 100_000, 1_000_000, 10_000_000, 60_000_000, 600_000_000, 3_600_000_000)


def micros(t: datetime) -> int:
    return (t - EPOCH) // US


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
    first, last = micros(readings[0][0]), micros(readings[-1][0])
    width = 1
    for w in WIDTHS:
        if len(range(first // w, last // w + 1)) >= max_points:
            width = w
    cells = last // width - first // width + 1
    m = next(m for m in range(1, cells + 1) if len(range(0, cells, m)) <= max_points)
    start = first // width * width  # bucket k: [start + k*m*width, start + (k+1)*m*width)
    buckets: dict[int, list[float]] = {}
    for t, v in readings:
        buckets.setdefault((micros(t) - start) // (m * width), []).append(value(v))
    points = []
    for k, vs in sorted(buckets.items()):
        lo = max(start + k * m * width, first)
        hi = min(start + (k + 1) * m * width - 1, last)
        points.append(
            {
                "timestamp": EPOCH + US * ((lo + hi) // 2),
                "value": sum(vs) / len(vs),
                "min": min(vs),
                "max": max(vs),
                "count": len(vs),
            }
        )
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
    assert body["sensor_id"] == ids["sensor_id"] and body["display_unit"] == "°C"
    points = [{**p, "timestamp": datetime.fromisoformat(p["timestamp"])} for p in body["points"]]
    return points, body["total"], body["downsampled"]


def send(api: Api, ids: dict[str, str], readings: list[tuple[datetime, float]]) -> None:
    body = [{"timestamp": t.isoformat(), "raw_value": v} for t, v in readings]
    r = api.ingest(ids, body)
    assert r.status_code == 202, r.text


def test_buckets_are_whole_cells(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # One reading a second for 100 s from a whole minute, in at most 10 buckets: 10 s is the
    # coarsest width with 10 cells (1 min has 2), two cells a bucket. A reading on a bucket's
    # edge opens that bucket; the last point lies on the last reading, not past it.
    start = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    readings = [(start + timedelta(seconds=i), float(i % 7) - 2.25) for i in range(101)]
    send(api, ids, readings)
    points, total, down = fetch(api, owner, ids, 10)
    assert (points, total, down) == reference(readings, 10)
    assert [p["count"] for p in points] == [20] * 5 + [1]
    assert points[0]["timestamp"] == start + timedelta(seconds=10) - US
    assert points[-1]["timestamp"] == start + timedelta(seconds=100)


def test_uneven_span_and_peaks(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # A span in microseconds that max_points does not divide, readings at odd offsets (three
    # around one microsecond), two peaks.
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
    # 30 readings on 30 microseconds, max_points 40: buckets narrower than a microsecond,
    # many of them empty; each reading is still counted once, at strictly increasing times.
    readings = [(BASE + US * i, float(i)) for i in range(30)]
    send(api, ids, readings)
    points, total, down = fetch(api, owner, ids, 40)
    assert (points, total, down) == reference(readings, 40)
    assert sum(p["count"] for p in points) == 30
    times = [p["timestamp"] for p in points]
    assert times == sorted(set(times))


def test_all_readings_at_one_time(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # One reading per timestamp: copies of it are dropped, not charted.
    readings = [(BASE, 2.0)]
    send(api, ids, readings * 3)
    points, total, down = fetch(api, owner, ids, 2)
    assert (points, total, down) == reference(readings, 2)
    assert points == [{"timestamp": BASE, "value": 5.0, "min": 5.0, "max": 5.0, "count": 1}]


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
    api.backdate(other["capture_session_id"], BASE)
    mine = [(BASE + timedelta(milliseconds=i), float(i % 5)) for i in range(60)]
    theirs = [(BASE + timedelta(milliseconds=i, microseconds=500), 100.0) for i in range(60)]
    send(api, ids, mine)
    send(api, other, theirs)
    assert fetch(api, owner, ids, 7) == reference(mine, 7)
    assert fetch(api, owner, other, 7) == reference(theirs, 7)


# Summaries (telemetry_rollups): what ingest keeps, and charts read from them.


def dense(start: datetime, n: int, step_us: int = 1000) -> list[tuple[datetime, float]]:
    """``n`` readings ``step_us`` apart: a thousand a second by default."""
    return [(start + US * (i * step_us), float((i * 37) % 23) * 0.25 - 2.0) for i in range(n)]


def db_rows(database_url: str, sql: str, **params: Any) -> list[Any]:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def test_summaries_hold_every_reading_once(
    api: Api, owner: Identity, ids: dict[str, str], database_url: str
) -> None:
    readings = dense(BASE, 3000)
    for lo in range(0, 3000, 1000):
        body = [{"timestamp": t.isoformat(), "raw_value": v} for t, v in readings[lo : lo + 1000]]
        assert api.ingest(ids, body, key=f"k{lo}").status_code == 202
    # A batch sent again (a lost answer) is stored once, and summarised once.
    body = [{"timestamp": t.isoformat(), "raw_value": v} for t, v in readings[:1000]]
    assert api.ingest(ids, body, key="k0").headers["Idempotent-Replayed"] == "true"
    levels = db_rows(
        database_url,
        "SELECT level, sum(n), sum(total), min(lo), max(hi), count(*) FROM telemetry_rollups"
        " GROUP BY level ORDER BY level",
    )
    values = [value(v) for _, v in readings]
    # 1000 readings a second are dense at 10 ms (10 a cell): every level holds all of them.
    assert [row[0] for row in levels] == list(range(7))
    for _level, n, total, lo, hi, _cells in levels:
        assert (n, total, lo, hi) == (3000, sum(values), min(values), max(values))
    assert levels[0][5] == 300  # 3 s of 10 ms cells
    assert [r[0] for r in db_rows(database_url, "SELECT rollup_level FROM telemetry_batches")] == [
        0,
        0,
        0,
    ]


def test_a_dense_session_is_charted_from_the_summaries(
    api: Api, owner: Identity, ids: dict[str, str], database_url: str
) -> None:
    readings = dense(BASE, 6000)
    for lo in range(0, 6000, 1000):
        send(api, ids, readings[lo : lo + 1000])
    assert fetch(api, owner, ids, 50) == reference(readings, 50)
    # The chart of 6 s in 50 points is on 100 ms cells (level 1). Were it read from the
    # readings, a change to the summaries would not show: it does.
    db_rows(database_url, "UPDATE telemetry_rollups SET hi = 12345 WHERE level = 1")
    points, _, _ = fetch(api, owner, ids, 50)
    assert max(p["max"] for p in points) == 12345


def test_since_and_until_that_cut_cells(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    # Zoomed in: since and until fall inside 10 ms cells; those two cells are read reading by
    # reading, the cells between them from the summaries.
    readings = dense(BASE, 5000, step_us=700)
    for lo in range(0, 5000, 1000):
        send(api, ids, readings[lo : lo + 1000])
    since, until = BASE + US * 123_456, BASE + US * 3_210_987
    window = [r for r in readings if since <= r[0] < until]
    got = fetch(api, owner, ids, 40, since=since.isoformat(), until=until.isoformat())
    assert got == reference(window, 40) and got[1] == len(window)


def test_sparse_batches_among_dense_ones(
    api: Api, owner: Identity, ids: dict[str, str], database_url: str
) -> None:
    # Single readings (summarised from 1 min up only) inside and around dense batches, and a batch whose
    # readings come out of time order: all counted once, the same as from the readings.
    readings = dense(BASE, 4000)
    shuffled = readings[1000:2000]
    shuffled = shuffled[1::2] + shuffled[::2]
    send(api, ids, readings[:1000])
    send(api, ids, shuffled)
    send(api, ids, readings[2000:])
    singles = [
        (BASE + US * 1_500_250, 100.0),
        (BASE - timedelta(seconds=2), -50.0),
        (BASE + timedelta(seconds=9), 7.5),
    ]
    for single in singles:
        send(api, ids, [single])
    everything = readings + singles
    assert fetch(api, owner, ids, 60) == reference(everything, 60)
    levels = db_rows(database_url, "SELECT rollup_level FROM telemetry_batches ORDER BY id")
    assert [r[0] for r in levels] == [0, 0, 0, 4, 4, 4]  # single readings: from 1 min up


def test_many_sparse_batches_are_read_from_the_readings(
    api: Api, owner: Identity, ids: dict[str, str], database_url: str
) -> None:
    # More than 100 batches outside the chart's level: reading them one by one would cost more
    # than the readings, so the chart reads the readings (the summaries, changed here, do not
    # show).
    readings = dense(BASE, 2000)
    send(api, ids, readings)
    singles = [(BASE + US * (i * 19_001 + 7), float(i % 5)) for i in range(101)]
    for single in singles:
        send(api, ids, [single])
    db_rows(database_url, "UPDATE telemetry_rollups SET hi = 12345")
    assert fetch(api, owner, ids, 30) == reference(readings + singles, 30)


# Every filter the API takes: sensor, sensor + session, sensor + run (and all three), each
# with and without since/until, against the readings that filter selects; and the first pages
# of the telemetry list by each of run, sensor and session and their combinations.

Readings = list[tuple[datetime, float]]


@pytest.fixture
def spread(api: Api, owner: Identity, ids: dict[str, str]) -> dict[str, Any]:
    """The stack's sensor in two sessions of its run and in a session of another run (the
    same times: only the filter tells them apart), with a second sensor in the first
    session; dense batches, a sparse one and a batch out of time order."""
    run2 = api.run(owner, ids["experiment_id"])
    other_sensor, token = api.sensor(owner)
    scopes = {
        "s1": ids,
        "b1": {**ids, "sensor_id": other_sensor, "token": token},
        "s2": ids,  # its session opens once the first one is stopped (one runs at a time)
        "r2": {**ids, "run_id": run2, "capture_session_id": api.session(owner, run2)},
    }
    api.backdate(scopes["r2"]["capture_session_id"], LONG_AGO)
    sent: dict[str, Readings] = {}
    for k, name in enumerate(scopes):
        if name == "s2":
            stop = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}/stop"
            assert api.post(stop, {"status": "succeeded"}, headers=owner.headers()).is_success
            session2 = api.session(owner, ids["run_id"], ordinal=2)
            api.backdate(session2, LONG_AGO)
            scopes["s2"] = {**ids, "capture_session_id": session2}
        scope = scopes[name]
        offset = timedelta(seconds=4) if name == "s2" else timedelta(microseconds=137 * k)
        readings = dense(BASE + offset, 3000, step_us=900 + 50 * k)
        shuffled = readings[1000:2000]
        batches = [readings[:1000], shuffled[1::2] + shuffled[::2], readings[2000:]]
        for batch in batches:
            send(api, scope, batch)
        single = (BASE + offset + timedelta(milliseconds=1234, microseconds=k), 40.0 + k)
        send(api, scope, [single])
        sent[name] = [*readings, single]
    return {"scopes": scopes, "sent": sent}


SERIES_FILTERS = {
    "sensor": (("sensor_id",), ("s1", "s2", "r2")),
    "sensor + session": (("sensor_id", "capture_session_id"), ("s1",)),
    "sensor + run": (("sensor_id", "run_id"), ("s1", "s2")),
    "sensor + session + run": (("sensor_id", "capture_session_id", "run_id"), ("s1",)),
}
#: (since, until) after BASE; None: open.
WINDOWS = [
    (None, None),
    (timedelta(microseconds=1_234_567), None),
    (None, timedelta(microseconds=5_678_901)),
    (timedelta(microseconds=1_234_567), timedelta(microseconds=5_678_901)),
    (timedelta(seconds=2), timedelta(seconds=2, milliseconds=40)),  # few: every reading
]


def window_params(window: tuple[timedelta | None, timedelta | None]) -> dict[str, str]:
    since, until = window
    params = {}
    if since is not None:
        params["since"] = (BASE + since).isoformat()
    if until is not None:
        params["until"] = (BASE + until).isoformat()
    return params


def in_window(readings: Readings, window: tuple[timedelta | None, timedelta | None]) -> Readings:
    since, until = window
    return [
        r
        for r in readings
        if (since is None or r[0] >= BASE + since) and (until is None or r[0] < BASE + until)
    ]


@pytest.mark.parametrize("name", list(SERIES_FILTERS))
def test_every_filter_and_window_against_the_readings(
    api: Api, owner: Identity, spread: dict[str, Any], name: str
) -> None:
    fields, selected = SERIES_FILTERS[name]
    ids = spread["scopes"]["s1"]
    params = {f: ids[f] for f in fields}
    everything = [r for s in selected for r in spread["sent"][s]]
    for window in WINDOWS:
        expected = in_window(everything, window)
        for max_points in (60, 500):
            r = api.get(
                "/api/v1/telemetry/series",
                params={**params, **window_params(window), "max_points": max_points},
                headers=owner.headers(),
            )
            assert r.status_code == 200, r.text
            body = r.json()
            points = [
                {**p, "timestamp": datetime.fromisoformat(p["timestamp"])} for p in body["points"]
            ]
            got = (points, body["total"], body["downsampled"])
            assert got == reference(expected, max_points), (name, window, max_points)


LIST_FILTERS = {
    "run": (("run_id",), ("s1", "s2", "b1")),
    "session": (("capture_session_id",), ("s1", "b1")),
    "sensor": (("sensor_id",), ("s1", "s2", "r2")),
    "sensor + session": (("sensor_id", "capture_session_id"), ("s1",)),
    "sensor + run": (("sensor_id", "run_id"), ("s1", "s2")),
    "run + session": (("run_id", "capture_session_id"), ("s1", "b1")),
}


@pytest.mark.parametrize("name", list(LIST_FILTERS))
def test_the_list_by_every_filter_and_window(
    api: Api, owner: Identity, spread: dict[str, Any], name: str
) -> None:
    # The first pages of GET /telemetry: the readings of the filter in time order (readings
    # at the same time in the order they were stored), page after page.
    fields, selected = LIST_FILTERS[name]
    ids = spread["scopes"]["s1"]
    params = {f: ids[f] for f in fields}
    sensor_of = {s: spread["scopes"][s]["sensor_id"] for s in selected}
    for window in WINDOWS[:4]:
        expected = sorted(
            (t, sensor_of[s], value(v)) for s in selected for t, v in spread["sent"][s]
        )
        expected = [e for e in expected if in_window([(e[0], 0.0)], window)]
        got: list[tuple[datetime, str, float]] = []
        cursor = None
        for _ in range(3):
            q = {**params, **window_params(window), "limit": 700}
            r = api.get(
                "/api/v1/telemetry", params=q | ({"cursor": cursor} if cursor else {}),
                headers=owner.headers(),
            )  # fmt: skip
            assert r.status_code == 200, r.text
            body = r.json()
            got += [
                (datetime.fromisoformat(i["timestamp"]), i["sensor_id"], i["value"])
                for i in body["items"]
            ]
            cursor = body["next_cursor"]
        assert got == expected[:2100], (name, window)


def test_a_live_history_says_where_the_stream_goes_on(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    """``live=true``: ``live_from`` is the commit position of the newest batch the history
    holds (the portal opens the live stream there); without it, no position is read."""

    def live_from(**params: str) -> Any:
        r = api.get(
            "/api/v1/telemetry/series",
            params={"sensor_id": ids["sensor_id"], **params},
            headers=owner.headers("viewer"),
        )
        assert r.status_code == 200, r.text
        return r.json()["live_from"]

    assert live_from() is None
    send(api, ids, [(BASE, 1.0), (BASE + US, 2.0)])
    first = live_from(live="true")
    assert first.startswith("p") and int(first[1:]) >= 1
    send(api, ids, [(BASE + 2 * US, 3.0)])
    second = live_from(live="true", capture_session_id=ids["capture_session_id"])
    assert int(second[1:]) == int(first[1:]) + 1
    r = api.get(
        "/api/v1/telemetry/series",
        params={"sensor_id": ids["sensor_id"], "live": "maybe"},
        headers=owner.headers(),
    )
    assert r.status_code == 422 and "live" in r.text
