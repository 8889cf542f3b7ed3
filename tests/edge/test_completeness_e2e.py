"""Proof of completeness end to end: a real daemon, Mosquitto and the cloud (on SQLite and on
PostgreSQL). Readings captured through two SIGKILLs of the daemon and a cloud outage are all
accounted for once synced; a batch the cloud refuses shows under dead-lettered with its
reason; rows deleted by hand in the cloud's database show as exactly that gap; an idempotent
replay changes no count. Dead-lettered readings an operator moves to another capture session
(``bind --move-dead``, ``dead-letter retry --rebind``) are accounted for in the session they
went to, and no longer in the one they left."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.edge.helpers import Bound, EdgeProcess, RealCloud, running, wait_for, write_config
from tests.edge.test_fleet import edge_section, register_edge
from tests.edge.test_integration_mqtt import connected, mqtt_sensor, topic
from tests.support.mqtt import Publisher
from tests.support.services import Broker


def completeness(cloud: RealCloud, b: Bound) -> dict[str, Any]:
    with cloud.client(**{**b.user, "X-Project-Role": "viewer"}) as c:
        r = c.get(f"/api/v1/capture-sessions/{b.session_id}/completeness")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def stored_sequence(cloud: RealCloud, b: Bound) -> dict[str, Any]:
    """The sensor's sequence report in its edge's heartbeat as the cloud's database holds it."""
    engine = create_engine(cloud.database_url)
    try:
        with engine.connect() as db:
            bodies = db.execute(text("SELECT heartbeat FROM edges")).scalars().all()
    finally:
        engine.dispose()
    for body in bodies:
        beat = json.loads(body) if isinstance(body, str) else body
        sensor = ((beat or {}).get("sensors") or {}).get(b.sensor_id)
        if sensor and sensor.get("sequence"):
            found: dict[str, Any] = sensor["sequence"]
            return found
    return {}


def publish(pub: Publisher, b: Bound, values: range) -> None:
    for v in values:
        assert pub.publish(topic(b), json.dumps({"raw_value": float(v), "meta": {"n": v}}).encode())


def delete_by_hand(cloud: RealCloud, first: int, last: int) -> None:
    """Delete the readings numbered ``first``..``last`` in the cloud's database, as someone
    outside benchlink would (the test's database holds one sensor's readings)."""
    engine = create_engine(cloud.database_url)
    try:
        with engine.begin() as db:
            rows = db.execute(
                text(
                    "SELECT id, seq FROM telemetry_readings WHERE seq BETWEEN :a AND :b"
                    " ORDER BY seq"
                ),
                {"a": first, "b": last},
            ).all()
            assert [r[1] for r in rows] == list(range(first, last + 1))
            for r in rows:
                db.execute(text("DELETE FROM telemetry_readings WHERE id = :id"), {"id": r[0]})
    finally:
        engine.dispose()


@pytest.mark.mqtt
def test_every_reading_is_accounted_for_through_kills_an_outage_and_a_refusal(
    mosquitto: Broker, cloud_on_each_db: RealCloud, tmp_path: Path
) -> None:
    cloud = cloud_on_each_db
    (a,) = cloud.bootstrap(1)
    edge_id, token = register_edge(cloud, a)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=mosquitto.url,
        batch_size=20,
        sensors=[mqtt_sensor(a)],
        extra=edge_section(edge_id, token, heartbeat_s=0.5, min_interval_s=0),
    )
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    pub = Publisher(mosquitto.host, mosquitto.port)
    total = 0

    def captured_at_edge() -> int:
        out = edge.cli("status", "--json")
        assert out.returncode == 0, out.stderr
        seq = json.loads(out.stdout)["sensors"][a.sensor_id].get("sequence") or {}
        return int(seq.get("captured_upto", 0))

    try:
        # capture, SIGKILL, capture (the broker keeps what came meanwhile), SIGKILL again
        for round_ in range(2):
            edge.start()
            wait_for(lambda r=round_: connected(edge, r + 1), 20, "the MQTT subscription")
            publish(pub, a, range(total, total + 60))
            total += 60
            wait_for(lambda n=total: captured_at_edge() == n, 30, f"{total} readings captured")
            edge.kill9()
        # a cloud outage: captured, not sent
        cloud.stop()
        with running(edge):
            wait_for(lambda: connected(edge, 3), 20, "the MQTT subscription")
            publish(pub, a, range(total, total + 50))
            total += 50
            wait_for(lambda: captured_at_edge() == total, 30, "captured during the outage")
            # one reading the cloud refuses (long before its session): a poison batch
            old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
            assert pub.publish(topic(a), json.dumps({"timestamp": old, "raw_value": 1.0}).encode())
            total += 1
            wait_for(lambda: captured_at_edge() == total, 30, "the refused reading captured")
            cloud.start()
            wait_for(lambda: len(cloud.telemetry(a)) == total - 1, 90, "the backlog in the cloud")

            # Stored, not only taken: each API process writes heartbeats behind and answers
            # from the newest it knows, so once the database holds this one, no answer is
            # older (an answer from a process that took it before storing it is no proof).
            def settled() -> bool:
                seq = stored_sequence(cloud, a)
                return bool(seq.get("captured_upto") == total and not seq.get("waiting"))

            wait_for(settled, 60, "a stored heartbeat reporting nothing waiting")
            got = completeness(cloud, a)
    finally:
        pub.close()
    assert (got["captured"], got["arrived"], got["waiting"]) == (total, total - 1, 0)
    assert got["dead_lettered"] == 1 and got["unaccounted"] == 0 and got["gaps"] == []
    (reason,) = got["dead_lettered_by_reason"]
    assert "before its capture session started" in reason
    assert got["edge_accounting"] == "full"

    # someone deletes five readings of one batch in the cloud's database
    delete_by_hand(cloud, 31, 35)
    after = completeness(cloud, a)
    assert (after["arrived"], after["unaccounted"]) == (total - 6, 5)
    assert [(g["first"], g["last"]) for g in after["gaps"]] == [(31, 35)]
    assert after["gaps"][0]["after_ts"] is not None and after["gaps"][0]["before_ts"] is not None

    # an operator re-sends what was synced: the cloud recognises each batch, no count moves
    out = edge.cli("replay", "--since", "2000-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "synced batch(es)" in out.stdout and not out.stdout.startswith("0 ")
    assert undated(completeness(cloud, a)) == undated(after)


def undated(got: dict[str, Any]) -> dict[str, Any]:
    """The answer without its sensors' ``reported_at``: the daemon's last heartbeats may
    still be stored after an answer (written behind), which changes no count."""
    return {**got, "sensors": [{**s, "reported_at": None} for s in got["sensors"]]}


def counts(got: dict[str, Any]) -> tuple[Any, ...]:
    return (
        got["captured"],
        got["arrived"],
        got["waiting"],
        got["dead_lettered"],
        got["unaccounted"],
    )


@pytest.mark.mqtt
@pytest.mark.parametrize("how", ["bind --move-dead", "dead-letter retry --rebind"])
def test_dead_letters_moved_to_another_session_are_accounted_for_where_they_went(
    mosquitto: Broker, cloud: RealCloud, tmp_path: Path, how: str
) -> None:
    (a,) = cloud.bootstrap(1)
    edge_id, token = register_edge(cloud, a)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=mosquitto.url,
        batch_size=5,
        sensors=[mqtt_sensor(a)],
        extra=edge_section(edge_id, token, heartbeat_s=0.5, min_interval_s=0),
    )
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    pub = Publisher(mosquitto.host, mosquitto.port)

    def at_edge() -> dict[str, Any]:
        out = edge.cli("status", "--json")
        assert out.returncode == 0, out.stderr
        state: dict[str, Any] = json.loads(out.stdout)["sensors"][a.sensor_id]
        return state

    try:
        with running(edge):
            wait_for(lambda: connected(edge), 20, "the MQTT subscription")
            publish(pub, a, range(0, 10))
            wait_for(lambda: len(cloud.telemetry(a)) == 10, 30, "the first session's readings")
            # the session is stopped in the cloud while the bench goes on capturing: the
            # readings after its stop are refused and set aside at the edge
            cloud.stop_session(a)
            publish(pub, a, range(10, 15))
            wait_for(lambda: at_edge()["dead"] == 5, 30, "the refused readings set aside")
            # the operator opens a second session and moves the sensor and its dead batches
            b = replace(a, session_id=second_session(cloud, a))
            bind = ["bind", a.sensor_id, "--run-id", a.run_id, "--capture-session-id"]
            if how == "bind --move-dead":
                out = edge.cli(*bind, b.session_id, "--move-dead")
            else:
                out = edge.cli(*bind, b.session_id)
                assert out.returncode == 0, out.stdout + out.stderr
                out = edge.cli("dead-letter", "retry", "--rebind")
            assert out.returncode == 0, out.stdout + out.stderr
            publish(pub, a, range(15, 18))
            wait_for(lambda: len(cloud.telemetry(b)) == 8, 60, "the second session's readings")

            def settled() -> bool:
                second = completeness(cloud, b)
                return bool(second["captured"] == 8 and second["waiting"] == 0)

            wait_for(settled, 30, "a heartbeat after the move")
            first, second = completeness(cloud, a), completeness(cloud, b)
    finally:
        pub.close()
    # captured, arrived, waiting, dead-lettered, unaccounted: exact for both sessions
    assert counts(first) == (10, 10, 0, 0, 0), first
    assert counts(second) == (8, 8, 0, 0, 0), second
    assert first["gaps"] == second["gaps"] == []
    assert first["edge_accounting"] == second["edge_accounting"] == "full"


def second_session(cloud: RealCloud, b: Bound) -> str:
    with cloud.client(**b.user) as c:
        r = c.post(
            f"/api/v1/runs/{b.run_id}/capture-sessions",
            json={"ordinal_number": 2, "status": "running"},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])
