"""A sensor's device faults through the API (``POST/GET /api/v1/sensors/{id}/faults``), on
SQLite and PostgreSQL: the sensor's token only, bad bodies refused naming the field, an
episode stored once however often it is sent, journaled once, and evaluated by the sensor's
``fault`` rules (hold time over the episode's span, raised at the fault's time, cleared by
the next reading without a fault)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.cloud.conftest import Api, Identity, assert_problem

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
ONE_TO_ONE = {"version": "v1", "kind": "linear", "payload": {"a": 1.0, "b": 0.0}}


def _stack(api: Api, who: Identity) -> dict[str, str]:
    sensor_id, token = api.sensor(who, profile=ONE_TO_ONE)
    run_id = api.run(who, api.experiment(who))
    session_id = api.session(who, run_id)
    api.backdate(session_id, datetime(2020, 1, 1, tzinfo=UTC))
    return {"sensor_id": sensor_id, "token": token, "run_id": run_id,
            "capture_session_id": session_id}  # fmt: skip


def _episode(ids: dict[str, str], **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "episode_id": str(uuid.uuid4()),
        "run_id": ids["run_id"],
        "capture_session_id": ids["capture_session_id"],
        "kind": "open_circuit",
        "first_timestamp": T0.isoformat(),
        "last_timestamp": (T0 + timedelta(seconds=1)).isoformat(),
        "count": 10,
        "detail": "thermocouple is open (OC fault bit)",
    }
    return {**body, **over}


def _send(api: Api, ids: dict[str, str], body: Any, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or ids['token']}"}
    return api.post(f"/api/v1/sensors/{ids['sensor_id']}/faults", body, headers=headers)


def _alarms(api: Api, who: Identity, run_id: str) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/runs/{run_id}/alarms", headers=who.headers("viewer"))
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["items"]))


def _events(api: Api, who: Identity, run_id: str, kind: str) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/runs/{run_id}/events", headers=who.headers("viewer"))
    assert r.status_code == 200, r.text
    return [e for e in r.json()["items"] if e["kind"] == kind]


def test_only_the_sensors_own_token_sends_its_faults(api: Api) -> None:
    who = api.project()
    ids, other = _stack(api, who), _stack(api, who)
    url = f"/api/v1/sensors/{ids['sensor_id']}/faults"
    # no token, an unknown one: 401 before the body is looked at (this one is not valid)
    assert_problem(api.post(url, {"kind": "?"}), 401)
    assert_problem(api.post(url, {"kind": "?"}, headers={"Authorization": "Bearer bls_x"}), 401)
    assert_problem(_send(api, ids, _episode(ids), token=other["token"]), 403)
    assert _send(api, ids, _episode(ids)).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "Open Circuit"}, "kind"),
        ({"count": 0}, "count"),
        ({"first_timestamp": "2026-03-01T10:00:00"}, "first_timestamp"),  # no zone
        ({"last_timestamp": (T0 - timedelta(seconds=1)).isoformat()}, "last_timestamp"),
        ({"episode_id": "not-a-uuid"}, "episode_id"),
        ({"detail": "x" * 201}, "detail"),
        ({"value": 1.0}, "value"),  # not a field of an episode
        ({"first_timestamp": "2019-12-31T00:00:00Z"}, "first_timestamp"),  # before the session
        ({"last_timestamp": "2099-01-01T00:00:00Z"}, "last_timestamp"),  # in the future
    ],
)
def test_a_bad_episode_is_refused_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    who = api.project()
    ids = _stack(api, who)
    assert_problem(_send(api, ids, _episode(ids, **change)), 422, field)
    r = api.get(f"/api/v1/sensors/{ids['sensor_id']}/faults", headers=who.headers("viewer"))
    assert r.json() == []


def test_an_unknown_run_or_session_is_404_naming_it(api: Api) -> None:
    who = api.project()
    ids = _stack(api, who)
    assert_problem(_send(api, ids, _episode(ids, run_id=str(uuid.uuid4()))), 404, "run_id")
    gone = _episode(ids, capture_session_id=str(uuid.uuid4()))
    assert_problem(_send(api, ids, gone), 404, "capture_session_id")


def test_an_episode_sent_again_is_stored_and_journaled_once(api: Api) -> None:
    who = api.project()
    ids = _stack(api, who)
    body = _episode(ids)
    first = _send(api, ids, body)
    assert first.status_code == 200, first.text
    assert first.json()["stored"] == "new"
    again = _send(api, ids, body)  # a retry after a lost answer
    assert again.status_code == 200 and again.json()["stored"] == "unchanged"
    grown = _episode(ids, episode_id=body["episode_id"], count=30,
                     last_timestamp=(T0 + timedelta(seconds=3)).isoformat())  # fmt: skip
    assert _send(api, ids, grown).json()["stored"] == "grown"
    assert _send(api, ids, body).json()["stored"] == "unchanged"  # an older copy: nothing lost
    listed = api.get(f"/api/v1/sensors/{ids['sensor_id']}/faults", headers=who.headers()).json()
    assert [(e["count"], e["last_timestamp"][:19]) for e in listed] == [(30, "2026-03-01T10:00:03")]
    assert len(_events(api, who, ids["run_id"], "sensor.fault")) == 1
    # the id names that episode: another kind or start under it is refused
    other = _episode(ids, episode_id=body["episode_id"], kind="short_to_gnd")
    assert_problem(_send(api, ids, other), 422, "episode_id")


def test_a_fault_rule_holds_over_the_episode_and_a_reading_clears_it(api: Api) -> None:
    who = api.project()
    ids = _stack(api, who)
    rule = api.post(f"/api/v1/sensors/{ids['sensor_id']}/alarm-rules",
                    {"kind": "fault", "for_s": 2}, headers=who.headers("editor"))  # fmt: skip
    assert rule.status_code == 201, rule.text
    r = api.ingest(ids, [{"timestamp": (T0 - timedelta(seconds=1)).isoformat(), "raw_value": 1}])
    assert r.status_code == 202, r.text
    body = _episode(ids)  # T0 .. T0 + 1 s: shorter than the hold time
    assert _send(api, ids, body).status_code == 200
    assert _alarms(api, who, ids["run_id"]) == []
    grown = _episode(ids, episode_id=body["episode_id"], count=50,
                     last_timestamp=(T0 + timedelta(seconds=5)).isoformat())  # fmt: skip
    assert _send(api, ids, grown).status_code == 200
    assert _send(api, ids, grown).json()["stored"] == "unchanged"  # never raises twice
    (alarm,) = _alarms(api, who, ids["run_id"])
    assert alarm["kind"] == "fault" and alarm["state"] == "raised"
    assert datetime.fromisoformat(alarm["raised_at"]) == T0 + timedelta(seconds=2)
    assert alarm["late"] is True and alarm["value"] is None  # years ago; a fault has no value
    # the probe reads again
    back = T0 + timedelta(seconds=6)
    assert api.ingest(ids, [{"timestamp": back.isoformat(), "raw_value": 20}]).status_code == 202
    (alarm,) = _alarms(api, who, ids["run_id"])
    assert alarm["state"] == "cleared"
    assert datetime.fromisoformat(alarm["cleared_at"]) == back
    kinds = [e["kind"] for e in reversed(api.get(
        f"/api/v1/runs/{ids['run_id']}/events", headers=who.headers()).json()["items"])]  # fmt: skip
    assert [k for k in kinds if k.startswith(("alarm", "sensor.fault"))] == [
        "sensor.fault", "alarm.raised", "alarm.cleared"
    ]  # fmt: skip


def test_a_fault_older_than_what_a_rule_has_seen_raises_nothing(api: Api) -> None:
    who = api.project()
    ids = _stack(api, who)
    api.post(f"/api/v1/sensors/{ids['sensor_id']}/alarm-rules", {"kind": "fault"},
             headers=who.headers("editor"))  # fmt: skip
    later = T0 + timedelta(seconds=10)
    assert api.ingest(ids, [{"timestamp": later.isoformat(), "raw_value": 1}]).status_code == 202
    assert _send(api, ids, _episode(ids)).status_code == 200  # T0..T0+1: out of order
    assert _alarms(api, who, ids["run_id"]) == []
    # stored all the same
    listed = api.get(f"/api/v1/sensors/{ids['sensor_id']}/faults", headers=who.headers()).json()
    assert len(listed) == 1
