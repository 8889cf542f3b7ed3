"""Alarm rules and alarms through the API, on SQLite and PostgreSQL: rules checked per kind,
alarms raised at ingest with hold time and hysteresis, listed, acknowledged, cleared,
journalled; state kept in the database across app restarts and concurrent ingests; a retried
batch never raises twice; ``stale`` by the clock."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pytest_mock import MockerFixture

from cloud.app import create_app
from cloud.container import app_container
from cloud.services import alarm_clock, alarm_evaluation, purge
from cloud.settings import Settings
from tests.cloud.conftest import Api, Identity, assert_problem, make_client

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
ONE_TO_ONE = {"version": "v1", "kind": "linear", "payload": {"a": 1.0, "b": 0.0}}


def _stack(api: Api, who: Identity) -> dict[str, str]:
    """A sensor whose values are its raw values, in a running session of a new run."""
    sensor_id, token = api.sensor(who, profile=ONE_TO_ONE)
    run_id = api.run(who, api.experiment(who))
    session_id = api.session(who, run_id)
    api.backdate(session_id, datetime(2020, 1, 1, tzinfo=UTC))
    return {"sensor_id": sensor_id, "token": token, "run_id": run_id,
            "capture_session_id": session_id}  # fmt: skip


def _readings(
    values: list[float], start: datetime = T0, step_s: float = 1.0, metas: Any = None
) -> list[dict[str, Any]]:
    out = []
    for i, v in enumerate(values):
        r: dict[str, Any] = {
            "timestamp": (start + timedelta(seconds=i * step_s)).isoformat(),
            "raw_value": v,
        }
        if metas is not None and metas[i] is not None:
            r["meta"] = metas[i]
        out.append(r)
    return out


def _rule(api: Api, who: Identity, sensor_id: str, role: str = "editor", **body: Any) -> Any:
    return api.post(f"/api/v1/sensors/{sensor_id}/alarm-rules", body, headers=who.headers(role))


def _alarms(api: Api, who: Identity, run_id: str, **params: Any) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/runs/{run_id}/alarms", params=params, headers=who.headers("viewer"))
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["items"]))  # oldest first


def _send(api: Api, ids: dict[str, str], readings: list[dict[str, Any]], **kw: Any) -> Any:
    r = api.ingest(ids, readings, **kw)
    assert r.status_code == 202, r.text
    return r.json()


def test_rules_are_checked_per_kind_and_kept_by_role(api: Api) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    sensor = ids["sensor_id"]
    bad = [
        ({"kind": "above"}, "threshold"),
        ({"kind": "outside", "low": 5}, "high"),
        ({"kind": "outside", "low": 5, "high": 1}, "high"),
        ({"kind": "outside", "low": 0, "high": 10, "hysteresis": 5}, "hysteresis"),
        ({"kind": "rate", "threshold": 2}, "window_s"),
        ({"kind": "rate", "threshold": -1, "window_s": 5}, "threshold"),
        ({"kind": "stale"}, "after_s"),
        ({"kind": "stale", "after_s": 5, "hysteresis": 1}, "hysteresis"),
        ({"kind": "fault", "threshold": 3}, "threshold"),
        ({"kind": "above", "threshold": 1, "low": 0}, "low"),
        ({"kind": "above", "threshold": 1, "for_s": -1}, "for_s"),
        ({"kind": "sideways", "threshold": 1}, "kind"),
        ({"kind": "above", "threshold": 1, "run_id": str(uuid.uuid4())}, "run_id"),
    ]
    for body, field in bad:
        assert_problem(_rule(api, owner, sensor, **body), 422, field)
    assert_problem(_rule(api, owner, sensor, "viewer", kind="above", threshold=1), 403)
    assert_problem(_rule(api, owner, str(uuid.uuid4()), kind="above", threshold=1), 404)

    key = {"Idempotency-Key": "rule-1"}
    body = {"kind": "above", "threshold": 850, "for_s": 5, "hysteresis": 2}
    r = api.post(f"/api/v1/sensors/{sensor}/alarm-rules", body,
                 headers={**owner.headers("editor"), **key})  # fmt: skip
    assert r.status_code == 201, r.text
    again = api.post(f"/api/v1/sensors/{sensor}/alarm-rules", body,
                     headers={**owner.headers("editor"), **key})  # fmt: skip
    assert again.json()["id"] == r.json()["id"]
    rule = r.json()
    assert rule["threshold"] == 850 and rule["for_s"] == 5 and rule["created_by"] == owner.user_id
    url = f"/api/v1/sensors/{sensor}/alarm-rules/{rule['id']}"

    listed = api.get(f"/api/v1/sensors/{sensor}/alarm-rules", headers=owner.headers("viewer"))
    assert [x["id"] for x in listed.json()["items"]] == [rule["id"]]
    assert_problem(api.patch(url, {"threshold": 900}, headers=owner.headers("viewer")), 403)
    assert_problem(api.patch(url, {"threshold": None}, headers=owner.headers("editor")), 422,
                   "threshold")  # fmt: skip
    r = api.patch(url, {"threshold": 900}, headers=owner.headers("editor"))
    assert r.status_code == 200 and r.json()["threshold"] == 900, r.text
    r = api.request("DELETE", url, headers=owner.headers("editor"))
    assert r.status_code == 204, r.text
    assert_problem(api.get(url, headers=owner.headers()), 404)

    events = api.get("/api/v1/events", params={"limit": 1000},
                     headers=owner.headers()).json()["items"]  # fmt: skip
    kinds = sorted(e["kind"] for e in events if e["kind"].startswith("alarm_rule."))
    assert kinds == ["alarm_rule.created", "alarm_rule.deleted", "alarm_rule.updated"]


def test_above_raises_after_the_hold_clears_past_hysteresis_and_is_acknowledged(api: Api) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    r = _rule(api, owner, ids["sensor_id"], kind="above", threshold=850, for_s=5, hysteresis=2)
    assert r.status_code == 201, r.text
    rule = r.json()
    # 849 at 3 s breaks the hold; 4..9 s holds 5 s: raised at 9 s with 856.
    _send(api, ids, _readings([851, 852, 853, 849, 851, 852, 853]))
    assert _alarms(api, owner, ids["run_id"]) == []
    _send(api, ids, _readings([854, 855, 856, 849], start=T0 + timedelta(seconds=7)))
    [alarm] = _alarms(api, owner, ids["run_id"])
    assert alarm["state"] == "raised" and alarm["value"] == 856
    assert alarm["raised_at"] == "2026-03-01T10:00:09Z" and alarm["late"] is True
    assert alarm["rule"]["threshold"] == 850 and alarm["rule_id"] == rule["id"]
    assert alarm["sensor_id"] == ids["sensor_id"] and alarm["cleared_at"] is None
    project_wide = api.get("/api/v1/alarms", params={"state": "raised"}, headers=owner.headers())
    assert [a["id"] for a in project_wide.json()["items"]] == [alarm["id"]]

    ack = f"/api/v1/alarms/{alarm['id']}/ack"
    assert_problem(api.post(ack, {"note": "x"}, headers=owner.headers("viewer")), 403)
    r = api.post(ack, {"note": "door open, known"}, headers=owner.headers("editor"))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "acknowledged" and r.json()["ack_note"] == "door open, known"
    assert r.json()["acknowledged_by"] == f"user:{owner.user_id}"
    assert_problem(api.post(ack, {"note": "again"}, headers=owner.headers("editor")), 422)

    # 848.5 is within the hysteresis (not below 848): still acknowledged; 847 clears.
    _send(api, ids, _readings([848.5, 847], start=T0 + timedelta(seconds=11)))
    [alarm] = _alarms(api, owner, ids["run_id"])
    assert alarm["state"] == "cleared" and alarm["cleared_at"] == "2026-03-01T10:00:12Z"
    assert alarm["acknowledged_at"] is not None and alarm["cleared_value"] == 847
    assert _alarms(api, owner, ids["run_id"], state="raised") == []

    events = api.get(f"/api/v1/runs/{ids['run_id']}/events", headers=owner.headers()).json()
    kinds = [e["kind"] for e in events["items"] if e["kind"].startswith("alarm.")]
    assert sorted(kinds) == ["alarm.acknowledged", "alarm.cleared", "alarm.raised"]
    # The rule's updated_at is when someone changed it: its readings, holds and alarms
    # leave it as it was; a PATCH moves it.
    rule_url = f"/api/v1/sensors/{ids['sensor_id']}/alarm-rules/{rule['id']}"
    assert api.get(rule_url, headers=owner.headers()).json()["updated_at"] == rule["updated_at"]
    patched = api.patch(rule_url, {"threshold": 860}, headers=owner.headers("editor"))
    assert patched.status_code == 200, patched.text
    assert patched.json()["updated_at"] > rule["updated_at"]


def _transitions(api: Api) -> dict[tuple[str, str], float]:
    """``benchlink_alarm_transitions_total`` on /metrics, by (kind, transition)."""
    out = {}
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("benchlink_alarm_transitions_total{"):
            labels, value = line.rsplit(" ", 1)
            got = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            out[(got["kind"], got["transition"])] = float(value)
    return out


def test_each_transition_is_counted_on_metrics(api: Api) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    assert _rule(api, owner, ids["sensor_id"], kind="above", threshold=5).status_code == 201
    assert _rule(api, owner, ids["sensor_id"], kind="fault").status_code == 201
    assert _transitions(api) == {}
    _send(api, ids, _readings([6, 7]))
    [alarm] = _alarms(api, owner, ids["run_id"])
    r = api.post(f"/api/v1/alarms/{alarm['id']}/ack", {"note": "seen"}, headers=owner.headers())
    assert r.status_code == 200, r.text
    fault = [{"fault": "open_circuit"}]
    _send(api, ids, _readings([1], start=T0 + timedelta(seconds=2), metas=fault))
    assert _transitions(api) == {
        ("above", "raised"): 1,
        ("above", "acknowledged"): 1,
        ("above", "cleared"): 1,
        ("fault", "raised"): 1,
    }


def test_cleared_then_acknowledged_and_a_live_reading_is_not_late(api: Api) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    assert _rule(api, owner, ids["sensor_id"], kind="below", threshold=10).status_code == 201
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    _send(api, ids, _readings([12, 9, 11], start=now))
    [alarm] = _alarms(api, owner, ids["run_id"])
    assert alarm["state"] == "cleared" and alarm["late"] is False and alarm["value"] == 9
    r = api.post(f"/api/v1/alarms/{alarm['id']}/ack", {"note": "seen"}, headers=owner.headers())
    assert r.status_code == 200 and r.json()["state"] == "cleared", r.text
    assert r.json()["acknowledged_at"] is not None


def test_a_retried_batch_does_not_raise_twice(api: Api) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    assert _rule(api, owner, ids["sensor_id"], kind="above", threshold=5).status_code == 201
    batch = _readings([1, 6, 1, 7])
    _send(api, ids, batch, key="b-1")
    assert _send(api, ids, batch, key="b-1")["accepted"] == 4  # the same answer, replayed
    assert _send(api, ids, batch, key="b-2")["duplicate"] == 4  # the same readings again
    assert _send(api, ids, batch)["duplicate"] == 4
    alarms = _alarms(api, owner, ids["run_id"])
    assert [(a["raised_at"], a["cleared_at"]) for a in alarms] == [
        ("2026-03-01T10:00:01Z", "2026-03-01T10:00:02Z"),
        ("2026-03-01T10:00:03Z", None),
    ]


def test_state_survives_a_restart_and_out_of_order_readings_are_not_evaluated(
    database_url: str,
) -> None:
    with make_client(database_url) as client:
        api = Api(client)
        owner = api.project()
        ids = _stack(api, owner)
        r = _rule(api, owner, ids["sensor_id"], kind="outside", low=0, high=100, for_s=2)
        assert r.status_code == 201, r.text
        _send(api, ids, _readings([50, 101, 102]))  # holding since 1 s, for 1 s so far
        assert _alarms(api, owner, ids["run_id"]) == []
    with make_client(database_url) as client:  # another process: the hold goes on
        api = Api(client)
        _send(api, ids, _readings([-1], start=T0 + timedelta(seconds=3)))
        [alarm] = _alarms(api, owner, ids["run_id"])
        assert alarm["raised_at"] == "2026-03-01T10:00:03Z" and alarm["value"] == -1
        # Older than the newest evaluated: stored, not evaluated (it would clear).
        r = _send(api, ids, _readings([50], start=T0 + timedelta(seconds=2, milliseconds=500)))
        assert r["accepted"] == 1
        [alarm] = _alarms(api, owner, ids["run_id"])
        assert alarm["cleared_at"] is None
        _send(api, ids, _readings([50], start=T0 + timedelta(seconds=4)))
        [alarm] = _alarms(api, owner, ids["run_id"])
        assert alarm["cleared_at"] == "2026-03-01T10:00:04Z"


def test_rate_uses_the_readings_stored_before_the_batch_and_fault_reads_the_meta(
    api: Api,
) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    sensor = ids["sensor_id"]
    assert _rule(api, owner, sensor, kind="rate", threshold=5, window_s=2).status_code == 201
    assert _rule(api, owner, sensor, kind="fault").status_code == 201
    _send(api, ids, _readings([0, 1, 2]))
    # 2 -> 14 over 2 s (10 C in the window from 1 s): 6.5 C/s at 3 s, raised there.
    _send(api, ids, _readings([14, 15], start=T0 + timedelta(seconds=3)))
    _send(api, ids, _readings([15, 15, 15], start=T0 + timedelta(seconds=5),
                              metas=[None, {"fault": "open_circuit"}, {}]))  # fmt: skip
    alarms = _alarms(api, owner, ids["run_id"])
    got = [(a["kind"], a["raised_at"], a["cleared_at"]) for a in alarms]
    assert got == [
        ("rate", "2026-03-01T10:00:03Z", "2026-03-01T10:00:05Z"),
        ("fault", "2026-03-01T10:00:06Z", "2026-03-01T10:00:07Z"),
    ]


def test_a_run_rule_overrides_the_sensor_rule_of_its_kind(api: Api) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    sensor = ids["sensor_id"]
    assert _rule(api, owner, sensor, kind="above", threshold=10).status_code == 201
    r = _rule(api, owner, sensor, kind="above", threshold=20, run_id=ids["run_id"])
    assert r.status_code == 201, r.text
    _send(api, ids, _readings([15, 25]))
    [alarm] = _alarms(api, owner, ids["run_id"])
    assert alarm["rule_id"] == r.json()["id"] and alarm["value"] == 25


def test_a_purged_runs_open_alarm_leaves_the_sensor_rule_free_to_raise_again(
    database_url: str,
) -> None:
    """The evaluator takes a rule with an open alarm id for an open alarm: a purge that
    takes that alarm away must take the id away too."""
    with make_client(database_url, delete_grace_s=3600) as client:
        api = Api(client)
        owner = api.project()
        first = _stack(api, owner)
        assert _rule(api, owner, first["sensor_id"], kind="above", threshold=5).status_code == 201
        _send(api, first, _readings([6]))
        assert [a["state"] for a in _alarms(api, owner, first["run_id"])] == ["raised"]
        run, session = first["run_id"], first["capture_session_id"]
        r = api.post(f"/api/v1/runs/{run}/capture-sessions/{session}/stop", {},
                     headers=owner.headers())  # fmt: skip
        assert r.status_code == 200, r.text
        r = api.request("DELETE", f"/api/v1/runs/{run}", headers=owner.headers())
        assert r.status_code == 200, r.text
        later = datetime.now(UTC) + timedelta(seconds=3601)
        assert purge.purge_expired(
            app_container(client.app).sessionmaker, timedelta(hours=1), now=later
        )

        second = {**first, "run_id": api.run(owner, api.experiment(owner))}
        second["capture_session_id"] = api.session(owner, second["run_id"])
        api.backdate(second["capture_session_id"], datetime(2020, 1, 1, tzinfo=UTC))
        _send(api, second, _readings([7], start=T0 + timedelta(seconds=10)))
        [alarm] = _alarms(api, owner, second["run_id"])
        assert alarm["state"] == "raised" and alarm["value"] == 7


def test_stale_by_the_clock_and_cleared_by_the_next_reading(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))
    # The app's own periodic evaluation (by the real clock) stays out of the way of the
    # evaluations at the instants this test chooses.
    app_container(app).stale_every_s = 3600
    with TestClient(app) as client:
        _stale_by_the_clock(Api(client))


def _stale_by_the_clock(api: Api) -> None:
    """Silence is judged by arrival on the cloud's clock: readings stamped in March that
    arrive now are not silence now."""
    owner = api.project()
    ids = _stack(api, owner)
    rule = _rule(api, owner, ids["sensor_id"], kind="stale", after_s=30)
    assert rule.status_code == 201, rule.text
    services = api.services
    now = datetime.now(UTC)
    assert (
        alarm_clock.tick(services, now + timedelta(minutes=5)) == []
    )  # no reading yet: not watched
    before = datetime.now(UTC)
    _send(api, ids, _readings([1, 2]))  # stamped at T0, months ago: a backlog arriving
    after = datetime.now(UTC)
    ms = timedelta(milliseconds=1)
    assert (
        alarm_clock.tick(services, before + timedelta(seconds=30) - ms) == []
    )  # < 30 s of silence
    [msg] = alarm_clock.tick(services, after + timedelta(seconds=30) + ms)
    assert msg["type"] == "alarm.raised" and msg["kind"] == "stale"
    assert alarm_clock.tick(services, after + timedelta(minutes=9)) == []  # raised once
    rules = api.get(f"/api/v1/sensors/{ids['sensor_id']}/alarm-rules", headers=owner.headers())
    assert [r["updated_at"] for r in rules.json()["items"]] == [rule.json()["updated_at"]]
    [alarm] = _alarms(api, owner, ids["run_id"])
    raised = datetime.fromisoformat(alarm["raised_at"])
    assert before + timedelta(seconds=29) < raised <= after + timedelta(seconds=30)
    assert alarm["value"] is None
    _send(api, ids, _readings([3], start=T0 + timedelta(minutes=2)))
    [alarm] = _alarms(api, owner, ids["run_id"])
    assert alarm["state"] == "cleared"
    assert datetime.fromisoformat(alarm["cleared_at"]) >= after  # when the reading arrived
    # A stopped session is not watched.
    stop = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}/stop"
    r = api.post(stop, None, headers=owner.headers())
    assert r.status_code in (200, 201), r.text
    assert alarm_clock.tick(services, after + timedelta(hours=1)) == []


def test_concurrent_ingests_of_one_sensor_raise_one_alarm(database_url: str) -> None:
    """Two apps on one database (two workers), batches of one sensor sent at once from
    several threads: the rule's row lock lets one evaluation see the other's alarm."""
    with make_client(database_url) as a, make_client(database_url) as b:
        api_a, api_b = Api(a), Api(b)
        owner = api_a.project()
        ids = _stack(api_a, owner)
        assert _rule(api_a, owner, ids["sensor_id"], kind="above", threshold=0).status_code == 201
        errors: list[str] = []

        def send(api: Api, k: int) -> None:
            start = T0 + timedelta(seconds=10 * k)
            r = api.ingest(ids, _readings([5, 6, 7], start=start))
            if r.status_code != 202:
                errors.append(r.text)

        threads = [threading.Thread(target=send, args=((api_a, api_b)[k % 2], k))
                   for k in range(8)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        alarms = _alarms(api_a, owner, ids["run_id"])
        assert len(alarms) == 1 and alarms[0]["state"] == "raised"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_rate_sees_the_batch_it_waited_for(database_url: str, mocker: MockerFixture) -> None:
    """A batch that waited for the rule's lock while another batch of its sensor was
    evaluated sees that batch's readings in its rate window: the window is read after the
    lock, never from a snapshot older than it (the claim statement, which reads the window
    with the lock when it can, took its snapshot before waiting: the window is read again)."""
    with make_client(database_url) as a, make_client(database_url) as b:
        api_a, api_b = Api(a), Api(b)
        owner = api_a.project()
        ids = _stack(api_a, owner)
        r = _rule(api_a, owner, ids["sensor_id"], kind="rate", threshold=5, window_s=2)
        assert r.status_code == 201, r.text
        _send(api_a, ids, _readings([0]))
        # The second batch in another run: nothing else of the first's (the summaries of
        # one session) makes it wait before the rule's lock.
        run = api_a.run(owner, api_a.experiment(owner))
        other = {**ids, "run_id": run, "capture_session_id": api_a.session(owner, run)}
        api_a.backdate(other["capture_session_id"], datetime(2020, 1, 1, tzinfo=UTC))
        # The first stops between its claim and its commit, holding the rule's row.
        claimed, go_on = threading.Event(), threading.Event()
        evaluate_rule = alarm_evaluation._evaluate_rule

        def held(*args: Any) -> Any:
            if not claimed.is_set():  # the first batch only
                claimed.set()
                assert go_on.wait(30)
            return evaluate_rule(*args)

        mocker.patch.object(alarm_evaluation, "_evaluate_rule", side_effect=held)
        answers: list[Any] = []

        def send(api: Api, to: dict[str, str], value: float, at_s: float) -> None:
            answers.append(api.ingest(to, _readings([value], start=T0 + timedelta(seconds=at_s))))

        first = threading.Thread(target=send, args=(api_a, ids, 0, 2.5))
        first.start()
        assert claimed.wait(30)
        # 0 at 2.5 s, then 10 at 3 s: 20 C/s over the window from 1 s. Without the reading
        # at 2.5 s the window holds none and there is no rate.
        second = threading.Thread(target=send, args=(api_b, other, 10, 3))
        second.start()
        _wait_for_a_lock_wait(database_url)
        go_on.set()
        first.join(30)
        second.join(30)
        assert [x.status_code for x in answers] == [202, 202], [x.text for x in answers]
        [alarm] = _alarms(api_a, owner, run)
        assert alarm["kind"] == "rate" and alarm["raised_at"] == "2026-03-01T10:00:03Z"
        assert alarm["value"] == 10


def _wait_for_a_lock_wait(database_url: str) -> None:
    """Until a session of the database waits for a row lock (its statement has begun)."""
    deadline = time.monotonic() + 30
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0]:
                return
            assert time.monotonic() < deadline, "the second batch never waited for the rule"
            time.sleep(0.02)


@pytest.mark.parametrize("state", ["raised", "nonsense"])
def test_project_list_pages_and_refuses_an_unknown_state(api: Api, state: str) -> None:
    owner = api.project()
    ids = _stack(api, owner)
    assert _rule(api, owner, ids["sensor_id"], kind="above", threshold=5).status_code == 201
    _send(api, ids, _readings([6, 1, 7, 1, 8]))
    if state == "nonsense":
        assert_problem(api.get("/api/v1/alarms", params={"state": state},
                               headers=owner.headers()), 422, "state")  # fmt: skip
        return
    seen, cursor = [], None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/alarms", params=params, headers=owner.headers()).json()
        seen += [a["value"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [8, 7, 6]
    raised = api.get("/api/v1/alarms", params={"state": state}, headers=owner.headers()).json()
    assert [a["value"] for a in raised["items"]] == [8]


def test_the_app_evaluates_stale_rules_by_itself(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))
    app_container(app).stale_every_s = 0.05
    with TestClient(app) as client:
        api = Api(client)
        owner = api.project()
        ids = _stack(api, owner)
        assert _rule(api, owner, ids["sensor_id"], kind="stale", after_s=1).status_code == 201
        _send(api, ids, _readings([1], start=datetime.now(UTC) - timedelta(seconds=2)))
        deadline = datetime.now(UTC) + timedelta(seconds=60)  # a loaded machine: no speed claim
        while not (found := _alarms(api, owner, ids["run_id"])):
            assert datetime.now(UTC) < deadline, "the periodic task raised nothing"
            threading.Event().wait(0.05)
        assert found[0]["kind"] == "stale" and found[0]["state"] == "raised"


def test_a_unit_change_waits_for_the_rules_set_in_the_old_unit(api: Api) -> None:
    """A rule's threshold is a number in the sensor's unit: while rules exist, the unit does
    not change under them (409 naming display_unit); without rules it does."""
    owner = api.project()
    ids = _stack(api, owner)
    sensor = ids["sensor_id"]
    r = _rule(api, owner, sensor, kind="above", threshold=850)
    assert r.status_code == 201, r.text
    url = f"/api/v1/sensors/{sensor}"
    assert_problem(api.patch(url, {"display_unit": "degF"}, headers=owner.headers()), 409,
                   "display_unit")  # fmt: skip
    profile = {"version": "v9", "kind": "linear", "payload": {"a": 1.0, "b": 0.0},
               "display_unit": "degF"}  # fmt: skip
    r = api.put(f"{url}/conversion-profile", profile, headers=owner.headers())
    assert_problem(r, 409, "display_unit")
    # The same unit is no change: a new version goes through.
    r = api.put(
        f"{url}/conversion-profile", {**profile, "display_unit": None}, headers=owner.headers()
    )
    assert r.status_code == 200, r.text
    rule_id = api.get(f"{url}/alarm-rules", headers=owner.headers()).json()["items"][0]["id"]
    r = api.request("DELETE", f"{url}/alarm-rules/{rule_id}", headers=owner.headers())
    assert r.status_code == 204
    r = api.patch(url, {"display_unit": "degF"}, headers=owner.headers())
    assert r.status_code == 200, r.text
