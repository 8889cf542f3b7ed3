"""A filesystem that fills before the disk budget: the full-buffer policy, not a failure storm.

The buffer lives on a small tmpfs mounted for the test (root is needed; where mounting is not
allowed the tests skip and say why), a filler file takes the rest of the space.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from edge.buffer import Buffer, BufferFull, NewReading, Write
from edge.metrics import EdgeMetrics
from edge.writer import Writer
from tests.edge.helpers import (
    BIN,
    EdgeProcess,
    RealCloud,
    running,
    serial_sensor,
    simulator,
    wait_for,
    write_config,
)
from tests.support.mqtt import Publisher
from tests.support.services import Broker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MiB = 1024 * 1024
#: what the tests keep free (the setting's floor is 1 MB; it must hold a checkpoint of the WAL)
RESERVE = 6 * MiB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs: a filesystem that really fills (ENOSPC -> SQLITE_FULL)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (root needed): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(filler: Path, leave: int) -> None:
    """Grow (or shrink) ``filler`` so that ``leave`` bytes stay free on its filesystem."""
    have = filler.stat().st_size if filler.exists() else 0
    size = max(0, have + free_bytes(filler.parent) - leave)
    with filler.open("ab") as f:
        f.truncate(size)
        if size > have:
            os.posix_fallocate(f.fileno(), have, size - have)


def readings(sid: str, start: int, n: int) -> list[NewReading]:
    return [
        NewReading(sid, T0 + timedelta(milliseconds=start + k), float(start + k)) for k in range(n)
    ]


class Offer:
    """A serial-like source: writes handed to the writer, each committed or refused."""

    def __init__(self, writer: Writer, sid: str) -> None:
        self.writer, self.sid = writer, sid
        self.offered = self.committed = self.refused = 0
        self.stored: list[float] = []
        self.causes: set[str] = set()

    async def write(self, n: int) -> bool:
        batch = readings(self.sid, self.offered, n)
        self.offered += n
        try:
            result = await self.writer.submit(Write(batch))
        except BufferFull as exc:
            self.refused += n
            self.causes.add(exc.cause)
            return False
        assert result.committed == n
        self.committed += n
        self.stored += [r.raw_value for r in batch]
        return True

    async def until_refused(self, n: int, times: int) -> None:
        refusals = 0
        while refusals < times:
            if not await self.write(n):
                refusals += 1


def stored(buf: Buffer) -> list[float]:
    return [r[0] for r in buf.conn.execute("SELECT raw_value FROM readings ORDER BY id")]


def dead_letters(buf: Buffer) -> int:
    return int(buf.conn.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0])


def writer_lines(caplog: pytest.LogCaptureFixture, level: int, text: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "benchlink.edge.writer" and r.levelno == level and text in r.getMessage()
    )


async def test_a_filling_filesystem_refuses_counts_every_reading_and_recovers(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = small_fs / "buffer.db"
    buf = Buffer(path, min_free_bytes=RESERVE)
    sid = "sensor-1"
    buf.upsert_sensor(sid, "token", "serial", "run", "session")
    filler = small_fs / "filler"
    fill(filler, leave=RESERVE + 3 * MiB)  # far below the budget (2 GB)
    metrics = EdgeMetrics()
    writer = Writer(buf, metrics)
    task = asyncio.create_task(writer.run())
    src = Offer(writer, sid)
    try:
        # 1. The buffer itself fills the disk down to the reserve: refused, counted.
        await src.until_refused(50, times=20)
        assert src.causes == {"disk"}
        assert src.committed > 0 and src.refused == 20 * 50
        assert src.offered == src.committed + src.refused
        assert stored(buf) == src.stored  # every committed reading, nothing else
        assert buf.disk_room() < RESERVE
        assert buf.status()["full"] == "disk"
        # the reserve is what is left: the buffer never ate it
        assert free_bytes(small_fs) > RESERVE // 2

        # 2. Another process eats the reserve: a commit that fails with SQLITE_FULL refuses
        # its whole group (nothing dead-lettered: that needs space too) and nothing is lost.
        fill(filler, leave=0)
        buf.min_free_bytes = 1  # the check passes; the write itself hits the full disk
        assert not await src.write(5000)
        await src.until_refused(50, times=5)
        buf.min_free_bytes = RESERVE
        assert src.offered == src.committed + src.refused
        assert dead_letters(buf) == 0
        assert stored(buf) == src.stored

        # one ERROR for the whole episode, no traceback at all
        assert writer_lines(caplog, logging.ERROR, "BUFFER FULL: the disk is full") == 1
        assert not [r for r in caplog.records if r.exc_info]
        refusals = metrics.errors.labels("buffer_full")._value.get()
        assert refusals == 1 + 20 + 5  # one per refused write

        # 3. Space comes back: capture resumes at once, the end of the episode logged once.
        filler.unlink()
        assert await src.write(50)
        assert writer.full is None
        assert writer_lines(caplog, logging.WARNING, "takes new readings again") == 1
        for _ in range(10):
            assert await src.write(50)
        assert writer_lines(caplog, logging.WARNING, "takes new readings again") == 1
        assert buf.status()["full"] is None
        assert src.offered == src.committed + src.refused
    finally:
        await writer.close()
        await task
        buf.close()
    again = Buffer(path, min_free_bytes=RESERVE)
    try:
        assert stored(again) == src.stored  # reopened: every committed reading is there
    finally:
        again.close()


async def test_synced_rows_are_pruned_to_make_room_on_a_full_disk(small_fs: Path) -> None:
    """The disk at its reserve with a synced backlog: the next commit prunes it and goes in
    (the file keeps its size; its free pages are room the buffer reuses)."""
    buf = Buffer(small_fs / "buffer.db", min_free_bytes=RESERVE)
    sid = "sensor-1"
    buf.upsert_sensor(sid, "token", "serial", "run", "session")
    fill(small_fs / "filler", leave=RESERVE + 3 * MiB)
    writer = Writer(buf, EdgeMetrics())
    task = asyncio.create_task(writer.run())
    src = Offer(writer, sid)
    try:
        await src.until_refused(200, times=3)
        # what sync does once the cloud takes the backlog (batches sealed, then synced)
        while buf.seal(sid, 1000):
            pass
        while (batch := buf.next_batch(sid)) is not None:
            buf.mark_inflight(batch.id)
            buf.mark_synced(batch.id, batch.count, 0)
        assert buf.disk_room() < RESERVE  # the disk alone has no room: only pruning helps
        assert await src.write(200)  # the synced rows pruned, their pages reused
        assert writer.full is None
        assert buf.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 200
        for _ in range(20):
            assert await src.write(200)
        assert stored(buf) == src.stored[-21 * 200 :]
    finally:
        await writer.close()
        await task
        buf.close()


def metric(edge: EdgeProcess, name: str) -> float:
    """``name`` summed from the running daemon's metrics."""
    port = re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", edge.log.read_text())[-1]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_daemon_on_a_full_disk_drops_serial_lines_counted_and_resumes_after_sync(
    small_fs: Path, cloud: RealCloud, tmp_path: Path
) -> None:
    """The real daemon, a simulated serial device, the cloud away: the disk fills, lines are
    dropped and counted, status names the disk; the cloud back, the backlog drains, synced
    rows make room and capture resumes. Every committed reading reaches the cloud."""
    (a,) = cloud.bootstrap(1)
    cloud.stop()  # an outage: the backlog stays on the edge
    link = tmp_path / "ttySIM"
    with simulator(link, "--protocol", "value", "--rate", "1000", "--seed", "3") as sim:
        cfg = write_config(
            tmp_path / "edge.toml",
            cloud_url=cloud.url,
            buffer=small_fs / "buffer.db",
            interval_s=0.1,
            batch_size=500,
            sensors=[serial_sensor(a, link)],
        )
        text = cfg.read_text().replace("[buffer]\n", f"[buffer]\nmin_free_bytes = {RESERVE}\n")
        cfg.write_text(text)
        fill(small_fs / "filler", leave=RESERVE + 2 * MiB)
        edge = EdgeProcess(cfg, tmp_path / "edge.log")
        with running(edge):
            wait_for(lambda: "the disk is full" in edge.log.read_text(), 120, "a full disk")
            wait_for(
                lambda: (
                    metric(edge, 'benchlink_edge_readings_dropped_total{reason="buffer_full"')
                    > 1000
                ),
                60,
                "serial lines dropped and counted",
            )
            out = edge.cli("status")
            assert out.returncode == 0 and "FULL (disk)" in out.stdout, out.stdout + out.stderr
            js = json.loads(edge.cli("status", "--json").stdout)
            assert js["buffer"]["full"] == "disk"
            assert js["buffer"]["disk_room_bytes"] < RESERVE
            assert js["buffer"]["min_free_bytes"] == RESERVE

            cloud.start()  # the backlog drains, synced rows make room, capture resumes
            wait_for(
                lambda: "buffer takes new readings again" in edge.log.read_text(),
                120,
                "capture to resume",
            )
            resumed = metric(edge, 'benchlink_edge_readings_committed_total{source="serial"')
            wait_for(
                lambda: (
                    metric(edge, 'benchlink_edge_readings_committed_total{source="serial"')
                    > resumed + 1000
                ),
                60,
                "readings committed after the episode",
            )
            sim.terminate()
            sim.wait(10)
            committed = metric(edge, 'benchlink_edge_readings_committed_total{source="serial"')
            wait_for(
                lambda: len(cloud.telemetry(a)) >= committed, 120, "every committed reading synced"
            )
            assert len(cloud.telemetry(a)) == committed  # each once: none lost, none twice
            log = edge.log.read_text()
            assert edge.terminate() == 0
        # one ERROR line per episode, never a traceback
        assert log.count("BUFFER FULL") == 1, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


def test_a_reserve_below_the_floor_is_refused_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[buffer]\npath = "{tmp_path / "b.db"}"\nmin_free_bytes = 4096\n')
    out = subprocess.run(
        [str(BIN / "benchlink-edge"), "--config", str(cfg), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 78, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "buffer.min_free_bytes: Input should be greater than or equal to 1000000" in line
    assert "Traceback" not in out.stderr


@pytest.mark.mqtt
def test_daemon_on_a_full_disk_leaves_mqtt_messages_at_the_broker_until_space_comes_back(
    small_fs: Path, mosquitto: Broker, cloud: RealCloud, tmp_path: Path
) -> None:
    """Mosquitto -> the real daemon on a disk already down to its reserve: nothing is
    acknowledged, the broker keeps every message; the filler removed, each is committed once
    and reaches the cloud."""
    (a,) = cloud.bootstrap(1)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=small_fs / "buffer.db",
        mqtt_url=mosquitto.url,
        sensors=[
            {
                "sensor_id": a.sensor_id,
                "token": a.token,
                "run_id": a.run_id,
                "capture_session_id": a.session_id,
                "source": "mqtt",
            }
        ],
    )
    text = cfg.read_text().replace("[buffer]\n", f"[buffer]\nmin_free_bytes = {RESERVE}\n")
    cfg.write_text(text)
    filler = small_fs / "filler"
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    sent = [float(1000 + i) for i in range(300)]
    with running(edge):
        wait_for(lambda: "MQTT: connected" in edge.log.read_text(), 30, "the MQTT subscription")
        fill(filler, leave=RESERVE - MiB)  # another program fills the disk
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            for v in sent:  # the broker acknowledges the device: they are its now
                assert pub.publish(f"benchlink/sensors/{a.sensor_id}/readings", f"{v}")
        wait_for(lambda: "the disk is full" in edge.log.read_text(), 60, "a full disk")
        js = json.loads(edge.cli("status", "--json").stdout)
        assert js["buffer"]["full"] == "disk"
        sensor = js["sensors"][a.sensor_id]
        assert sensor["waiting"] == 0 and sensor["synced"] == 0  # none committed
        assert cloud.telemetry(a) == []

        filler.unlink()  # space comes back: the held messages go in, in order, once
        wait_for(lambda: len(cloud.telemetry(a)) >= len(sent), 60, "every message synced")
        got = collections.Counter(i["raw_value"] for i in cloud.telemetry(a))
        assert got == collections.Counter(sent)
        log = edge.log.read_text()
        assert edge.terminate() == 0
    assert log.count("BUFFER FULL") == 1, log[-3000:]
    assert log.count("buffer takes new readings again") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
