"""The group commit: one write that cannot be stored must not fail the others."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from edge.buffer import Buffer, BufferFull, Delivery, NewReading, Write, WriteResult
from edge.metrics import EdgeMetrics
from edge.writer import Writer

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FaultyBuffer(Buffer):
    """A buffer whose transaction fails whenever it contains the reading 666 (a fault at a
    precise moment: a constraint, a full disk, a bug in one write's rows)."""

    def commit(self, writes: Sequence[Write]) -> list[WriteResult | BufferFull]:
        if any(r.raw_value == 666 for w in writes for r in w.readings):
            raise sqlite3.IntegrityError("a write that cannot be stored")
        return super().commit(writes)


async def test_a_failing_write_is_dead_lettered_and_the_rest_of_its_group_commits(
    tmp_path: Path,
) -> None:
    buf = FaultyBuffer(tmp_path / "b.db")
    buf.upsert_sensor("s", "t", "mqtt", "r", "c")
    writer = Writer(buf, EdgeMetrics())
    try:
        task = asyncio.create_task(writer.run())
        futures = [
            writer.enqueue(
                Write([NewReading("s", T0, v)], source="mqtt", delivery=Delivery((i, "d")))
            )
            for i, v in enumerate([1.0, 666.0, 3.0])
        ]
        results = await asyncio.gather(*futures)
        await writer.close()
        await task
        assert [(r.committed, r.dead) for r in results] == [(1, 0), (0, 1), (1, 0)]
        values = [r[0] for r in buf.conn.execute("SELECT raw_value FROM readings ORDER BY id")]
        assert values == [1.0, 3.0]
        (dead,) = buf.dead_letters()
        assert dead["kind"] == "write" and "IntegrityError" in dead["reason"]
        # the MQTT message of the dead write is remembered like any committed one
        assert buf.conn.execute("SELECT COUNT(*) FROM mqtt_unacked").fetchone()[0] == 3
    finally:
        buf.close()


async def test_watchdog_health_needs_progress(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.db")
    writer = Writer(buf, EdgeMetrics())
    try:
        assert not writer.healthy(1.0)  # not running
        writer.state = "running"
        assert writer.healthy(1.0)  # idle with an empty queue
        writer.queue.put_nowait(None)
        writer.last_commit = time.monotonic() - 5
        assert not writer.healthy(1.0)  # a queue, and no commit for 5 s
        writer.queue.get_nowait()
        writer.committing_since = time.monotonic() - 5
        assert not writer.healthy(1.0)  # stuck inside one commit
    finally:
        buf.close()


async def test_a_burst_handed_over_at_once_resolves_with_each_writes_outcome(
    tmp_path: Path,
) -> None:
    """``enqueue_many`` (a burst of MQTT messages): one future, each write's own outcome in
    order -- also when the group falls back to one write at a time -- and a full buffer is an
    outcome in the list, not an exception that would hide what did go in."""
    buf = FaultyBuffer(tmp_path / "b.db")
    buf.upsert_sensor("s", "t", "mqtt", "r", "c")
    writer = Writer(buf, EdgeMetrics())
    try:
        task = asyncio.create_task(writer.run())
        burst = [
            Write([NewReading("s", T0, v)], source="mqtt", delivery=Delivery((i, "d")))
            for i, v in enumerate([1.0, 666.0, 3.0])
        ]
        results = await writer.enqueue_many(burst)
        assert [(r.committed, r.dead) for r in results if isinstance(r, WriteResult)] == [
            (1, 0),
            (0, 1),
            (1, 0),
        ]
        buf.max_bytes = 1  # full from now on
        refused = await writer.enqueue_many([Write([NewReading("s", T0, 4.0)], source="mqtt")])
        assert [type(r) for r in refused] == [BufferFull]
        buf.max_bytes = 2_000_000_000
        # the source is blocked until it probes: a later burst is refused even with room
        later = await writer.enqueue_many([Write([NewReading("s", T0, 5.0)], source="mqtt")])
        assert [type(r) for r in later] == [BufferFull]
        (probe,) = await writer.enqueue_many(
            [Write([NewReading("s", T0, 4.0)], source="mqtt")], probe=True
        )
        assert isinstance(probe, WriteResult) and probe.committed == 1
        await writer.close()
        await task
        values = [r[0] for r in buf.conn.execute("SELECT raw_value FROM readings ORDER BY id")]
        assert values == [1.0, 3.0, 4.0]
    finally:
        buf.close()
