"""The hub on its own: rows read only where someone watches, order, bounded queues, resume.

The store here is a dict (the database store is exercised by the server tests); it counts
what the hub asks of it."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from cloud import utctime
from cloud.live.events import BatchHeader, LiveEvent, Row, StreamFilter
from cloud.live.hub import Hub
from cloud.live.subscriber import SlowConsumer, Subscriber, pump
from cloud.store.telemetry.base import StoredBatch

PROJECT, SENSOR, RUN, SESSION = (uuid.uuid4() for _ in range(4))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def header(
    batch_id: int, n: int = 1, sensor: uuid.UUID = SENSOR, position: int | None = None
) -> BatchHeader:
    return BatchHeader(batch_id, PROJECT, sensor, RUN, SESSION, "C", "v1", n, T0, T0, position)


def stored(batch_id: int, raw: float, value: float, late: bool) -> StoredBatch:
    """One reading as ingest leaves it in this process."""
    return StoredBatch(
        batch_id, PROJECT, SENSOR, RUN, SESSION, "v1", late, [T0], [utctime.micros(T0)],
        [raw], [value], [None],
    )  # fmt: skip


def rows(n: int, base: float = 0.0) -> list[Row]:
    return [(T0.isoformat(), base + i, base + i, False) for i in range(n)]


class DictStore:
    """Batches by id, in commit order (position, else id); counts reads; a read may be held
    back by an event."""

    def __init__(self) -> None:
        self.batches: dict[int, tuple[BatchHeader, list[Row]]] = {}
        self.reads: list[int] = []
        self.gate: threading.Event | None = None  # holds back both reads
        self.rows_gate: threading.Event | None = None  # holds back the rows' read
        self.reading_rows = threading.Event()
        self.positions_read = 0

    def add(self, h: BatchHeader, base: float = 0.0) -> BatchHeader:
        self.batches[h.batch_id] = (h, rows(h.count, base))
        return h

    def rows(self, headers: Sequence[BatchHeader]) -> dict[int, list[Row]]:
        self.reading_rows.set()
        for gate in (self.gate, self.rows_gate):
            if gate is not None:
                gate.wait(5)
        self.reads += [h.batch_id for h in headers]
        return {h.batch_id: self.batches[h.batch_id][1] for h in headers}

    def headers_after(
        self, flt: StreamFilter, batch_id: int, limit: int
    ) -> list[BatchHeader] | None:
        if self.gate is not None:
            self.gate.wait(5)
        if batch_id not in self.batches:
            return None
        order = sorted((h.position or h.batch_id, h) for h, _ in self.batches.values())
        since = next(k for k, h in order if h.batch_id == batch_id)
        out = [h for k, h in order if k >= since and flt.matches(h)]
        return out if out and out[0].batch_id == batch_id else None

    def position(self) -> int:
        self.positions_read += 1
        return max((h.position or 0 for h, _ in self.batches.values()), default=0)

    def headers_since(
        self, flt: StreamFilter, position: int, limit: int
    ) -> list[BatchHeader] | None:
        if position > self.position():
            return None
        order = sorted((h.position or 0, h) for h, _ in self.batches.values())
        return [h for k, h in order if k > position and flt.matches(h)]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


def values(sub: Subscriber) -> list[float]:
    return [ev.row[1] for batch in sub._batches for ev in batch]


async def test_nobody_watching_means_no_rows_read_and_one_read_per_watched_batch() -> None:
    store = DictStore()
    hub = Hub(store=store)
    await hub.start()
    for b in range(1, 51):
        hub.announce(store.add(header(b, 100)))
    await settle()
    assert store.reads == []  # 50 headers decoded, nothing read

    other = uuid.uuid4()
    subs = [hub.subscribe_now(StreamFilter(PROJECT, sensor_id=SENSOR)) for _ in range(3)]
    hub.announce(store.add(header(51, 10, sensor=other)))  # nobody watches that sensor
    hub.announce(store.add(header(52, 10)))
    await settle()
    assert store.reads == [52]  # once, for three subscribers
    assert all(values(s) == [float(i) for i in range(10)] for s in subs)
    await hub.stop()


async def test_rows_the_ingest_left_here_are_not_read_back() -> None:
    store = DictStore()
    hub = Hub(store=store)
    await hub.start()
    sub = hub.subscribe_now(StreamFilter(PROJECT, run_id=RUN))
    hub.announce(header(1), stored(1, 1.5, 4.0, True))
    await settle()
    assert store.reads == []
    (ev,) = sub._batches[0]
    assert ev.row == (T0.isoformat(), 1.5, 4.0, True) and ev.id == "1-0"
    await hub.stop()


async def test_a_slow_read_holds_back_the_batches_announced_after_it() -> None:
    store = DictStore()
    store.gate = threading.Event()
    hub = Hub(store=store)
    await hub.start()
    sub = hub.subscribe_now(StreamFilter(PROJECT, sensor_id=SENSOR))
    hub.announce(store.add(header(1, 2)))  # read from the store: held at the gate
    hub.announce(header(2, 1), stored(2, 9.0, 9.0, False))
    await settle()
    assert values(sub) == []
    store.gate.set()
    await settle()
    assert values(sub) == [0.0, 1.0, 9.0]
    await hub.stop()


async def test_a_failed_read_cuts_the_watchers_off_so_that_they_resume_without_a_gap() -> None:
    store = DictStore()
    hub = Hub(store=store)
    await hub.start()
    sub = hub.subscribe_now(StreamFilter(PROJECT, sensor_id=SENSOR))

    async def nothing_expected(_: object) -> None:
        raise AssertionError("nothing to send")

    # An idle client waits in its pump: being cut off must end that wait (it used to set a
    # flag nobody looked at while waiting, leaving the client connected and deaf for good).
    pumping = asyncio.create_task(pump(sub, nothing_expected))
    await settle()
    hub.announce(header(1, 3))  # not in the store: the read raises
    with pytest.raises(SlowConsumer) as cut:
        await asyncio.wait_for(pumping, 1)
    assert sub.dropped == 3
    assert cut.value.reason == "read_failed"  # not the client's fault: the notice says so
    await hub.stop()


async def test_a_read_short_of_the_batch_count_is_a_failed_read_not_a_silent_gap() -> None:
    store = DictStore()
    hub = Hub(store=store)
    await hub.start()
    sub = hub.subscribe_now(StreamFilter(PROJECT, sensor_id=SENSOR))
    store.add(header(1, 2))
    store.batches[2] = (header(2, 3), rows(2))  # the header says 3 readings
    store.add(header(3, 1))
    for b in (1, 2, 3):
        hub.announce(store.batches[b][0])
    await settle()
    assert sub.overflowed.is_set() and sub.dropped >= 3
    assert values(sub) == [0.0, 1.0]  # batch 1 only: nothing after the gap
    await hub.stop()


async def test_resync_cuts_every_subscriber_off_and_forgets_the_ring() -> None:
    hub = Hub(store=DictStore())
    await hub.start()
    subs = [hub.subscribe_now(StreamFilter(PROJECT, sensor_id=s)) for s in (SENSOR, uuid.uuid4())]
    hub.dispatch(header(1), rows(1))
    hub.resync()  # the bus was down: batches of other processes may have gone unheard
    assert all(s.overflowed.is_set() for s in subs)
    assert [s.cut_off_error().reason for s in subs] == ["resync", "resync"]
    # A resume now reads which batches follow from the batch table, not from the ring.
    assert hub._after_in_ring(StreamFilter(PROJECT), 1) is None
    await hub.stop()


async def test_a_big_batch_fits_an_empty_queue_but_a_backlog_beyond_the_bound_overflows() -> None:
    hub = Hub(queue_size=10)
    sub = hub.subscribe_now(StreamFilter(PROJECT, sensor_id=SENSOR))
    hub.dispatch(header(1, 50), rows(50))  # one batch larger than the bound: taken whole
    assert not sub.overflowed.is_set()
    hub.dispatch(header(2), rows(1))  # but nothing more while 50 wait
    assert sub.overflowed.is_set() and sub.dropped == 1

    async def never(_: object) -> None:
        raise AssertionError("an overflowed subscriber gets nothing more")

    with pytest.raises(SlowConsumer) as cut:
        await pump(sub, never)
    assert cut.value.reason == "too_slow" and cut.value.dropped == 1
    sub.cut_off(reason="resync")  # a later cut-off does not rewrite why it happened
    assert sub.cut_off_error().reason == "too_slow"


async def test_closing_the_streams_ends_every_pump_and_every_stream_opened_afterwards() -> None:
    hub = Hub(store=DictStore())
    await hub.start()
    sub = hub.subscribe_now(StreamFilter(PROJECT, sensor_id=SENSOR))

    async def nothing_expected(_: object) -> None:
        raise AssertionError("nothing to send")

    pumping = asyncio.create_task(pump(sub, nothing_expected))
    await settle()
    assert not hub.unwatched.is_set()
    hub.close_streams()
    with pytest.raises(SlowConsumer) as cut:
        await asyncio.wait_for(pumping, 1)
    assert cut.value.reason == "shutdown"
    hub.unsubscribe(sub)
    assert hub.unwatched.is_set()  # what a shutdown waits for
    late = await hub.subscribe(StreamFilter(PROJECT), last_event_id=None)
    assert late.overflowed.is_set() and late.cut_off_error().reason == "shutdown"
    await hub.stop()


async def test_a_stalled_send_is_abandoned_when_the_queue_overflows() -> None:
    hub = Hub(queue_size=10)
    sub = hub.subscribe_now(StreamFilter(PROJECT, run_id=RUN))
    stalled = asyncio.Event()

    async def stall(_: object) -> None:
        stalled.set()
        await asyncio.Event().wait()  # a client that never reads

    task = asyncio.create_task(pump(sub, stall))
    hub.dispatch(header(1, 5), rows(5))
    await stalled.wait()
    for b in range(2, 5):
        hub.dispatch(header(b, 5), rows(5))
    with pytest.raises(SlowConsumer):
        await asyncio.wait_for(task, 1)


async def test_resume_follows_announcement_order_and_reads_rows_from_the_store() -> None:
    store = DictStore()
    hub = Hub(store=store, resume_limit=100)
    other = uuid.uuid4()
    # Batch 3 committed (and was announced) before batch 2: resume follows that order.
    for b, sensor in ((1, SENSOR), (3, SENSOR), (4, other), (2, SENSOR)):
        hub.dispatch(store.add(header(b, 3, sensor=sensor), base=10 * b), None)
    flt = StreamFilter(PROJECT, sensor_id=SENSOR)
    sub = await hub.subscribe(flt, last_event_id="1-1")
    assert [e.id for e in sub.backlog] == ["1-2", "3-0", "3-1", "3-2", "2-0", "2-1", "2-2"]
    assert sub.backlog[1].row[1] == 30.0
    for b in range(5, 60):
        hub.dispatch(store.add(header(b, 2)), None)  # 110 more readings: beyond the limit
    lost = await hub.subscribe(flt, last_event_id="1-1")
    assert lost.resume_lost and lost.backlog == []
    kept = await hub.subscribe(flt, last_event_id="58-1")
    assert [e.id for e in kept.backlog] == ["59-0", "59-1"]
    for bad in ("58-2", "999-0", "nonsense", "4-0"):  # past its end, unknown, not an id, filtered
        assert (await hub.subscribe(flt, last_event_id=bad)).resume_lost, bad


async def test_resume_in_a_process_that_never_saw_the_id_reads_the_batch_table() -> None:
    store = DictStore()
    for b in range(1, 5):
        store.add(header(b, 2), base=10 * b)
    hub = Hub(store=store)  # started after those batches: its ring is empty
    await hub.start()
    flt = StreamFilter(PROJECT, sensor_id=SENSOR)
    store.gate = threading.Event()
    resuming = asyncio.create_task(hub.subscribe(flt, last_event_id="2-0"))
    await settle()
    # Batch 4's notification reaches this process while the resume is being read, and
    # batch 5 is new: each is delivered once, in commit order: batch 4 by the backlog (which
    # has it), its queued copy dropped, so that batch 3 is not delivered after it.
    hub.dispatch(header(4, 2), rows(2, 40))
    store.gate.set()
    sub = await resuming
    hub.dispatch(header(5, 1), rows(1, 50))
    hub.dispatch(header(3, 2), rows(2, 30))  # a late notification of a replayed batch
    assert [e.id for e in sub.backlog] == ["2-1", "3-0", "3-1", "4-0", "4-1"]
    assert [ev.id for batch in sub._batches for ev in batch] == ["5-0"]

    # Announced while the rows (not the batch list) are read: the backlog delivers it.
    store.gate, store.rows_gate = None, threading.Event()
    store.reading_rows.clear()
    resuming = asyncio.create_task(hub.subscribe(flt, last_event_id="2-0"))
    await asyncio.to_thread(store.reading_rows.wait, 5)
    hub.dispatch(header(4, 2), rows(2, 40))
    store.rows_gate.set()
    again = await resuming
    assert [e.id for e in again.backlog][-2:] == ["4-0", "4-1"] and not again._batches
    await hub.stop()


async def test_resume_follows_commit_positions_where_ids_disagree_with_them() -> None:
    """Batch 2 drew its id before batch 3 but committed after it (positions 3 and 2). A
    process that has dispatched neither (it is behind, or started later) resumes from the
    table in commit order, then drops the live batches the client has had already."""
    store = DictStore()
    for b, position in ((1, 1), (3, 2), (2, 3)):
        store.add(header(b, 2, position=position), base=10 * b)
    hub = Hub(store=store)
    await hub.start()
    flt = StreamFilter(PROJECT, sensor_id=SENSOR)
    sub = await hub.subscribe(flt, last_event_id="3-0")
    assert [e.id for e in sub.backlog] == ["3-1", "2-0", "2-1"]
    # The notifications this process had not handled yet come in now, and a new batch.
    store.add(header(4, 2, position=4), base=40)
    for b, position in ((1, 1), (3, 2), (2, 3), (4, 4)):
        hub.dispatch(header(b, 2, position=position), rows(2, 10 * b))
    assert [ev.id for batch in sub._batches for ev in batch] == ["4-0", "4-1"]
    # Resume after batch 2 (the one with the lower id), here from the ring: batch 4 only.
    again = await hub.subscribe(flt, last_event_id="2-1")
    assert [e.id for e in again.backlog] == ["4-0", "4-1"] and again.floor == 3
    await hub.stop()


async def test_a_stream_starts_at_the_highest_position_dispatched_and_resumes_from_it() -> None:
    """A client that has had no reading yet resumes from where its stream started: what
    committed after that position, once, whichever process it comes back to."""
    store = DictStore()
    hub = Hub(store=store, resume_limit=10)
    await hub.start()
    flt = StreamFilter(PROJECT, sensor_id=SENSOR)
    # Positions 1 and 3 dispatched (2 is another sensor's): the stream starts at 3.
    for b, position, sensor in ((1, 1, SENSOR), (2, 2, uuid.uuid4()), (3, 3, SENSOR)):
        hub.dispatch(store.add(header(b, 2, sensor=sensor, position=position)), None)
    sub = await hub.subscribe(flt)
    assert sub.start == "p3" and store.positions_read == 0  # known here: no query
    hub.dispatch(header(3, 2, position=3), rows(2))  # a repeated notification: not again
    hub.dispatch(store.add(header(4, 2, position=4), base=40), rows(2, 40))
    assert [ev.id for batch in sub._batches for ev in batch] == ["4-0", "4-1"]
    hub.unsubscribe(sub)  # the connection drops before the client has read anything

    store.add(header(5, 1, position=5), base=50)  # committed meanwhile, not dispatched yet
    later = Hub(store=store, resume_limit=10)  # the client comes back to another process
    await later.start()
    back = await later.subscribe(flt, last_event_id="p3")
    assert back.start == "p3" and not back.resume_lost
    assert [e.id for e in back.backlog] == ["4-0", "4-1", "5-0"]
    later.dispatch(header(5, 1, position=5), rows(1, 50))  # its notification, late
    later.dispatch(header(6, 1, position=6), rows(1, 60))
    assert [ev.id for batch in back._batches for ev in batch] == ["6-0"]
    await hub.stop()
    await later.stop()


async def test_a_process_that_dispatched_nothing_asks_the_store_where_a_stream_starts() -> None:
    store = DictStore()
    for b in (1, 2):
        store.add(header(b, 1, position=b))
    hub = Hub(store=store)  # started after both: nothing dispatched here yet
    await hub.start()
    flt = StreamFilter(PROJECT, sensor_id=SENSOR)
    first = await hub.subscribe(flt)
    second = await hub.subscribe(flt)
    assert (first.start, second.start, store.positions_read) == ("p2", "p2", 1)
    hub.dispatch(header(2, 1, position=2), rows(1))  # this process is behind: not new
    assert not first._batches
    hub.resync()  # batches may have been missed: where a stream starts is asked again
    store.add(header(3, 1, position=3))
    assert (await hub.subscribe(flt)).start == "p3" and store.positions_read == 2
    await hub.stop()


async def test_a_position_not_reached_or_too_old_is_reset_and_the_stream_starts_now() -> None:
    store = DictStore()
    hub = Hub(store=store, resume_limit=100)
    await hub.start()
    flt = StreamFilter(PROJECT, sensor_id=SENSOR)
    for b in range(1, 61):
        hub.dispatch(store.add(header(b, 2, position=b)), None)
    assert (await hub.subscribe(flt, last_event_id="p9")).resume_lost  # 102 readings after
    kept = await hub.subscribe(flt, last_event_id="p10")  # 100: as many as it replays
    assert not kept.resume_lost and len(kept.backlog) == 100 and kept.backlog[0].id == "11-0"
    for bad in ("p61", "p-1", "p", "p1.5", "p٣"):  # not reached (another database), not one
        lost = await hub.subscribe(flt, last_event_id=bad)
        assert lost.resume_lost and lost.start == "p60" and not lost.backlog, bad
    await hub.stop()


def test_an_event_is_encoded_once_for_every_client_with_the_contract_s_encoder() -> None:
    ev = LiveEvent(header(9), 4, ("2026-01-01T00:00:00+00:00", 1.0, 33.8, True))
    assert ev.json is ev.json
    assert ev.message().id == "9-4" and ev.message().late is True
    odd = BatchHeader(3, PROJECT, SENSOR, RUN, SESSION, '°C "x"', "v\\1", 2, T0, T0)
    for h, row in [
        (header(9, position=41), ("2026-01-01T00:00:00+00:00", 1.0, 33.8, True)),
        (odd, ("2026-01-01T00:00:00.123456+00:00", -1e-300, 1e300, False)),
    ]:
        ev = LiveEvent(h, 1, row)
        assert json.loads(ev.json) == {
            "type": "reading",
            "id": f"{h.batch_id}-1",
            "batch_id": h.batch_id,
            "sensor_id": str(h.sensor_id),
            "run_id": str(h.run_id),
            "capture_session_id": str(h.capture_session_id),
            "timestamp": row[0],
            "raw_value": row[1],
            "value": row[2],
            "unit": h.unit,
            "late": row[3],
            "profile_version": h.profile_version,
            "position": h.position,
        }
        assert list(json.loads(ev.json))[:2] == ["type", "id"]


def test_a_header_is_the_same_size_whatever_the_batch_size() -> None:
    from cloud.live.pgbus import encode, parse

    small = header(7, 1)
    big = BatchHeader(7, PROJECT, SENSOR, RUN, SESSION, "C", "v1", 10_000, T0, T0 + timedelta(1))
    assert parse(encode(big)) == big
    assert abs(len(encode(big)) - len(encode(small))) < 10 and len(encode(big)) < 400
