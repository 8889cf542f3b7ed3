"""The hub on its own: bounded queues, the ring buffer behind resume."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cloud.live.hub import BatchHeader, Hub, LiveEvent, SlowConsumer, StreamFilter, pump

PROJECT, SENSOR, RUN, SESSION = (uuid.uuid4() for _ in range(4))


def header(batch_id: int, sensor: uuid.UUID = SENSOR) -> BatchHeader:
    return BatchHeader(batch_id, PROJECT, sensor, RUN, SESSION, "C", "v1")


def rows(n: int) -> list[tuple[str, float, float, bool]]:
    return [("2026-01-01T00:00:00+00:00", float(i), float(i), False) for i in range(n)]


async def test_a_big_batch_fits_an_empty_queue_but_a_backlog_beyond_the_bound_overflows() -> None:
    hub = Hub(ring_size=1000, queue_size=10)
    sub = hub.subscribe(StreamFilter(PROJECT, sensor_id=SENSOR))
    hub.dispatch(header(1), 0, rows(50))  # one batch larger than the bound: taken whole
    assert not sub.overflowed.is_set()
    hub.dispatch(header(2), 0, rows(1))  # but nothing more while 50 wait
    assert sub.overflowed.is_set() and sub.dropped == 1

    async def never(_: object) -> None:
        raise AssertionError("an overflowed subscriber gets nothing more")

    with pytest.raises(SlowConsumer):
        await pump(sub, never)


async def test_a_stalled_send_is_abandoned_when_the_queue_overflows() -> None:
    hub = Hub(queue_size=10)
    sub = hub.subscribe(StreamFilter(PROJECT, run_id=RUN))
    stalled = asyncio.Event()

    async def stall(_: object) -> None:
        stalled.set()
        await asyncio.Event().wait()  # a client that never reads

    task = asyncio.create_task(pump(sub, stall))
    hub.dispatch(header(1), 0, rows(5))
    await stalled.wait()
    for b in range(2, 5):
        hub.dispatch(header(b), 0, rows(5))
    with pytest.raises(SlowConsumer):
        await asyncio.wait_for(task, 1)


def test_resume_replays_after_the_id_and_says_when_it_is_no_longer_buffered() -> None:
    hub = Hub(ring_size=100)
    other = uuid.uuid4()
    hub.dispatch(header(1), 0, rows(3))
    hub.dispatch(header(2, sensor=other), 0, rows(2))
    hub.dispatch(header(3), 0, rows(2))
    sub = hub.subscribe(StreamFilter(PROJECT, sensor_id=SENSOR), last_event_id="1-1")
    assert [e.id for e in sub.backlog] == ["1-2", "3-0", "3-1"]
    for b in range(4, 60):
        hub.dispatch(header(b), 0, rows(2))  # 112 more events: batch 1 leaves the ring
    lost = hub.subscribe(StreamFilter(PROJECT, sensor_id=SENSOR), last_event_id="1-1")
    assert lost.resume_lost and lost.backlog == []
    kept = hub.subscribe(StreamFilter(PROJECT, sensor_id=SENSOR), last_event_id="58-1")
    assert [e.id for e in kept.backlog] == ["59-0", "59-1"]


def test_an_event_is_encoded_once_for_every_client() -> None:
    ev = LiveEvent(header(9), 4, ("2026-01-01T00:00:00+00:00", 1.0, 33.8, True))
    assert ev.json is ev.json
    assert ev.message()["id"] == "9-4" and ev.message()["late"] is True
