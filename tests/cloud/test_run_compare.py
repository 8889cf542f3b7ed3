"""GET /api/v1/runs/compare: one sensor's series of several runs, each on seconds since its
first capture session started, the same series the run's chart has (peaks kept)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.cloud.conftest import Api, Identity, assert_problem


def stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def recorded(
    api: Api, who: Identity, exp: str, sensor: tuple[str, str], start: datetime, values: list[float]
) -> str:
    """A run whose session started at ``start`` and read ``values`` 10 ms apart from 2 s on."""
    run = api.run(who, exp, {"name": f"run {start:%d}"})
    session = api.session(who, run)
    api.backdate(session, start)
    ids = {"sensor_id": sensor[0], "token": sensor[1], "run_id": run, "capture_session_id": session}
    at = [start + timedelta(seconds=2, milliseconds=10 * i) for i in range(len(values))]
    for i in range(0, len(values), 1000):
        chunk = [
            {"timestamp": stamp(t), "raw_value": v}
            for t, v in zip(at[i : i + 1000], values[i : i + 1000], strict=True)
        ]
        r = api.ingest(ids, chunk)
        assert r.status_code == 202, r.text
    return run


def compare(api: Api, who: Identity, query: str) -> dict[str, Any]:
    r = api.get(f"/api/v1/runs/compare?{query}", headers=who.headers("viewer"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_runs_of_different_days_overlay_on_time_since_their_session_started(api: Api) -> None:
    owner = api.project()
    probe = api.sensor(
        owner, name="probe", profile={"version": "v1", "kind": "linear", "payload": {"a": 1}}
    )
    exp = api.experiment(owner)
    day1, day8 = datetime(2026, 3, 1, 9, tzinfo=UTC), datetime(2026, 3, 8, 14, 30, tzinfo=UTC)
    short = recorded(api, owner, exp, probe, day1, [20.0, 21.5, 23.0])
    ramp = [20.0 + i * 0.1 for i in range(3000)]
    ramp[1234] = 999.0  # a spike the downsampling must keep
    long = recorded(api, owner, exp, probe, day8, ramp)
    idle = api.run(owner, exp, {"name": "idle"})

    body = compare(
        api, owner, f"run_id={long}&run_id={short}&run_id={idle}&sensor=probe&max_points=100"
    )
    assert body["sensor"] == "probe" and body["display_unit"] == "°C"
    assert [r["run_id"] for r in body["runs"]] == [long, short, idle]
    by_short = body["runs"][1]
    assert by_short["session_started_at"].startswith("2026-03-01T09:00:00")
    assert [p["t"] for p in by_short["points"]] == [2.0, 2.01, 2.02]
    assert [p["value"] for p in by_short["points"]] == [20.0, 21.5, 23.0]
    assert not by_short["downsampled"] and by_short["total"] == 3

    by_long = body["runs"][0]
    assert by_long["downsampled"] and by_long["total"] == 3000
    assert 50 <= len(by_long["points"]) <= 100
    assert max(p["max"] for p in by_long["points"]) == 999.0
    chart = api.get(
        f"/api/v1/telemetry/series?sensor_id={probe[0]}&run_id={long}&max_points=100",
        headers=owner.headers(),
    ).json()
    same = [
        {k: p[k] for k in ("timestamp", "value", "min", "max", "count")} for p in by_long["points"]
    ]
    assert same == chart["points"]
    for p in by_long["points"]:
        at = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
        assert abs(p["t"] - (at - day8).total_seconds()) < 1e-6
    assert 2.0 <= by_long["points"][0]["t"] < by_long["points"][-1]["t"] <= 32.0

    assert body["runs"][2] == {
        "run_id": idle,
        "name": "idle",
        "session_started_at": None,
        "total": 0,
        "downsampled": False,
        "points": [],
    }


def test_what_compare_refuses(api: Api) -> None:
    owner, stranger = api.project(), api.project("other")
    api.sensor(owner, name="probe")
    api.sensor(stranger, name="probe")
    mine = api.run(owner, api.experiment(owner))
    theirs = api.run(stranger, api.experiment(stranger))
    h = owner.headers()
    r = api.get(f"/api/v1/runs/compare?run_id={mine}&run_id={theirs}&sensor=probe", headers=h)
    assert_problem(r, 404)
    r = api.get(f"/api/v1/runs/compare?run_id={mine}&sensor=nosuch", headers=h)
    assert "no sensor named 'nosuch'" in assert_problem(r, 422, "sensor")["detail"]
    assert_problem(api.get("/api/v1/runs/compare?sensor=probe", headers=h), 422, "run_id")
    many = "&".join(f"run_id={mine}" for _ in range(21))
    assert_problem(api.get(f"/api/v1/runs/compare?{many}&sensor=probe", headers=h), 422, "run_id")
    assert api.get(f"/api/v1/runs/compare?run_id={mine}&sensor=probe").status_code == 401


def test_a_window_narrows_every_run_on_either_axis(api: Api) -> None:
    """A zoomed chart asks for its range: in seconds since each run's start (the overlay) or
    in time; each run's series then has max_points for the window alone, peaks kept."""
    owner = api.project()
    probe = api.sensor(
        owner, name="probe", profile={"version": "v1", "kind": "linear", "payload": {"a": 1}}
    )
    exp = api.experiment(owner)
    day1, day8 = datetime(2026, 3, 1, 9, tzinfo=UTC), datetime(2026, 3, 8, 14, 30, tzinfo=UTC)
    ramp = [20.0 + i * 0.1 for i in range(3000)]
    ramp[1234] = 999.0  # at t = 14.34 s
    first = recorded(api, owner, exp, probe, day1, [20.0 + i * 0.1 for i in range(1500)])
    second = recorded(api, owner, exp, probe, day8, ramp)
    idle = api.run(owner, exp, {"name": "idle"})
    runs = f"run_id={first}&run_id={second}&run_id={idle}&sensor=probe&max_points=50"

    body = compare(api, owner, f"{runs}&t_since=14&t_until=15")
    one, two, none = body["runs"]
    assert one["total"] == two["total"] == 100 and none["total"] == 0
    for run in (one, two):
        assert run["downsampled"] and 10 <= len(run["points"]) <= 50
        assert all(14.0 <= p["t"] < 15.0 for p in run["points"])
    assert max(p["max"] for p in two["points"]) == 999.0
    assert max(p["max"] for p in one["points"]) < 200

    # Few enough readings: every one, not buckets.
    body = compare(api, owner, f"{runs}&t_since=3&t_until=3.2")
    assert [round(p["t"], 2) for p in body["runs"][1]["points"]] == [
        round(3 + i / 100, 2) for i in range(20)
    ]

    # In time: only the run recorded then; both axes: a reading in both.
    since = stamp(day8 + timedelta(seconds=10))
    body = compare(api, owner, f"{runs}&since={since}")
    assert [r["total"] for r in body["runs"]] == [0, 2200, 0]
    body = compare(api, owner, f"{runs}&since={since}&t_until=12")
    assert [r["total"] for r in body["runs"]] == [0, 200, 0]
    assert all(10.0 <= p["t"] < 12.0 for p in body["runs"][1]["points"])


def test_what_a_window_refuses(api: Api) -> None:
    owner = api.project()
    api.sensor(owner, name="probe")
    run = api.run(owner, api.experiment(owner))
    h = owner.headers()
    base = f"/api/v1/runs/compare?run_id={run}&sensor=probe"
    for bad, reason in (
        ("nan", "finite number"),
        ("-inf", "finite number"),
        ("-1e12", "greater than or equal to -1000000000"),
        ("soon", "valid number"),
    ):
        problem = assert_problem(api.get(f"{base}&t_until={bad}", headers=h), 422, "t_until")
        assert reason in problem["errors"][0]["reason"], problem
    problem = assert_problem(api.get(f"{base}&until=2026-03-01T09:00:00", headers=h), 422, "until")
    assert "timezone" in problem["errors"][0]["reason"], problem
