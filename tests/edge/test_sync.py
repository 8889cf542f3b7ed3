"""The sync client's decisions, against httpx.MockTransport (faults at precise moments)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from edge.backoff import Backoff, parse_retry_after
from edge.buffer import Buffer, NewReading, Write
from edge.config import SyncConfig
from edge.metrics import EdgeMetrics
from edge.sync import SensorSync, classify, flush
from tests.edge.helpers import FakeCloud

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
    client = httpx.AsyncClient(base_url="http://cloud.test", transport=httpx.MockTransport(cloud))
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

    client = httpx.AsyncClient(base_url="http://c", transport=httpx.MockTransport(handler))
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
    assert classify(problem(409, "https://x/conflict")).kind == "dead"
    assert classify(httpx.Response(502, text="bad gateway")).kind == "retry"


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
