"""Fleet health rules (cloud/health.py): each condition starts and ends with a journal event,
is counted on the Prometheus gauge and shown on the edge; the silence rules by the cloud's
clock (injected here: no waiting), the others when a heartbeat is stored (on SQLite and
PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.fleet import HeartbeatSink
from cloud.health import Evaluator
from tests.cloud.conftest import Api, Identity, assert_problem
from tests.cloud.test_edges import beat, put_beat, register


class Clock:
    """The cloud's clock for the health rules: real time plus a shift the test sets."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


@pytest.fixture
def clock(api: Api) -> Clock:
    clock = Clock()
    api.services.health.now = clock
    return clock


@pytest.fixture
def sink(api: Api) -> HeartbeatSink:
    """A sink without the app's flush task, wired to the app's evaluator: the test says when
    heartbeats are stored."""
    services = api.services
    sink = services.heartbeats = HeartbeatSink(services.sessionmaker)
    sink.after_store.append(services.health.after_store)
    services.health.pending = lambda: sink.pending
    return sink


def health_events(api: Api, who: Identity) -> list[dict[str, Any]]:
    items = api.get("/api/v1/events", params={"limit": 500}, headers=who.headers()).json()
    return [e for e in reversed(items["items"]) if e["kind"].startswith("edge.health_")]


def conditions(api: Api, who: Identity, edge_id: str) -> set[tuple[str, str | None]]:
    got = api.get(f"/api/v1/edges/{edge_id}", headers=who.headers()).json()
    return {(c["rule"], c["sensor_id"]) for c in got["health"]}


def gauge(api: Api, rule: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f'benchlink_edge_health{{rule="{rule}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no gauge for {rule}")


def test_heartbeat_rules_start_and_end_with_events(
    api: Api, owner: Identity, clock: Clock, sink: HeartbeatSink
) -> None:
    edge_id, token = register(api, owner)
    sick = beat(edge_id)
    sid = next(iter(sick["sensors"]))
    sick["buffer"]["used_bytes"] = 1700  # 85 % of 2000
    sick["clock"]["offset_ms"] = -900.0  # past max_offset_ms 500
    sick["sensors"][sid]["oldest_waiting_age_s"] = 3700.0  # over an hour
    assert put_beat(api, edge_id, token, sick).status_code == 200
    sink.flush()
    assert conditions(api, owner, edge_id) == {
        ("buffer_full", None),
        ("clock_offset", None),
        ("backlog_old", sid),
    }
    started = health_events(api, owner)
    assert {(e["kind"], e["payload"]["rule"]) for e in started} == {
        ("edge.health_started", "buffer_full"),
        ("edge.health_started", "clock_offset"),
        ("edge.health_started", "backlog_old"),
    }
    by_rule = {e["payload"]["rule"]: e for e in started}
    assert by_rule["clock_offset"]["payload"]["value"] == 900.0
    assert by_rule["clock_offset"]["payload"]["limit"] == 500.0
    assert by_rule["buffer_full"]["payload"]["value"] == 0.85
    assert by_rule["backlog_old"]["sensor_id"] == sid
    assert by_rule["backlog_old"]["payload"]["edge_id"] == edge_id
    assert gauge(api, "buffer_full") == 1 and gauge(api, "edge_silent") == 0

    # The same again: nothing new starts.
    assert put_beat(api, edge_id, token, sick).status_code == 200
    sink.flush()
    assert len(health_events(api, owner)) == 3
    # The periodic round agrees with what the heartbeat gave: nothing changes either.
    assert api.services.health.round() == 0

    # A healthy heartbeat ends them, each with its event.
    assert put_beat(api, edge_id, token, beat(edge_id)).status_code == 200
    sink.flush()
    assert conditions(api, owner, edge_id) == set()
    ended = [e for e in health_events(api, owner) if e["kind"] == "edge.health_ended"]
    assert {e["payload"]["rule"] for e in ended} == {"buffer_full", "clock_offset", "backlog_old"}
    assert all(e["payload"]["since"] for e in ended)
    assert gauge(api, "buffer_full") == 0


def test_silence_rules_by_the_clock(
    api: Api, owner: Identity, clock: Clock, sink: HeartbeatSink
) -> None:
    edge_id, token = register(api, owner)
    ids = api.stack(owner)
    sid = ids["sensor_id"]
    r = api.patch(f"/api/v1/sensors/{sid}", {"expected_interval_s": 2}, headers=owner.headers())
    assert r.status_code == 200, r.text
    body = beat(edge_id, heartbeat_s=10)
    body["sensors"] = {sid: {**next(iter(body["sensors"].values())), "last_reading_age_s": 1.0}}
    assert put_beat(api, edge_id, token, body).status_code == 200
    sink.flush()
    evaluator = api.services.health

    clock.shift = timedelta(seconds=15)  # the sensor: 16 s without a reading, under 10 x 2 s
    assert evaluator.round() == 0
    clock.shift = timedelta(seconds=25)  # 26 s: silent; the edge (25 s < 3 x 10 s) is not
    assert evaluator.round() == 1
    assert conditions(api, owner, edge_id) == {("sensor_silent", sid)}
    clock.shift = timedelta(seconds=40)
    assert evaluator.round() == 1
    assert conditions(api, owner, edge_id) == {("sensor_silent", sid), ("edge_silent", None)}
    assert gauge(api, "edge_silent") == 1 and gauge(api, "sensor_silent") == 1
    silent = [e for e in health_events(api, owner) if e["payload"]["rule"] == "edge_silent"]
    assert [e["kind"] for e in silent] == ["edge.health_started"]
    assert silent[0]["payload"]["value"] >= 40 and silent[0]["payload"]["limit"] == 30

    # The edge is back: its heartbeat ends its silence at once; the sensor's reading age
    # (1 s) ends the sensor's at the next round.
    clock.shift = timedelta(0)
    assert put_beat(api, edge_id, token, body).status_code == 200
    sink.flush()
    assert conditions(api, owner, edge_id) == {("sensor_silent", sid)}
    assert evaluator.round() == 1
    assert conditions(api, owner, edge_id) == set()
    kinds = [(e["kind"], e["payload"]["rule"]) for e in health_events(api, owner)]
    assert kinds == [
        ("edge.health_started", "sensor_silent"),
        ("edge.health_started", "edge_silent"),
        ("edge.health_ended", "edge_silent"),
        ("edge.health_ended", "sensor_silent"),
    ]


def test_a_heartbeat_not_yet_stored_counts_for_the_round(
    api: Api, owner: Identity, clock: Clock, sink: HeartbeatSink
) -> None:
    """Silence is judged on the heartbeats this process holds too (read your writes)."""
    edge_id, token = register(api, owner)
    put_beat(api, edge_id, token, beat(edge_id, heartbeat_s=1))
    sink.flush()
    clock.shift = timedelta(seconds=2)
    put_beat(api, edge_id, token, beat(edge_id, heartbeat_s=1))  # held, not stored
    clock.shift = timedelta(seconds=2.5)  # 2.5 s after the held one: under 3 x 1 s
    assert api.services.health.round() == 0


def test_two_processes_record_each_start_once(
    api: Api, owner: Identity, clock: Clock, sink: HeartbeatSink
) -> None:
    """Two API processes' periodic rounds at the same moment: one event per condition."""
    edge_ids = []
    for n in range(5):
        edge_id, token = register(api, owner, f"bench-{n}")
        put_beat(api, edge_id, token, beat(edge_id, heartbeat_s=1))
        edge_ids.append(edge_id)
    sink.flush()
    later = Clock()
    later.shift = timedelta(seconds=60)
    sessions = api.services.sessionmaker
    evaluators = [Evaluator(sessions, now=later) for _ in range(2)]
    start = threading.Barrier(2)
    done: list[int] = []

    def run(e: Evaluator) -> None:
        start.wait()
        done.append(e.round())

    threads = [threading.Thread(target=run, args=(e,)) for e in evaluators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A round skipped for the other's lock left nothing undone: another one has no work.
    assert sum(done) == 5 and evaluators[0].round() == 0
    started = [e for e in health_events(api, owner) if e["kind"] == "edge.health_started"]
    assert sorted(e["payload"]["edge_id"] for e in started) == sorted(edge_ids)


def test_expected_interval_is_validated_and_clearable(api: Api, owner: Identity) -> None:
    ids = api.stack(owner)
    url = f"/api/v1/sensors/{ids['sensor_id']}"
    for bad in (0, -1, "often", 8 * 86400):
        r = api.patch(url, {"expected_interval_s": bad}, headers=owner.headers())
        assert_problem(r, 422, "expected_interval_s")
    r = api.patch(url, {"expected_interval_s": 0.5}, headers=owner.headers())
    assert r.status_code == 200 and r.json()["expected_interval_s"] == 0.5
    r = api.patch(url, {"name": "renamed"}, headers=owner.headers())
    assert r.json()["expected_interval_s"] == 0.5  # other changes leave it
    r = api.patch(url, {"expected_interval_s": None}, headers=owner.headers())
    assert r.status_code == 200 and r.json()["expected_interval_s"] is None
    new = {
        "name": "with-interval",
        "type": "t",
        "input_unit": "mV",
        "display_unit": "mV",
        "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1, "b": 0}},
        "expected_interval_s": 10,
    }
    created = api.post("/api/v1/sensors", new, headers=owner.headers())
    assert created.status_code == 201, created.text
    assert created.json()["sensor"]["expected_interval_s"] == 10
    bad = {**new, "name": "bad-interval", "expected_interval_s": 0}
    assert_problem(
        api.post("/api/v1/sensors", bad, headers=owner.headers()), 422, "expected_interval_s"
    )


def test_a_buffer_refusing_for_a_full_disk_is_buffer_full(
    api: Api, owner: Identity, clock: Clock, sink: HeartbeatSink
) -> None:
    """The disk at its reserve refuses readings with the buffer far under its budget: the
    rule says so (the share alone, 10 %, would not)."""
    edge_id, token = register(api, owner)
    disk = beat(edge_id)
    disk["buffer"].update(used_bytes=200, full="disk", disk_room_bytes=0, min_free_bytes=10**8)
    assert put_beat(api, edge_id, token, disk).status_code == 200
    sink.flush()
    assert conditions(api, owner, edge_id) == {("buffer_full", None)}
    assert put_beat(api, edge_id, token, beat(edge_id)).status_code == 200
    sink.flush()
    assert conditions(api, owner, edge_id) == set()
