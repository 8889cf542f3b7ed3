"""Edges in the cloud: registration with a one-time token, rotate/revoke, heartbeats, health
computed on read, the Prometheus gauge, and GET /api/v1/time (on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from cloud.db import models
from cloud.fleet import HeartbeatSink
from cloud.services.tokens import hash_token
from common.heartbeat import Heartbeat
from tests.cloud.conftest import Api, Identity, assert_problem


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


def register(api: Api, who: Identity, name: str = "bench-01") -> tuple[str, str]:
    r = api.post("/api/v1/edges", {"name": name}, headers=who.headers())
    assert r.status_code == 201, r.text
    return r.json()["edge"]["id"], r.json()["token"]


def beat(edge_id: str | None = None, heartbeat_s: float = 30.0, **extra: Any) -> dict[str, Any]:
    sensor = {
        "source": "serial",
        "source_state": "open",
        "run_id": str(uuid.uuid4()),
        "capture_session_id": str(uuid.uuid4()),
        "last_reading_ts": "2026-12-06T10:00:00.250Z",
        "last_reading_age_s": 0.4,
        "waiting": 12,
        "oldest_waiting_age_s": 1.5,
        "pending": 10,
        "inflight": 2,
        "synced": 100,
        "dead": 0,
        "rate_per_s": 10.0,
    }
    body = {
        "edge_id": edge_id,
        "version": "0.1.0",
        "host": "bench-pc-1",
        "uptime_s": 120.0,
        "sent_at": datetime.now(UTC).isoformat(),
        "heartbeat_s": heartbeat_s,
        "buffer": {
            "id": "b1",
            "path": "/var/lib/benchlink/buffer.db",
            "used_bytes": 1000,
            "max_bytes": 2000,
            "full_policy": "refuse-new",
        },
        "dead_letters": 0,
        "clock": {
            "offset_ms": -3.5,
            "uncertainty_ms": 0.8,
            "rtt_ms": 1.2,
            "samples": 4,
            "max_offset_ms": 500,
            "age_s": 2.0,
        },
        "sensors": {str(uuid.uuid4()): sensor},
        **extra,
    }
    if not extra:
        Heartbeat.model_validate(body)  # what the test sends is what the edge would
    return body


def put_beat(api: Api, edge_id: str, token: str | None, body: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.put(f"/api/v1/edges/{edge_id}/heartbeat", body, headers=headers)


def test_register_shows_the_token_once_and_keeps_its_hash(api: Api, owner: Identity) -> None:
    edge_id, token = register(api, owner)
    assert token.startswith("ble_")
    got = api.get(f"/api/v1/edges/{edge_id}", headers=owner.headers(role="viewer"))
    assert got.status_code == 200, got.text
    body = got.json()
    assert "token" not in body and body["token_status"] == "active"
    assert body["state"] == "never" and body["heartbeat"] is None
    assert token not in got.text and body["token_preview"] == f"{token[:8]}…{token[-4:]}"
    with api.services.sessionmaker() as db:
        row = db.get(models.Edge, uuid.UUID(edge_id))
        assert row is not None and row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    listed = api.get("/api/v1/edges", headers=owner.headers()).json()["items"]
    assert [e["id"] for e in listed] == [edge_id]


def test_registering_needs_the_owner_role_and_a_new_name(api: Api, owner: Identity) -> None:
    r = api.post("/api/v1/edges", {"name": "b"}, headers=owner.headers(role="editor"))
    assert_problem(r, 403)
    register(api, owner, "bench-01")
    assert_problem(api.post("/api/v1/edges", {"name": " bench-01"}, headers=owner.headers()), 409)
    assert_problem(
        api.post("/api/v1/edges", {"name": "\u200b"}, headers=owner.headers()), 422, "name"
    )
    assert_problem(api.post("/api/v1/edges", {"name": "x"}), 401)


def test_another_projects_edge_is_not_found(api: Api, owner: Identity) -> None:
    edge_id, _ = register(api, owner)
    other = api.project("other")
    assert_problem(api.get(f"/api/v1/edges/{edge_id}", headers=other.headers()), 404)
    assert api.get("/api/v1/edges", headers=other.headers()).json()["items"] == []


def test_a_heartbeat_is_kept_and_shown(api: Api, owner: Identity) -> None:
    edge_id, token = register(api, owner)
    body = beat(edge_id)
    before = time.time_ns() // 1000
    r = put_beat(api, edge_id, token, body)
    assert r.status_code == 200, r.text
    # The answer is the server's time, a clock sample for the edge.
    assert before <= r.json()["received_us"] <= r.json()["time_us"] <= time.time_ns() // 1000
    got = api.get(f"/api/v1/edges/{edge_id}", headers=owner.headers()).json()
    assert got["state"] == "online" and 0 <= got["silent_s"] < 60
    assert next(iter(got["heartbeat"]["sensors"].values()))["waiting"] == 12
    assert got["heartbeat"]["clock"]["offset_ms"] == -3.5
    # The next one supersedes it; both are stored within a second, the last one wins.
    put_beat(api, edge_id, token, beat(edge_id, host="bench-pc-2"))
    got = api.get(f"/api/v1/edges/{edge_id}", headers=owner.headers()).json()
    assert got["heartbeat"]["host"] == "bench-pc-2"
    deadline = time.monotonic() + 10
    stored = None
    while time.monotonic() < deadline:
        with api.services.sessionmaker() as db:
            stored = db.get(models.Edge, uuid.UUID(edge_id))
            # The first may be stored already (a flush between the two PUTs): wait for the last.
            if stored is not None and (stored.heartbeat or {}).get("host") == "bench-pc-2":
                break
        time.sleep(0.1)
    assert stored is not None and stored.heartbeat is not None
    assert stored.heartbeat["host"] == "bench-pc-2" and stored.heartbeat_at is not None


def test_a_heartbeat_with_a_token_revoked_meanwhile_is_not_stored(
    api: Api, owner: Identity
) -> None:
    """Taken before the revocation reached this process's memory, the heartbeat is still
    checked against the token when it is stored."""
    edge_id, token = register(api, owner)
    # A sink of its own, without the app's flush task: this test says when heartbeats go.
    sink = api.services.heartbeats = HeartbeatSink(api.services.sessionmaker)
    assert put_beat(api, edge_id, token, beat(edge_id)).status_code == 200
    sink.flush()
    with api.services.sessionmaker.begin() as db:  # revoked by another API process
        db.execute(
            update(models.Edge)
            .where(models.Edge.id == uuid.UUID(edge_id))
            .values(token_hash=None, token_status="revoked", heartbeat=None, heartbeat_at=None)
        )
    assert put_beat(api, edge_id, token, beat(edge_id)).status_code == 200  # remembered
    assert sink.flush() == 0
    with api.services.sessionmaker() as db:
        row = db.get(models.Edge, uuid.UUID(edge_id))
        assert row is not None and row.heartbeat is None


def test_an_older_heartbeat_flushed_by_another_process_does_not_replace_a_newer_one(
    api: Api, owner: Identity
) -> None:
    """Two API processes, each writing behind on its own timer: the edge's next heartbeat
    went to the other process, which stored it first. The older one, flushed after, must
    not replace it (it said fewer readings captured, no dead letter yet), and the process
    still holding it answers with the newer stored one."""
    edge_id, token = register(api, owner)
    this = api.services.heartbeats = HeartbeatSink(api.services.sessionmaker)
    other = HeartbeatSink(api.services.sessionmaker)
    seen: list[set[uuid.UUID]] = []
    this.after_store.append(lambda db, stored: seen.append(set(stored)))
    assert put_beat(api, edge_id, token, beat(edge_id, host="older")).status_code == 200
    newer = Heartbeat.model_validate(beat(edge_id, host="newer")).model_dump(mode="json")
    token_hash = hash_token(token)
    other.keep(uuid.UUID(edge_id), token_hash, newer)
    assert other.flush() == 1
    got = api.get(f"/api/v1/edges/{edge_id}", headers=owner.headers()).json()
    assert got["heartbeat"]["host"] == "newer"  # not this process's older one
    assert this.flush() == 0 and seen == [set()]
    with api.services.sessionmaker() as db:
        row = db.get(models.Edge, uuid.UUID(edge_id))
        assert row is not None and row.heartbeat is not None
        assert row.heartbeat["host"] == "newer"


def test_heartbeat_credentials(api: Api, owner: Identity) -> None:
    edge_id, _ = register(api, owner, "a")
    _, other_token = register(api, owner, "b")
    assert_problem(put_beat(api, edge_id, None, beat()), 401)
    assert_problem(put_beat(api, edge_id, "ble_nope", beat()), 401)
    assert_problem(put_beat(api, edge_id, other_token, beat()), 403)
    _, sensor_token = api.sensor(owner)
    assert_problem(put_beat(api, edge_id, sensor_token, beat()), 401)
    assert api.get(f"/api/v1/edges/{edge_id}", headers=owner.headers()).json()["heartbeat"] is None


def test_a_bad_heartbeat_names_the_field(api: Api, owner: Identity) -> None:
    edge_id, token = register(api, owner)
    body = beat(edge_id)
    sid = next(iter(body["sensors"]))
    body["sensors"][sid]["waiting"] = -1
    assert_problem(put_beat(api, edge_id, token, body), 422, f"sensors.{sid}.waiting")
    assert_problem(put_beat(api, edge_id, token, beat(str(uuid.uuid4()))), 422, "edge_id")
    assert_problem(put_beat(api, edge_id, token, beat(surprise=1)), 422, "surprise")
    assert_problem(put_beat(api, edge_id, token, beat(host="h" * 300)), 422, "host")
    # Nothing accepted is lost: a good one after bad ones is kept.
    assert put_beat(api, edge_id, token, beat(edge_id)).status_code == 200


def test_rotate_and_revoke(api: Api, owner: Identity) -> None:
    edge_id, token = register(api, owner)
    r = api.post(f"/api/v1/edges/{edge_id}/rotate-token", headers=owner.headers())
    assert r.status_code == 200, r.text
    new = r.json()["token"]
    assert r.headers["cache-control"] == "no-store"
    assert_problem(put_beat(api, edge_id, token, beat()), 401)
    assert put_beat(api, edge_id, new, beat()).status_code == 200
    assert_problem(
        api.post(f"/api/v1/edges/{edge_id}/revoke-token", headers=owner.headers("editor")), 403
    )
    r = api.post(f"/api/v1/edges/{edge_id}/revoke-token", headers=owner.headers())
    assert r.json()["token_status"] == "revoked" and r.json()["token_preview"]
    assert_problem(put_beat(api, edge_id, new, beat()), 401)
    kinds = [
        e["kind"]
        for e in api.get("/api/v1/events", headers=owner.headers()).json()["items"]
        if e["kind"].startswith("edge.")
    ]
    assert kinds == ["edge.token_revoked", "edge.token_rotated", "edge.registered"]


def _silence(api: Api, edge_id: str, seconds: float) -> None:
    api.services.heartbeats.flush()  # what this process holds, stored now
    with api.services.sessionmaker.begin() as db:
        db.execute(
            update(models.Edge)
            .where(models.Edge.id == uuid.UUID(edge_id))
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_an_edge_silent_for_three_periods_is_stale(api: Api, owner: Identity) -> None:
    edge_id, token = register(api, owner, "a")
    quiet_id, quiet_token = register(api, owner, "b")
    register(api, owner, "never")
    put_beat(api, edge_id, token, beat(heartbeat_s=10))
    put_beat(api, quiet_id, quiet_token, beat(heartbeat_s=10))
    # 20 s: within 3 x 10 s with room for a slow machine between here and the scrape below
    # (29 s turned stale in CI before /metrics was read).
    _silence(api, edge_id, 20)
    _silence(api, quiet_id, 31)
    states = {
        e["name"]: e["state"]
        for e in api.get("/api/v1/edges", headers=owner.headers()).json()["items"]
    }
    assert states == {"a": "online", "b": "stale", "never": "never"}
    stale = api.get("/api/v1/edges", params={"state": "stale"}, headers=owner.headers())
    assert [e["name"] for e in stale.json()["items"]] == ["b"]
    text = api.get("/metrics").text
    assert 'benchlink_edges{state="stale"} 1.0' in text
    assert 'benchlink_edges{state="online"} 1.0' in text
    assert 'benchlink_edges{state="never"} 1.0' in text


def test_server_time_needs_a_credential(api: Api, owner: Identity) -> None:
    assert_problem(api.get("/api/v1/time"), 401)
    assert_problem(api.get("/api/v1/time", headers={"Authorization": "Bearer ble_x"}), 401)
    _, edge_token = register(api, owner)
    _, sensor_token = api.sensor(owner)
    for headers in (
        {"Authorization": f"Bearer {edge_token}"},
        {"Authorization": f"Bearer {sensor_token}"},
        owner.headers(role="viewer"),
    ):
        before = time.time_ns() // 1000
        r = api.get("/api/v1/time", headers=headers)
        after = time.time_ns() // 1000
        assert r.status_code == 200, r.text
        got = r.json()
        assert before <= got["received_us"] <= got["time_us"] <= after


def test_a_revoked_edge_token_gets_no_time(api: Api, owner: Identity) -> None:
    edge_id, token = register(api, owner)
    api.post(f"/api/v1/edges/{edge_id}/revoke-token", headers=owner.headers())
    assert_problem(api.get("/api/v1/time", headers={"Authorization": f"Bearer {token}"}), 401)


def test_tokens_are_hashed_the_same_way_for_sensors(api: Api, owner: Identity) -> None:
    """Sensors' tokens went to the shared module: still stored as their hash, still work."""
    ids = api.stack(owner)
    with api.services.sessionmaker() as db:
        stored = db.scalar(
            select(models.Sensor.token_hash).where(models.Sensor.id == uuid.UUID(ids["sensor_id"]))
        )
    assert stored == hashlib.sha256(ids["token"].encode()).hexdigest()
    r = api.ingest(ids, [{"timestamp": "2025-12-06T10:00:00Z", "raw_value": 1.0}])
    assert r.status_code == 202, r.text
