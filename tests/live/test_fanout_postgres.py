"""Fan-out across API processes on PostgreSQL (LISTEN/NOTIFY): two real servers, one database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from cloud.live.hub import BatchHeader
from cloud.live.pgbus import MAX_PAYLOAD, chunks, parse
from tests.live.helpers import TICKET_SECRET, ingest, next_message, nothing_more, readings, ws_url
from tests.support.cloud import CloudServer, bootstrap


@pytest.fixture
def two_servers(pg_url: str, tmp_path: Path) -> Iterator[tuple[CloudServer, CloudServer]]:
    env = {"BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET}
    a = CloudServer(pg_url, env=env, log_path=tmp_path / "a.log").start()
    try:
        b = CloudServer(pg_url, env=env, log_path=tmp_path / "b.log").start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


async def test_a_reading_ingested_on_one_process_reaches_a_client_on_the_other(
    two_servers: tuple[CloudServer, CloudServer],
) -> None:
    a, b = two_servers
    bench = bootstrap(a.url)
    async with httpx.AsyncClient(base_url=a.url) as c:
        ticket = (await c.post("/api/v1/stream-tickets", headers=bench.headers)).json()["ticket"]
    on_a = ws_url(a.url, sensor_id=bench.sensor_id)
    on_b = ws_url(b.url, sensor_id=bench.sensor_id, ticket=ticket)  # issued by a, used on b
    async with (
        connect(on_a, additional_headers=bench.headers) as local,
        connect(on_b, max_size=None) as remote,
    ):
        assert (await next_message(local))["type"] == "subscribed"
        assert (await next_message(remote))["type"] == "subscribed"
        started = time.perf_counter()
        await ingest(a.url, bench, [21.5])
        first = await readings(remote, 1)
        latency = time.perf_counter() - started
        # A batch far larger than one NOTIFY payload travels in chunks, in order.
        await ingest(a.url, bench, [float(i) for i in range(3000)])
        await ingest(b.url, bench, [-1.0])  # and the other way round
        from_remote = first + await readings(remote, 3001)
        from_local = await readings(local, 3002)
        await nothing_more(remote, 0.3)
    assert latency < 1.0, f"{latency:.3f}s from POST on a to the event on b"
    assert [m["raw_value"] for m in from_remote] == [21.5, *map(float, range(3000)), -1.0]
    # Every process derives the same event ids, so a client may resume on either.
    assert [m["id"] for m in from_remote] == [m["id"] for m in from_local]
    assert from_remote == from_local


def test_notify_chunks_stay_under_the_payload_limit_and_round_trip() -> None:
    import uuid

    header = BatchHeader(7, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), "degC", "v3")
    rows = [
        (f"2026-01-01T00:00:{i % 60:02d}.{i:06d}+00:00", i * 1.5, i / 3, i % 2 == 0)
        for i in range(10_000)
    ]
    payloads = list(chunks(header, rows))
    assert len(payloads) > 1
    assert all(len(p.encode()) < MAX_PAYLOAD for p in payloads)
    rebuilt = []
    for p in payloads:
        h, start, part = parse(p)
        assert h == header
        assert start == len(rebuilt)
        rebuilt += part
    assert rebuilt == rows
