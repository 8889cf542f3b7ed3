"""Completeness: edge sequence ranges on the wire, kept per batch in the batch's transaction,
and GET .../completeness answering captured, arrived, waiting, dead-lettered, unaccounted and
the gaps (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from cloud.db.models import TelemetryReading, TelemetrySeqRange
from tests.cloud.conftest import FORM, Api, Identity, assert_problem
from tests.cloud.test_edges import beat, put_beat, register

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
EPOCH = str(uuid.uuid4())


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


def readings(first: int, n: int) -> list[dict[str, Any]]:
    """Reading number k at T0 + k ms (its timestamp says its number)."""
    return [
        {"timestamp": (T0 + timedelta(milliseconds=k)).isoformat(), "raw_value": float(k)}
        for k in range(first, first + n)
    ]


def send(
    api: Api,
    ids: dict[str, str],
    ranges: list[list[int]] | None,
    rows: list[dict[str, Any]],
    key: str | None = None,
    epoch: str = EPOCH,
) -> Any:
    body: dict[str, Any] = {
        "sensor_id": ids["sensor_id"],
        "run_id": ids["run_id"],
        "capture_session_id": ids["capture_session_id"],
        "readings": rows,
    }
    if ranges is not None:
        body["seq"] = {"epoch": epoch, "ranges": ranges}
    headers = {"Authorization": f"Bearer {ids['token']}", **FORM}
    if key:
        headers["Idempotency-Key"] = key
    return api.c.post("/api/v1/telemetry", content=json.dumps(body), headers=headers)


def completeness(api: Api, who: Identity, session_id: str, role: str = "viewer") -> Any:
    r = api.get(
        f"/api/v1/capture-sessions/{session_id}/completeness", headers=who.headers(role=role)
    )
    assert r.status_code == 200, r.text
    return r.json()


def report(api: Api, who: Identity, ids: dict[str, str], seq: dict[str, Any]) -> None:
    """An edge heartbeat whose sensor reports ``seq`` (common.heartbeat.SequenceReport)."""
    edge_id, token = register(api, who, name=f"bench-{uuid.uuid4().hex[:6]}")
    body = beat(edge_id)
    (state,) = body["sensors"].values()
    state.update(run_id=ids["run_id"], capture_session_id=ids["capture_session_id"])
    state["sequence"] = {"epoch": EPOCH, **seq}
    body["sensors"] = {ids["sensor_id"]: state}
    r = put_beat(api, edge_id, token, body)
    assert r.status_code == 200, r.text


def session_of(ids: dict[str, str], first: int, last: int) -> dict[str, Any]:
    return {
        "run_id": ids["run_id"],
        "capture_session_id": ids["capture_session_id"],
        "first": first,
        "last": last,
    }


def test_an_edge_report_accounts_for_every_reading(api: Api, owner: Identity) -> None:
    ids = api.stack(owner)
    assert send(api, ids, [[1, 100]], readings(1, 100), key="b1").status_code == 202
    assert send(api, ids, [[101, 150]], readings(101, 50), key="b2").status_code == 202
    # 1..200 captured: 151..180 waiting at the edge, 181..190 dead-lettered, 191..200 lost
    report(
        api,
        owner,
        ids,
        {
            "captured_upto": 200,
            "sessions": [session_of(ids, 1, 200)],
            "waiting": [[151, 180]],
            "dead": [{"first": 181, "last": 190, "reason": "422: sensor unknown"}],
        },
    )
    got = completeness(api, owner, ids["capture_session_id"])
    assert {k: got[k] for k in ("captured", "arrived", "waiting", "dead_lettered")} == {
        "captured": 200,
        "arrived": 150,
        "waiting": 30,
        "dead_lettered": 10,
    }
    assert got["dead_lettered_by_reason"] == {"422: sensor unknown": 10}
    assert got["unaccounted"] == 10 and got["edge_accounting"] == "full"
    (gap,) = got["gaps"]
    assert (gap["first"], gap["last"], gap["count"]) == (191, 200, 10)
    assert gap["sensor_id"] == ids["sensor_id"] and gap["epoch"] == EPOCH
    (sensor,) = got["sensors"]
    assert sensor["edge_report"] is True and sensor["unaccounted"] == 10

    # the waiting ones arrive, the lost ones too (a late replay): nothing unaccounted
    assert send(api, ids, [[151, 180]], readings(151, 30), key="b3").status_code == 202
    assert send(api, ids, [[191, 200]], readings(191, 10), key="b4").status_code == 202
    got = completeness(api, owner, ids["capture_session_id"])
    assert (got["arrived"], got["waiting"], got["unaccounted"], got["gaps"]) == (190, 0, 0, [])
    assert got["dead_lettered"] == 10


def test_dead_ranges_a_cut_report_left_out_count_as_unaccounted_and_say_so(
    api: Api, owner: Identity
) -> None:
    """An edge whose heartbeat was cut to its size limit lists only its newest dead ranges:
    the older ones' readings count as unaccounted (never a loss hidden), and the answer says
    how many the report left out."""
    ids = api.stack(owner)
    assert send(api, ids, [[1, 10]], readings(1, 10), key="k").status_code == 202
    report(
        api,
        owner,
        ids,
        {
            "captured_upto": 30,
            "sessions": [session_of(ids, 1, 30)],
            "dead": [{"first": 21, "last": 30, "reason": "422 refused"}],
            "left_out": {"sessions": 0, "dead": 1, "dead_readings": 10},  # 11..20
        },
    )
    got = completeness(api, owner, ids["capture_session_id"])
    assert (got["captured"], got["arrived"], got["dead_lettered"]) == (30, 10, 10)
    assert got["unaccounted"] == 10
    assert [(g["first"], g["last"]) for g in got["gaps"]] == [(11, 20)]
    (sensor,) = got["sensors"]
    assert sensor["dead_lettered_not_reported"] == 10
    assert "left out 10 dead-lettered readings" in got["note"]


def test_rows_deleted_by_hand_show_as_exactly_that_gap(api: Api, owner: Identity) -> None:
    ids = api.stack(owner)
    assert send(api, ids, [[1, 100]], readings(1, 100), key="a").status_code == 202
    assert send(api, ids, [[101, 200]], readings(101, 100), key="b").status_code == 202
    report(api, owner, ids, {"captured_upto": 200, "sessions": [session_of(ids, 1, 200)]})
    assert completeness(api, owner, ids["capture_session_id"])["unaccounted"] == 0
    # someone deletes readings 120..129 of the second batch in the database
    gone = [T0 + timedelta(milliseconds=k) for k in range(120, 130)]
    with api.services.sessionmaker.begin() as db:
        n = db.execute(delete(TelemetryReading).where(TelemetryReading.ts.in_(gone))).rowcount
    assert n == 10
    got = completeness(api, owner, ids["capture_session_id"])
    assert (got["captured"], got["arrived"], got["unaccounted"]) == (200, 190, 10)
    (gap,) = got["gaps"]
    assert (gap["first"], gap["last"]) == (120, 129)
    # bounded by the readings either side of it
    assert datetime.fromisoformat(gap["after_ts"]) == T0 + timedelta(milliseconds=119)
    assert datetime.fromisoformat(gap["before_ts"]) == T0 + timedelta(milliseconds=130)


def test_an_idempotent_retry_changes_no_count(api: Api, owner: Identity) -> None:
    ids = api.stack(owner)
    for _ in range(3):
        assert send(api, ids, [[1, 50]], readings(1, 50), key="same").status_code == 202
    with api.services.sessionmaker() as db:
        assert db.scalar(select(func.count()).select_from(TelemetrySeqRange)) == 1
    got = completeness(api, owner, ids["capture_session_id"])
    assert got["arrived"] == 50 and got["gaps"] == []


def test_without_an_edge_report_holes_are_gaps_and_captured_is_unknown(
    api: Api, owner: Identity
) -> None:
    ids = api.stack(owner)
    assert (
        send(api, ids, [[1, 10], [21, 30]], readings(1, 10) + readings(21, 10)).status_code == 202
    )
    got = completeness(api, owner, ids["capture_session_id"])
    assert got["captured"] is None and got["unaccounted"] is None
    assert got["arrived"] == 20 and got["edge_accounting"] == "partial"
    assert [(g["first"], g["last"]) for g in got["gaps"]] == [(11, 20)]
    assert "no heartbeat" in got["note"]


def test_readings_sent_without_numbers_are_arrived_outside_the_accounting(
    api: Api, owner: Identity
) -> None:
    ids = api.stack(owner)
    assert api.ingest(ids, readings(1, 5)).status_code == 202  # the seed's curl batch
    got = completeness(api, owner, ids["capture_session_id"])
    assert got["arrived_without_edge_accounting"] == 5 and got["arrived"] == 0
    assert got["edge_accounting"] == "none" and "without edge sequence numbers" in got["note"]
    # and next to numbered ones of an edge that reports them
    assert send(api, ids, [[1, 10]], readings(100, 10)).status_code == 202
    report(api, owner, ids, {"captured_upto": 10, "sessions": [session_of(ids, 1, 10)]})
    got = completeness(api, owner, ids["capture_session_id"])
    assert (got["captured"], got["arrived"], got["arrived_without_edge_accounting"]) == (10, 10, 5)
    assert got["unaccounted"] == 0 and got["edge_accounting"] == "partial"


def test_a_copy_of_a_stored_reading_counts_as_arrived(api: Api, owner: Identity) -> None:
    ids = api.stack(owner)
    assert send(api, ids, [[1, 10]], readings(1, 10), key="x").status_code == 202
    # another batch, other numbers, two of its readings already stored (same value)
    r = send(api, ids, [[11, 15]], readings(9, 2) + readings(11, 3), key="y")
    assert r.status_code == 202 and r.json()["duplicate"] == 2
    report(api, owner, ids, {"captured_upto": 15, "sessions": [session_of(ids, 1, 15)]})
    got = completeness(api, owner, ids["capture_session_id"])
    assert (got["arrived"], got["unaccounted"], got["gaps"]) == (15, 0, [])


@pytest.mark.parametrize(
    ("seq", "reason"),
    [
        ({"epoch": EPOCH, "ranges": [[1, 4]]}, "hold 4 numbers for 5 readings"),
        ({"epoch": EPOCH, "ranges": [[3, 5], [1, 2]]}, "ascending"),
        ({"epoch": EPOCH, "ranges": []}, ""),
        ({"epoch": EPOCH, "ranges": [[0, 4]]}, ""),
        ({"epoch": "not-a-uuid", "ranges": [[1, 5]]}, ""),
        ({"epoch": EPOCH, "ranges": [[1, 5]], "extra": 1}, ""),
    ],
)
def test_bad_sequence_ranges_are_refused_by_field(
    api: Api, owner: Identity, seq: dict[str, Any], reason: str
) -> None:
    ids = api.stack(owner)
    body = {
        "sensor_id": ids["sensor_id"],
        "run_id": ids["run_id"],
        "capture_session_id": ids["capture_session_id"],
        "readings": readings(1, 5),
        "seq": seq,
    }
    headers = {"Authorization": f"Bearer {ids['token']}", **FORM}
    r = api.c.post("/api/v1/telemetry", content=json.dumps(body), headers=headers)
    problem = assert_problem(r, 422)
    fields = [e["field"] for e in problem["errors"]]
    assert all(f.startswith("seq") for f in fields), fields
    assert reason in r.text
    # nothing was stored, and the API goes on taking good batches
    assert completeness(api, owner, ids["capture_session_id"])["arrived"] == 0
    assert send(api, ids, [[1, 5]], readings(1, 5)).status_code == 202


def test_access_is_that_of_the_session_and_the_run_sums_its_sessions(
    api: Api, owner: Identity
) -> None:
    ids = api.stack(owner)
    assert send(api, ids, [[1, 10]], readings(1, 10)).status_code == 202
    stop = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}/stop"
    assert api.post(stop, {}, headers=owner.headers()).status_code == 200
    second = api.session(owner, ids["run_id"], ordinal=2)
    api.backdate(second, T0 - timedelta(days=1))
    other = {**ids, "capture_session_id": second}
    assert send(api, other, [[11, 15]], readings(11, 5)).status_code == 202
    stranger = api.project("other")
    r = api.get(
        f"/api/v1/capture-sessions/{ids['capture_session_id']}/completeness",
        headers=stranger.headers(),
    )
    assert_problem(r, 404)
    assert_problem(
        api.get(f"/api/v1/capture-sessions/{uuid.uuid4()}/completeness", headers=owner.headers()),
        404,
    )
    run = api.get(
        f"/api/v1/runs/{ids['run_id']}/completeness", headers=owner.headers(role="viewer")
    )
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["arrived"] == 15 and [s["arrived"] for s in body["sessions"]] == [10, 5]
    one = api.get(
        f"/api/v1/runs/{ids['run_id']}/completeness",
        params={"sensor_id": str(uuid.uuid4())},
        headers=owner.headers(),
    )
    assert one.json()["arrived"] == 0


def test_a_batch_split_by_profile_version_keeps_its_numbers(api: Api, owner: Identity) -> None:
    """A request whose readings straddle a profile version's start is stored in parts (one
    per version): each part keeps its readings' numbers, and the request's copies of its own
    readings count as arrived copies, so nothing shows as a gap."""
    ids = api.stack(owner)
    start = T0 + timedelta(milliseconds=50)  # v2 converts readings 50.. of the batch below
    body = {"version": "v2", "kind": "linear", "payload": {"a": 3.0, "b": -5.0}}
    body["effective_from"] = start.isoformat()
    r = api.put(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profile", body, headers=owner.headers()
    )
    assert r.status_code == 200, r.text
    rows = readings(1, 100)
    rows.insert(10, dict(rows[9]))  # a copy of reading 10 inside the request: number 11
    assert send(api, ids, [[1, 101]], rows, key="split").status_code == 202
    report(
        api,
        owner,
        ids,
        {"captured_upto": 101, "sessions": [session_of(ids, 1, 101)], "waiting": [], "dead": []},
    )
    got = completeness(api, owner, ids["capture_session_id"])
    assert got["unaccounted"] == 0 and got["gaps"] == [], got
    assert got["captured"] == 101 and got["waiting"] == 0
    versions = {r["profile_version"] for r in api.readings(owner, run_id=ids["run_id"])}
    assert versions == {"v1", "v2"}  # it was split
    # The retry is the same request: counts unchanged.
    assert send(api, ids, [[1, 101]], rows, key="split").status_code == 202
    assert completeness(api, owner, ids["capture_session_id"]) == got


def test_a_session_the_report_does_not_list_is_not_called_complete(
    api: Api, owner: Identity
) -> None:
    """An edge lists its newest session segments only: for a session it no longer lists,
    what was captured is unknown (not "what arrived", which would hide a loss)."""
    ids = api.stack(owner)
    assert send(api, ids, [[1, 10]], readings(1, 10), key="old").status_code == 202
    draft = api.session(owner, ids["run_id"], ordinal=2, status="draft")  # another session
    other = {**ids, "capture_session_id": draft}
    report(
        api,
        owner,
        ids,
        {"captured_upto": 30, "sessions": [session_of(other, 11, 30)], "waiting": [], "dead": []},
    )
    got = completeness(api, owner, ids["capture_session_id"])
    assert got["arrived"] == 10
    assert got["captured"] is None and got["unaccounted"] is None, got
