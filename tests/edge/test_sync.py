"""The sync client's decisions, against a scripted cloud (faults at precise moments)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from edge.backoff import Backoff, parse_retry_after
from edge.buffer import Buffer, NewReading, Write
from edge.cloud_client import Answer
from edge.config import SyncConfig
from edge.metrics import EdgeMetrics
from edge.sync import SensorSync, classify, flush
from tests.edge.helpers import FakeCloud, MockCloudClient, as_answer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROBLEM = "application/problem+json"
Handler = Callable[[httpx.Request], httpx.Response]


def problem(status: int, type_: str = "about:blank", **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": type_, "title": "nope", "status": status, "detail": "because", "errors": []},
        headers={"Content-Type": PROBLEM, **headers},
    )


def fill(buffer: Buffer, sid: str, n: int, start: int = 0) -> None:
    buffer.commit(
        [
            Write(
                [
                    NewReading(sid, T0 + timedelta(seconds=i), float(i))
                    for i in range(start, start + n)
                ]
            )
        ]
    )


def syncer(buffer: Buffer, sid: str, cloud: Handler, **cfg: float) -> SensorSync:
    client = MockCloudClient(cloud)
    sync = SyncConfig(batch_size=3, backoff_initial_s=0.01, backoff_max_s=0.02, **cfg)
    return SensorSync(sid, buffer, client, sync, EdgeMetrics())


async def drain(s: SensorSync, limit: int = 50) -> list[str]:
    await s.seal(everything=True)
    kinds = []
    for _ in range(limit):
        outcome = await s.step()
        if outcome is None:
            return kinds
        kinds.append(outcome.kind)
    raise AssertionError("did not drain")


async def test_batches_go_in_order_with_token_in_header_only(buffer: Buffer, sensor: str) -> None:
    cloud = FakeCloud()
    fill(buffer, sensor, 7)
    s = syncer(buffer, sensor, cloud)
    assert await drain(s) == ["synced"] * 3
    assert cloud.values() == [float(i) for i in range(7)]
    for req in cloud.requests:
        assert req.headers["Authorization"] == "Bearer secret-token"
        assert "secret-token" not in str(req.url)
        assert req.url.path == "/api/v1/telemetry"


async def test_lost_response_retry_is_the_same_batch(buffer: Buffer, sensor: str) -> None:
    cloud = FakeCloud()

    def commit_then_lose(request: httpx.Request) -> httpx.Response:
        cloud.accept(request)
        raise httpx.ReadTimeout("response lost", request=request)

    cloud.faults.append(commit_then_lose)
    fill(buffer, sensor, 3)
    s = syncer(buffer, sensor, cloud)
    assert await drain(s) == ["retry", "synced"]
    keys = [r.headers["Idempotency-Key"] for r in cloud.requests]
    assert keys[0] == keys[1] and cloud.requests[0].content == cloud.requests[1].content
    assert cloud.values() == [0.0, 1.0, 2.0]  # stored once


@pytest.mark.parametrize(
    "fault",
    [
        problem(503, **{"Retry-After": "0"}),
        problem(500),
        problem(429, **{"Retry-After": "0"}),
        problem(
            409, "https://benchlink.dev/problems/idempotency-in-flight", **{"Retry-After": "0"}
        ),
    ],
)
async def test_retryable_answers_retry(buffer: Buffer, sensor: str, fault: httpx.Response) -> None:
    cloud = FakeCloud()
    cloud.faults.append(lambda r: fault)
    fill(buffer, sensor, 2)
    assert await drain(syncer(buffer, sensor, cloud)) == ["retry", "synced"]
    assert buffer.status()["sensors"][sensor]["synced"] == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
async def test_permanent_answers_dead_letter_and_go_on(
    buffer: Buffer, sensor: str, status: int
) -> None:
    cloud = FakeCloud()
    cloud.faults.append(lambda r: problem(status))
    fill(buffer, sensor, 6)
    assert await drain(syncer(buffer, sensor, cloud)) == ["dead", "synced"]
    assert cloud.values() == [3.0, 4.0, 5.0]
    (dl,) = buffer.dead_letters()
    assert dl["kind"] == "batch" and dl["reason"].startswith(f"{status} nope: because")


async def test_a_dead_sensor_does_not_block_another(buffer: Buffer, sensor: str) -> None:
    other = str(uuid.uuid4())
    buffer.upsert_sensor(other, "revoked", "mqtt", "r", "s")
    fill(buffer, sensor, 3)
    fill(buffer, other, 3)
    cloud = FakeCloud()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer revoked":
            return problem(503, **{"Retry-After": "0"})  # down for this sensor, forever
        return cloud(request)

    client = MockCloudClient(handler)
    report = await flush(
        buffer, client, SyncConfig(backoff_initial_s=0.01, backoff_max_s=0.01), EdgeMetrics()
    )
    assert report.synced == 1 and other in report.failed
    assert cloud.values() == [0.0, 1.0, 2.0]
    assert buffer.status()["sensors"][other]["pending"] == 3


async def test_run_loop_sends_within_the_interval(buffer: Buffer, sensor: str) -> None:
    import asyncio

    cloud = FakeCloud()
    s = syncer(buffer, sensor, cloud, interval_s=0.2)
    task = asyncio.create_task(s.run())
    try:
        fill(buffer, sensor, 2)
        async with asyncio.timeout(2):
            while len(cloud.values()) < 2:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert s.state in ("idle", "sending")


def test_classify_unknown_409_is_permanent() -> None:
    assert classify(as_answer(problem(409, "https://x/archived"))).kind == "dead"
    race = classify(as_answer(problem(409, "https://benchlink.dev/problems/conflict")))
    assert race.kind == "retry" and race.conflict
    assert classify(Answer(502, b"bad gateway")).kind == "retry"


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_is_jittered_and_capped() -> None:
    b = Backoff(0.5, 4.0)
    delays = [b.next() for _ in range(20)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[5:]) > 2.0  # grows toward the cap
    assert len(set(delays)) > 10  # jittered
    b.reset()
    assert b.next() <= 0.5


def refuse(*fields: str) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {
            "type": "https://benchlink.dev/problems/invalid-input",
            "title": "Invalid input",
            "status": 422,
            "detail": "refused",
            "errors": [{"field": f, "reason": "is after the stop"} for f in fields],
        }
        return httpx.Response(422, json=body, headers={"Content-Type": PROBLEM})

    return answer


async def test_a_422_naming_readings_dead_letters_only_those(buffer: Buffer, sensor: str) -> None:
    """A stopped session: in-window late readings must still go, with order kept."""
    cloud = FakeCloud()
    cloud.faults.append(refuse("readings.1.timestamp", "readings.2.timestamp"))
    fill(buffer, sensor, 6)
    s = syncer(buffer, sensor, cloud)
    assert await drain(s) == ["split", "synced", "synced"]
    assert cloud.values() == [0.0, 3.0, 4.0, 5.0]
    first_key = cloud.requests[0].headers["Idempotency-Key"]
    assert cloud.requests[1].headers["Idempotency-Key"] != first_key  # a new batch id
    (dl,) = buffer.dead_letters()
    assert dl["kind"] == "batch" and "readings.1: readings.1.timestamp: is after" in dl["reason"]
    dead = buffer.batch_body(dl["batch_id"])
    assert [r["raw_value"] for r in dead["readings"]] == [1.0, 2.0]
    st = buffer.status()["sensors"][sensor]
    assert (st["synced"], st["dead"], st["pending"]) == (4, 2, 0)


async def test_a_422_naming_every_reading_or_another_field_kills_the_batch(
    buffer: Buffer, sensor: str
) -> None:
    cloud = FakeCloud()
    cloud.faults += [refuse("readings.0.raw_value", "readings.1.x", "readings.2.y")]
    cloud.faults += [refuse("readings.0.raw_value", "run_id")]
    fill(buffer, sensor, 9)
    assert await drain(syncer(buffer, sensor, cloud)) == ["split", "dead", "synced"]
    assert cloud.values() == [6.0, 7.0, 8.0]


async def test_dead_batches_move_to_the_new_binding(buffer: Buffer, sensor: str) -> None:
    cloud = FakeCloud()
    cloud.faults.append(lambda r: problem(404))  # e.g. the run was deleted
    fill(buffer, sensor, 3)
    assert await drain(syncer(buffer, sensor, cloud)) == ["dead"]
    old = cloud.requests[0].headers["Idempotency-Key"]
    run2, ses2 = str(uuid.uuid4()), str(uuid.uuid4())
    buffer.bind(sensor, run2, ses2)
    assert buffer.retry_dead(sensor_id=sensor, rebind=True).batches == 1
    assert await drain(syncer(buffer, sensor, cloud)) == ["synced"]
    sent = cloud.requests[1]
    assert sent.headers["Idempotency-Key"] != old
    body = json.loads(sent.content)
    assert (body["run_id"], body["capture_session_id"]) == (run2, ses2)
    assert [r["raw_value"] for r in body["readings"]] == [0.0, 1.0, 2.0]


async def test_a_conflict_race_is_retried_then_dead(buffer: Buffer, sensor: str) -> None:
    cloud = FakeCloud()
    race = problem(409, "https://benchlink.dev/problems/conflict")
    cloud.faults += [lambda r: race] * 4
    fill(buffer, sensor, 6)
    assert await drain(syncer(buffer, sensor, cloud)) == [
        "retry",
        "retry",
        "dead",
        "retry",
        "synced",
    ]


async def test_undecodable_answers_and_buffer_errors_never_end_the_loop(
    buffer: Buffer, sensor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import sqlite3

    cloud = FakeCloud()

    def garbled(request: httpx.Request) -> httpx.Response:
        raise httpx.DecodingError("bad gzip", request=request)

    cloud.faults.append(garbled)
    s = syncer(buffer, sensor, cloud, interval_s=0.05)
    real, calls = buffer.next_batch, 0

    def locked(sid: str, after: int | None = None) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(sid, after)

    monkeypatch.setattr(buffer, "next_batch", locked)
    task = asyncio.create_task(s.run())
    try:
        fill(buffer, sensor, 2)
        async with asyncio.timeout(5):
            while len(cloud.values()) < 2:
                await asyncio.sleep(0.02)
        assert not task.done()
    finally:
        task.cancel()
    assert calls >= 2 and cloud.values() == [0.0, 1.0]


async def test_a_dead_letter_verdict_resets_the_backoff(buffer: Buffer, sensor: str) -> None:
    cloud = FakeCloud()
    cloud.faults += [lambda r: problem(503), lambda r: problem(404)]
    fill(buffer, sensor, 3)
    s = syncer(buffer, sensor, cloud)
    await s.seal(everything=True)
    first = await s.step()
    assert first is not None and first.kind == "retry"
    s.retry_delay(first)
    s.retry_delay(first)
    assert s.backoff.attempt == 2
    second = await s.step()
    assert second is not None and second.kind == "dead"
    assert s.backoff.attempt == 0  # the next sensor batch does not inherit the wait


async def test_the_send_loop_prepares_ahead_but_posts_in_order_once_each(
    buffer: Buffer, sensor: str
) -> None:
    """The loop reads and encodes the next batch while one is in flight, and records the last
    one while the next is on its way; still, a batch is posted only after the one before it
    was accepted (a retry sends the same batch again, not the prepared next one), every batch
    once accepted, the buffer ends with every batch synced -- and now and then the loop asks
    for a new connection, so that a long drain does not stay on one cloud worker."""
    from edge import sync as sync_module

    cloud = FakeCloud()
    n = 3 * (2 * sync_module.RECONNECT_EVERY + 1)
    cloud.faults += [lambda r: None] * 4 + [lambda r: problem(503)]
    fill(buffer, sensor, n)
    s = syncer(buffer, sensor, cloud, interval_s=0.05)
    task = asyncio.create_task(s.run())
    try:
        async with asyncio.timeout(20):
            while len(cloud.values()) < n or buffer.unsent_batches():
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert cloud.values() == [float(i) for i in range(n)]
    keys = [r.headers["Idempotency-Key"] for r in cloud.requests]
    first_seen = list(dict.fromkeys(keys))
    seqs = dict(buffer.conn.execute("SELECT id, seq FROM batches").fetchall())
    assert [seqs[k] for k in first_seen] == sorted(seqs.values())  # posted in queue order
    assert keys[4] == keys[5]  # the 503 was retried with the same batch
    states = buffer.conn.execute("SELECT DISTINCT state FROM batches").fetchall()
    assert states == [("synced",)]
    closing = [i for i, r in enumerate(cloud.requests) if r.headers.get("Connection") == "close"]
    assert len(closing) >= 2


async def test_a_cloud_older_than_sequence_numbers_gets_the_batch_without_them(
    buffer: Buffer, sensor: str
) -> None:
    """Such a cloud refuses the unknown ``seq`` field (422, stored nothing): the batch goes
    again at once without it, instead of being dead-lettered; an edge upgraded before its
    cloud loses nothing."""
    cloud = FakeCloud()

    def old_cloud(request: httpx.Request) -> httpx.Response | None:
        if "seq" not in json.loads(request.content):
            return None
        body = {
            "type": "https://benchlink.dev/problems/invalid-input",
            "title": "Invalid input",
            "status": 422,
            "detail": "seq: Extra inputs are not permitted",
            "errors": [{"field": "seq", "reason": "Extra inputs are not permitted"}],
        }
        return httpx.Response(422, json=body, headers={"Content-Type": PROBLEM})

    cloud.faults += [old_cloud] * 4
    fill(buffer, sensor, 6)
    assert await drain(syncer(buffer, sensor, cloud)) == ["synced", "synced"]
    assert cloud.values() == [float(i) for i in range(6)]
    sent = [json.loads(r.content) for r in cloud.requests]
    assert ["seq" in b for b in sent] == [True, False, True, False]
    assert buffer.dead_letters() == []


async def test_a_refusal_of_the_sequence_ranges_themselves_is_not_resent(
    buffer: Buffer, sensor: str
) -> None:
    """A cloud that knows the field and refuses its value: dead-lettered like any 422."""
    cloud = FakeCloud()
    body = {
        "type": "https://benchlink.dev/problems/invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "seq: ranges: the ranges hold 2 numbers for 3 readings",
        "errors": [{"field": "seq", "reason": "ranges: the ranges hold 2 numbers for 3 readings"}],
    }
    cloud.faults.append(lambda r: httpx.Response(422, json=body, headers={"Content-Type": PROBLEM}))
    fill(buffer, sensor, 3)
    assert await drain(syncer(buffer, sensor, cloud)) == ["dead"]
    assert len(cloud.requests) == 1
