"""Against the real cloud app: an outage with offline capture, late readings for a session
stopped meanwhile, a lost response, and the operator CLI (bind, flush, replay, dead-letter)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.buffer import Buffer, NewReading, Write
from edge.cloud_client import Answer, CloudClient, TransportError
from edge.config import CloudConfig, SyncConfig
from edge.metrics import EdgeMetrics
from edge.sync import SensorSync
from tests.edge.helpers import Bound, EdgeProcess, RealCloud, write_config


def edge_for(cloud: RealCloud, tmp_path: Path, *sensors: Bound) -> EdgeProcess:
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        batch_size=7,
        sensors=[
            {
                "sensor_id": b.sensor_id,
                "token": b.token,
                "run_id": b.run_id,
                "capture_session_id": b.session_id,
                "source": "mqtt",
            }
            for b in sensors
        ],
    )
    return EdgeProcess(cfg, tmp_path / "edge.log")


def capture(tmp_path: Path, sensor: Bound, seqs: range, start: datetime) -> None:
    """Readings committed by a source (the daemon's own commit path, minus the transport)."""
    buf = Buffer(tmp_path / "buffer.db")
    try:
        buf.upsert_sensor(sensor.sensor_id, sensor.token, "mqtt", sensor.run_id, sensor.session_id)
        buf.commit(
            [
                Write(
                    [
                        NewReading(
                            sensor.sensor_id,
                            start + timedelta(milliseconds=10 * s),
                            float(s),
                            {"seq": s},
                        )
                        for s in seqs
                    ]
                )
            ]
        )
    finally:
        buf.close()


def seqs_in_cloud(cloud: RealCloud, b: Bound) -> list[int]:
    items = sorted(cloud.telemetry(b), key=lambda i: i["timestamp"])
    return [int(i["meta"]["seq"]) for i in items]


def test_outage_then_flush_syncs_everything_in_order_and_late(
    cloud: RealCloud, tmp_path: Path
) -> None:
    (a,) = cloud.bootstrap(1)
    edge = edge_for(cloud, tmp_path, a)
    t0 = datetime.now(UTC)
    capture(tmp_path, a, range(0, 20), t0)
    assert edge.cli("flush").returncode == 0
    assert seqs_in_cloud(cloud, a) == list(range(20))

    cloud.stop()  # the outage: the bench keeps capturing
    capture(tmp_path, a, range(20, 60), t0)
    down = edge.cli("flush")
    assert down.returncode == 1 and "gave up for now" in down.stdout
    status = json.loads(edge.cli("status", "--json").stdout)["sensors"][a.sensor_id]
    assert status["pending"] == 40 and status["last_error"]

    cloud.start()
    cloud.stop_session(a)  # stopped in the cloud while the bench was offline
    ok = edge.cli("flush")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert seqs_in_cloud(cloud, a) == list(range(60))  # in order, nothing doubled
    late = [i for i in cloud.telemetry(a) if i["late"]]
    assert len(late) == 40

    # replay of the whole range re-sends the original batches: the cloud keeps one copy
    since = (t0 - timedelta(seconds=1)).isoformat()
    until = (t0 + timedelta(seconds=5)).isoformat()
    replay = edge.cli("replay", "--since", since, "--until", until)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "9 synced batch(es)" in replay.stdout  # ceil(20/7) + ceil(40/7)
    assert seqs_in_cloud(cloud, a) == list(range(60))


class LoseFirstResponse:
    """The real client to the real cloud, whose first answer is lost on its way back (after
    the cloud committed): a timeout, for the sync loop."""

    def __init__(self, inner: CloudClient) -> None:
        self.inner = inner
        self.keys: list[str] = []

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> Answer:
        self.keys.append(headers["Idempotency-Key"])
        answer = await self.inner.post(path, content, headers)
        if len(self.keys) == 1:
            raise TransportError("TimeoutError: the answer was lost after the cloud committed")
        return answer


async def test_timeout_after_commit_is_not_a_duplicate(cloud: RealCloud, tmp_path: Path) -> None:
    (a,) = cloud.bootstrap(1)
    capture(tmp_path, a, range(5), datetime.now(UTC))
    buf = Buffer(tmp_path / "buffer.db")
    try:
        async with CloudClient(CloudConfig(url=cloud.url)) as client:
            lossy = LoseFirstResponse(client)
            s = SensorSync(a.sensor_id, buf, lossy, SyncConfig(), EdgeMetrics())
            await s.seal(everything=True)
            first = await s.step()
            second = await s.step()
    finally:
        buf.close()
    assert first is not None and first.kind == "retry"
    assert second is not None and second.kind == "synced"
    assert lossy.keys[0] == lossy.keys[1]
    assert seqs_in_cloud(cloud, a) == [0, 1, 2, 3, 4]


def test_bind_moves_following_readings_and_dead_letter_retry(
    cloud: RealCloud, tmp_path: Path
) -> None:
    a, b = cloud.bootstrap(2)
    edge = edge_for(cloud, tmp_path, a)
    t0 = datetime.now(UTC)
    capture(tmp_path, a, range(3), t0)
    # another run/session of the same project, bound at runtime
    with cloud.client(**a.user) as c:
        ses = c.post(
            f"/api/v1/runs/{a.run_id}/capture-sessions/{a.session_id}/stop",
            json={"status": "succeeded"},
        )
        assert ses.status_code < 300
        s2 = c.post(
            f"/api/v1/runs/{a.run_id}/capture-sessions",
            json={"ordinal_number": 2, "status": "running"},
        ).json()
    s2_id = s2.get("capture_session_id") or s2["id"]
    bound = edge.cli("bind", a.sensor_id, "--run-id", a.run_id, "--capture-session-id", s2_id)
    assert bound.returncode == 0, bound.stdout
    capture(tmp_path, a, range(3, 6), t0 + timedelta(seconds=5))
    # a batch for a session that does not exist is refused for good -> dead letter
    bogus = str(uuid.uuid4())
    edge.cli("bind", a.sensor_id, "--run-id", a.run_id, "--capture-session-id", bogus)
    capture(tmp_path, a, range(6, 8), t0 + timedelta(seconds=6))
    assert edge.cli("flush").returncode == 0
    assert seqs_in_cloud(cloud, a) == [0, 1, 2]
    assert [
        int(i["meta"]["seq"])
        for i in cloud.telemetry(Bound(a.sensor_id, a.token, a.run_id, s2_id, a.project_id, a.user))
    ] == [3, 4, 5]
    listing = edge.cli("dead-letter", "list").stdout
    assert "batch" in listing and ("404" in listing or "422" in listing), listing
    assert json.loads(edge.cli("status", "--json").stdout)["sensors"][a.sensor_id]["dead"] == 2
    retried = edge.cli("dead-letter", "retry")
    assert "1 batch(es) queued again" in retried.stdout
    assert edge.cli("flush").returncode == 0  # dead again: the session still does not exist
    assert json.loads(edge.cli("status", "--json").stdout)["dead_letters"] == 1
    assert b.sensor_id not in edge.cli("status").stdout


def test_a_stopped_session_takes_the_in_window_readings_of_a_mixed_batch(
    cloud: RealCloud, tmp_path: Path
) -> None:
    """Offline, readings from before and after the cloud-side stop land in one batch: the
    cloud refuses the ones after the stop (422 naming them), the others must still arrive."""
    (a,) = cloud.bootstrap(1)
    edge = edge_for(cloud, tmp_path, a)
    t0 = datetime.now(UTC)
    capture(tmp_path, a, range(0, 4), t0)  # in the window (t0 .. t0 + 30 ms)
    time.sleep(0.2)  # the stop comes after the last of them
    cloud.stop_session(a)
    capture(tmp_path, a, range(4, 6), datetime.now(UTC) + timedelta(seconds=5))  # after it
    out = edge.cli("flush")
    assert out.returncode == 0, out.stdout + out.stderr
    assert seqs_in_cloud(cloud, a) == [0, 1, 2, 3]
    dead = json.loads(edge.cli("dead-letter", "list", "--json").stdout)
    assert len(dead) == 1 and "readings.4" in dead[0]["reason"]
    status = json.loads(edge.cli("status", "--json").stdout)["sensors"][a.sensor_id]
    assert (status["synced"], status["dead"], status["pending"]) == (4, 2, 0)


def test_readings_from_before_the_session_are_dead_lettered_and_the_rest_stored(
    cloud: RealCloud, tmp_path: Path
) -> None:
    """A buffer holding readings from long before the session (a wrong bench clock, an old
    backlog bound to a new session): the cloud refuses exactly those, the edge dead-letters
    exactly those, once, and delivers the others."""
    (a,) = cloud.bootstrap(1)
    edge = edge_for(cloud, tmp_path, a)
    capture(tmp_path, a, range(0, 3), datetime.now(UTC) - timedelta(hours=1))
    capture(tmp_path, a, range(3, 10), datetime.now(UTC))
    out = edge.cli("flush")
    assert out.returncode == 0, out.stdout + out.stderr
    assert seqs_in_cloud(cloud, a) == list(range(3, 10))
    dead = json.loads(edge.cli("dead-letter", "list", "--json").stdout)
    assert len(dead) == 1, dead
    assert "before its capture session started" in dead[0]["reason"]
    status = json.loads(edge.cli("status", "--json").stdout)["sensors"][a.sensor_id]
    assert (status["synced"], status["dead"], status["pending"]) == (7, 3, 0)
    # Not retried: a second flush has nothing to send.
    again = edge.cli("flush")
    assert again.returncode == 0, again.stdout + again.stderr
    status = json.loads(edge.cli("status", "--json").stdout)["sensors"][a.sensor_id]
    assert (status["synced"], status["dead"], status["pending"]) == (7, 3, 0)


def test_a_second_edge_s_copies_are_dropped_and_its_other_value_dead_lettered(
    cloud: RealCloud, tmp_path: Path
) -> None:
    """Two edges deliver the same sensor's readings (a shared MQTT session, say): the copies
    are stored once; a reading the second one has with another value at a stored timestamp
    is refused and dead-lettered on that edge, alone."""
    (a,) = cloud.bootstrap(1)
    t0 = datetime.now(UTC)
    first = edge_for(cloud, tmp_path, a)
    capture(tmp_path, a, range(0, 5), t0)
    assert first.cli("flush").returncode == 0

    other = tmp_path / "second-edge"
    other.mkdir()
    second = edge_for(cloud, other, a)
    buf = Buffer(other / "buffer.db")
    try:
        buf.upsert_sensor(a.sensor_id, a.token, "mqtt", a.run_id, a.session_id)
        buf.commit(
            [
                Write(
                    [
                        NewReading(
                            a.sensor_id,
                            t0 + timedelta(milliseconds=10 * s),
                            99.0 if s == 2 else float(s),
                            {"seq": s},
                        )
                        for s in range(0, 5)
                    ]
                )
            ]
        )
    finally:
        buf.close()
    out = second.cli("flush")
    assert out.returncode == 0, out.stdout + out.stderr
    items = sorted(cloud.telemetry(a), key=lambda i: i["timestamp"])
    assert [i["raw_value"] for i in items] == [0.0, 1.0, 2.0, 3.0, 4.0]  # once, the first's
    dead = json.loads(second.cli("dead-letter", "list", "--json").stdout)
    assert len(dead) == 1, dead
    assert "already has a reading at this timestamp with raw_value 2.0" in dead[0]["reason"]
    status = json.loads(second.cli("status", "--json").stdout)["sensors"][a.sensor_id]
    assert (status["synced"], status["dead"], status["pending"]) == (4, 1, 0)


def test_dead_letter_retry_after_a_token_rotation_sends_the_configs_token(
    cloud: RealCloud, tmp_path: Path
) -> None:
    """No daemon in between: the buffer still holds the token of its last start, and a retry
    must not send that one again (it dead-lettered every batch a second time)."""
    (a,) = cloud.bootstrap(1)
    old = Bound(a.sensor_id, "bl_rotated-away", a.run_id, a.session_id, a.project_id, a.user)
    edge = edge_for(cloud, tmp_path, old)
    capture(tmp_path, old, range(56), datetime.now(UTC))  # 8 batches of 7
    first = edge.cli("flush")
    assert "dead-lettered 8, of 8" in first.stdout, first.stdout + first.stderr
    edge_for(cloud, tmp_path, a)  # the new token written to the config
    retried = edge.cli("dead-letter", "retry")
    assert "8 batch(es) queued again" in retried.stdout
    again = edge.cli("flush")
    assert "synced 8 batch(es), dead-lettered 0, of 8" in again.stdout, again.stdout
    assert seqs_in_cloud(cloud, a) == list(range(56))
