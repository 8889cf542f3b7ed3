"""The edge in the fleet: heartbeats to the real cloud, the clock estimate against a shifted
edge clock, an outage (heartbeats resume, the backlog's age shows), and ``status --json``
checked against the heartbeat's schema."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.heartbeat import MAX_HEARTBEAT_BYTES, Heartbeat
from edge.buffer import Buffer, NewReading, Write
from edge.clock import ClockEstimator, sample
from edge.cloud_client import CloudClient
from edge.config import load_config
from edge.daemon import Daemon
from edge.heartbeat import MIN_HEARTBEAT_BYTES, Heartbeats, state_path
from tests.edge.helpers import (
    Bound,
    EdgeProcess,
    MockCloudClient,
    RealCloud,
    running,
    wait_for,
    write_config,
)
from tests.edge.test_integration_mqtt import connected, mqtt_sensor, topic
from tests.support.mqtt import Publisher
from tests.support.services import Broker


def register_edge(cloud: RealCloud, b: Bound, name: str = "bench-01") -> tuple[str, str]:
    with cloud.client(**b.user) as c:
        r = c.post("/api/v1/edges", json={"name": name})
        assert r.status_code == 201, r.text
        return r.json()["edge"]["id"], r.json()["token"]


def edge_in_cloud(cloud: RealCloud, b: Bound, edge_id: str) -> dict[str, Any]:
    with cloud.client(**b.user) as c:
        r = c.get(f"/api/v1/edges/{edge_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def edge_section(edge_id: str, token: str, heartbeat_s: float, **more: float) -> str:
    lines = ["[edge]", f'id = "{edge_id}"', f'token = "{token}"', f"heartbeat_s = {heartbeat_s}"]
    lines += [f"{k} = {v}" for k, v in more.items()]
    return "\n".join(lines) + "\n"


def test_a_sample_is_rfc5905s_offset_and_delay() -> None:
    # The edge is 2 s behind; the request took 10 ms out, the answer 30 ms back, the server
    # 5 ms: the offset is off by half the difference of the legs (10 ms), the delay is 40 ms.
    t0 = 100.0
    s = sample(t0, t0 + 2.010, t0 + 2.015, t0 + 0.045)
    assert s.offset_s == pytest.approx(2.0 - 0.010)
    assert s.delay_s == pytest.approx(0.040)


def test_the_filter_keeps_the_sample_with_the_shortest_round_trip() -> None:
    est = ClockEstimator(max_offset_ms=500)
    for delay, offset in ((0.200, 0.090), (0.002, 0.001), (0.050, -0.020)):
        est.add(sample(0.0, offset + delay / 2, offset + delay / 2, delay))
    got = est.estimate()
    assert got is not None and got.samples == 3
    assert got.offset_ms == pytest.approx(1.0)
    assert got.uncertainty_ms > 1.0  # half the best delay plus the others' spread


def test_only_a_sync_round_that_changes_how_syncing_goes_wakes_the_heartbeat(
    tmp_path: Path,
) -> None:
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url="http://127.0.0.1:9",
        buffer=tmp_path / "buffer.db",
        sensors=[],
        extra="[edge]\nmin_interval_s = 0\n",
    )
    buf = Buffer(tmp_path / "buffer.db")
    try:
        beats = Heartbeats(load_config(cfg), buf, None, dict)
        woken = []
        for answered in (True, True, False, False, True, True):
            beats.wake.clear()
            beats.after_sync_round("s1", answered)
            woken.append(beats.wake.is_set())
        # A busy edge's every-second rounds send nothing; the outage and the recovery do.
        assert woken == [False, False, True, False, True, False]
        beats.cfg.edge.min_interval_s = 3600.0
        beats._attempted = time.monotonic()
        beats.wake.clear()
        beats.after_sync_round("s1", False)
        assert not beats.wake.is_set()  # not sooner than min_interval_s after the last
    finally:
        buf.close()


def test_no_edge_identity_means_no_heartbeat_said_once(
    cloud: RealCloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = write_config(
        tmp_path / "edge.toml", cloud_url=cloud.url, buffer=tmp_path / "buffer.db", sensors=[]
    )
    daemon = Daemon(load_config(cfg))

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        for _ in range(200):
            if state_path(tmp_path / "buffer.db").exists():
                break
            await asyncio.sleep(0.05)
        daemon.stop()
        await task

    with caplog.at_level(logging.INFO, "benchlink.edge"):
        asyncio.run(main())
    said = [r.message for r in caplog.records if "heartbeat: none sent" in r.message]
    assert len(said) == 1 and "[edge] id and token" in said[0]
    assert daemon.heartbeats is not None and daemon.heartbeats.sent == 0


@pytest.mark.parametrize("shift_s", [7.5, -42.0])
def test_the_clock_estimate_finds_a_shifted_edge_clock(
    cloud: RealCloud, tmp_path: Path, shift_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    (a,) = cloud.bootstrap(1)
    edge_id, token = register_edge(cloud, a)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        sensors=[],
        extra=edge_section(edge_id, token, heartbeat_s=0.2, min_interval_s=0),
    )
    # The edge's clock only: the machine's is untouched.
    daemon = Daemon(load_config(cfg), time_source=lambda: time.time() + shift_s)

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        for _ in range(300):
            beats = daemon.heartbeats
            if beats is not None and beats.sent >= 3:
                break
            await asyncio.sleep(0.05)
        daemon.stop()
        await task

    with caplog.at_level(logging.WARNING, "benchlink.edge"):
        asyncio.run(main())
    got = edge_in_cloud(cloud, a, edge_id)
    # It reported; with a 0.2 s heartbeat it turns stale 0.6 s after it stopped, which a
    # loaded machine may take before the cloud is asked.
    assert got["state"] in ("online", "stale")
    clock = got["heartbeat"]["clock"]
    # The cloud's clock minus the edge's: minus the shift, within 20 ms.
    assert abs(clock["offset_ms"] + shift_s * 1000) < 20, clock
    assert clock["uncertainty_ms"] < 20 and clock["samples"] >= 4
    warned = [r.message for r in caplog.records if "clock:" in r.message]
    assert len(warned) == 1 and "max_offset_ms = 500" in warned[0]
    assert ("ahead of" if shift_s > 0 else "behind") in warned[0]


def status_json(edge: EdgeProcess) -> Heartbeat:
    out = edge.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    return _heartbeat_part(json.loads(out.stdout))


@pytest.mark.mqtt
def test_heartbeats_through_an_outage(mosquitto: Broker, cloud: RealCloud, tmp_path: Path) -> None:
    (a,) = cloud.bootstrap(1)
    edge_id, token = register_edge(cloud, a)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=mosquitto.url,
        sensors=[mqtt_sensor(a)],
        extra=edge_section(edge_id, token, heartbeat_s=0.5, min_interval_s=0),
    )
    # Retries of the sync far apart: after the outage, heartbeats come back before the
    # backlog is sent, so the cloud sees the backlog's age.
    text = cfg.read_text().replace("backoff_initial_s = 0.1", "backoff_initial_s = 8")
    cfg.write_text(text.replace("backoff_max_s = 1.0", "backoff_max_s = 8"))
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        with running(edge):
            wait_for(lambda: connected(edge), 20, "the MQTT subscription")
            assert pub.publish(topic(a), b"1.5")
            wait_for(lambda: len(cloud.telemetry(a)) == 1, 30, "the first reading")

            def beat() -> dict[str, Any] | None:
                hb: dict[str, Any] | None = edge_in_cloud(cloud, a, edge_id)["heartbeat"]
                return hb

            def synced_beat() -> bool:
                hb = beat()
                return hb is not None and hb["sensors"][a.sensor_id]["synced"] == 1

            wait_for(synced_beat, 30, "a heartbeat after the sync")
            first = beat()
            assert first is not None
            s = first["sensors"][a.sensor_id]
            assert s["source_state"] == "connected" and s["waiting"] == 0
            assert s["last_reading_ts"] is not None and first["buffer"]["used_bytes"] > 0
            assert first["clock"] is not None and abs(first["clock"]["offset_ms"]) < 50

            cloud.stop()
            for v in (2.5, 3.5):
                assert pub.publish(topic(a), str(v).encode())
            wait_for(lambda: status_json(edge).sensors[a.sensor_id].waiting == 2, 20, "backlog")
            time.sleep(1.5)
            local = status_json(edge)
            mine = local.sensors[a.sensor_id]
            assert local.running and local.uptime_s is not None and mine.pending == 2
            assert mine.oldest_waiting_age_s is not None and mine.oldest_waiting_age_s >= 1.0
            assert "not sent, cloud unreachable" in edge.log.read_text()

            cloud.start()
            with cloud.client(**a.user) as c:

                def resumed() -> bool:
                    hb = c.get(f"/api/v1/edges/{edge_id}").json()["heartbeat"]
                    return bool(hb["sensors"][a.sensor_id]["waiting"] == 2)

                wait_for(resumed, 30, "a heartbeat after the outage")
            back = beat()
            assert back is not None
            age = back["sensors"][a.sensor_id]["oldest_waiting_age_s"]
            assert age is not None and age >= 1.5
            wait_for(lambda: len(cloud.telemetry(a)) == 3, 60, "the backlog")
            wait_for(lambda: (beat() or {})["sensors"][a.sensor_id]["waiting"] == 0, 30, "drained")
            assert "heartbeat: the cloud takes them again" in edge.log.read_text()
    finally:
        pub.close()
    stopped = status_json(edge)  # no daemon now: the buffer alone
    assert not stopped.running and stopped.uptime_s is None and stopped.clock is None
    assert stopped.sensors[a.sensor_id].source_state == "stopped"
    assert stopped.sensors[a.sensor_id].synced == 3


def test_status_table_shows_the_heartbeats_numbers(cloud: RealCloud, tmp_path: Path) -> None:
    (a,) = cloud.bootstrap(1)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        sensors=[mqtt_sensor(a)],
    )
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    edge.cli("status")  # creates the buffer and registers nothing: the daemon does
    out = edge.cli("status")
    assert out.returncode == 0, out.stderr
    assert "daemon: not running" in out.stdout and "when full: refuse-new" in out.stdout
    assert "cloud edge id - (no [edge] id: no heartbeats)" in out.stdout
    raw = json.loads(edge.cli("status", "--json").stdout)
    _heartbeat_part(raw)
    assert raw["running"] is False


def test_the_time_endpoint_is_what_the_edge_samples(cloud: RealCloud) -> None:
    (a,) = cloud.bootstrap(1)
    _, token = register_edge(cloud, a)
    r = httpx.get(cloud.url + "/api/v1/time", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and abs(r.json()["time_us"] / 1e6 - time.time()) < 5


def crowded_buffer(path: Path, n_sensors: int, rounds: int = 200) -> tuple[Buffer, list[str]]:
    """A buffer whose full heartbeat is well over the cloud's 1 MiB body limit: each sensor
    captured one reading in each of ``rounds`` capture sessions, and each of those was
    dead-lettered with a reason of its own, 500 characters long."""
    buf = Buffer(path)
    # thousands of small transactions: no fsync for each (a test's file, not a bench's)
    buf.conn.execute("PRAGMA synchronous = OFF")
    run = str(uuid.uuid4())
    sessions = [str(uuid.uuid4()) for _ in range(rounds)]
    sids = [str(uuid.uuid4()) for _ in range(n_sensors)]
    for sid in sids:
        buf.upsert_sensor(sid, "tok", "mqtt", run, sessions[0])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for k, session in enumerate(sessions):
        for sid in sids:
            buf.bind(sid, run, session)
        buf.commit([Write([NewReading(sid, t0 + timedelta(seconds=k), 1.0) for sid in sids])])
        for sid in sids:
            buf.seal(sid, 10)
            batch = buf.next_batch(sid)
            assert batch is not None
            buf.mark_dead(batch.id, f"422 refused #{k}: " + "why " * 125)
    return buf, sids


async def beat_once(beats: Heartbeats, cfg_path: Path) -> None:
    async with CloudClient(load_config(cfg_path).cloud) as client:
        beats.client = client
        await beats.beat()


def test_a_heartbeat_over_the_clouds_body_limit_is_cut_and_taken(
    cloud: RealCloud, tmp_path: Path
) -> None:
    (a,) = cloud.bootstrap(1)
    edge_id, token = register_edge(cloud, a)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        sensors=[],
        extra=edge_section(edge_id, token, heartbeat_s=30),
    )
    buf, sids = crowded_buffer(tmp_path / "buffer.db", n_sensors=10)
    try:
        beats = Heartbeats(load_config(cfg), buf, None, dict)
        asyncio.run(beat_once(beats, cfg))
        assert beats.last is not None
        whole = len(beats.last.model_dump_json(exclude_none=True))
        assert whole > 1024 * 1024  # as it was, the cloud would refuse it (413)
        assert beats.sent == 1 and beats.limit == MAX_HEARTBEAT_BYTES
    finally:
        buf.close()
    got = edge_in_cloud(cloud, a, edge_id)
    assert got["state"] == "online"
    hb = got["heartbeat"]
    cut = hb["truncated"]  # the cloud keeps and shows what was left out
    assert cut["full_bytes"] == whole and cut["limit_bytes"] == MAX_HEARTBEAT_BYTES
    assert cut["reasons_cut_to"] == 100 and cut["dead"] > 0 and cut["sessions"] > 0
    assert sorted(hb["sensors"]) == sorted(sids)  # every sensor still reports
    for sid in sids:
        seq = hb["sensors"][sid]["sequence"]
        assert seq["captured_upto"] == 200
        listed = {s["capture_session_id"] for s in seq["sessions"]}
        left = seq["left_out"]
        assert len(listed) + left["sessions"] == 200  # sessions whole, counted when left out
        assert len(seq["dead"]) + left["dead"] == 200 and left["dead_readings"] == left["dead"]
        assert all(len(d["reason"]) <= 100 for d in seq["dead"])
    # at the bench, `status` keeps the whole document
    local = json.loads(state_path(tmp_path / "buffer.db").read_text())["heartbeat"]
    assert local.get("truncated") is None
    assert len(local["sensors"][sids[0]]["sequence"]["dead"]) == 200


def test_a_413_cuts_the_heartbeat_to_the_clouds_limit_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BENCHLINK_MAX_BODY_BYTES", str(64 * 1024))
    cloud = RealCloud(tmp_path)
    cloud.start()
    try:
        (a,) = cloud.bootstrap(1)
        edge_id, token = register_edge(cloud, a)
        cfg = write_config(
            tmp_path / "edge.toml",
            cloud_url=cloud.url,
            buffer=tmp_path / "buffer.db",
            sensors=[],
            extra=edge_section(edge_id, token, heartbeat_s=30),
        )
        buf, _ = crowded_buffer(tmp_path / "buffer.db", n_sensors=2, rounds=100)
        try:
            beats = Heartbeats(load_config(cfg), buf, None, dict)
            with caplog.at_level(logging.WARNING, "benchlink.edge"):
                asyncio.run(beat_once(beats, cfg))
                asyncio.run(beat_once(beats, cfg))
        finally:
            buf.close()
        assert beats.sent == 2 and beats.limit == 64 * 1024
        said = [r.message for r in caplog.records if "heartbeat" in r.message]
        assert len(said) == 1, said
        assert "413, its limit 65536 bytes" in said[0] and "cut to 65536 bytes" in said[0]
        cut = edge_in_cloud(cloud, a, edge_id)["heartbeat"]["truncated"]
        assert cut["limit_bytes"] == 64 * 1024
    finally:
        cloud.stop()


def test_a_cloud_whose_limit_is_below_the_least_heartbeat_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cloud that refuses even the smallest cut (a body limit set below 16 KiB): the edge
    does not shrink for ever; it says what to do, once, and keeps trying each period."""

    def refuse(request: httpx.Request) -> httpx.Response:
        detail = "request body over the 1024-byte limit"
        return httpx.Response(413, json={"detail": detail, "status": 413})

    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url="http://cloud.test",
        buffer=tmp_path / "buffer.db",
        sensors=[],
        extra=edge_section(str(uuid.uuid4()), "t", heartbeat_s=30),
    )
    buf, _ = crowded_buffer(tmp_path / "buffer.db", n_sensors=1, rounds=100)
    try:
        beats = Heartbeats(load_config(cfg), buf, MockCloudClient(refuse), dict)
        beats.clock.add(sample(0.0, 0.0, 0.0, 0.001))  # no clock sampling first
        with caplog.at_level(logging.WARNING, "benchlink.edge"):
            for _ in range(3):
                asyncio.run(beats.beat())
    finally:
        buf.close()
    said = [r.message for r in caplog.records if "heartbeat" in r.message]
    assert beats.sent == 0 and beats.limit == MIN_HEARTBEAT_BYTES
    assert len(said) == 2, said  # the cut, then the refusal of the smallest one
    assert "raise the cloud's BENCHLINK_MAX_BODY_BYTES" in said[1]


def _heartbeat_part(raw: dict[str, Any]) -> Heartbeat:
    """``status --json`` is the heartbeat's own schema, plus the alarms evaluated at the edge
    (``alarms``: shown at the bench, never sent to the cloud)."""
    assert set(raw["alarms"]) == {"rules", "in_force", "recent"}, raw["alarms"]
    return Heartbeat.model_validate({k: v for k, v in raw.items() if k != "alarms"})
