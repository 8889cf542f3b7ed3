"""Fan-out across API processes on PostgreSQL (LISTEN/NOTIFY): two real servers, one database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

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
        # A large batch: the header travels, each process reads the rows it needs.
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


async def test_a_process_started_later_resumes_from_the_database(
    pg_url: str, tmp_path: Path
) -> None:
    env = {"BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET}
    with CloudServer(pg_url, env=env, log_path=tmp_path / "a.log") as a:
        bench = bootstrap(a.url)
        async with connect(
            ws_url(a.url, sensor_id=bench.sensor_id), additional_headers=bench.headers
        ) as ws:
            await next_message(ws)
            await ingest(a.url, bench, [1.0, 2.0])
            seen = await readings(ws, 2)
        # Stored while nobody watches anywhere; the second process does not exist yet.
        await ingest(a.url, bench, [3.0])
        await ingest(a.url, bench, [float(i) for i in range(4, 1504)])
        with CloudServer(pg_url, env=env, log_path=tmp_path / "b.log") as b:
            resume = ws_url(b.url, sensor_id=bench.sensor_id, last_event_id=seen[0]["id"])
            async with connect(resume, additional_headers=bench.headers, max_size=None) as ws:
                assert (await next_message(ws))["resumed_from"] == seen[0]["id"]
                missed = await readings(ws, 1502)
                await ingest(a.url, bench, [-5.0])  # and then it follows live
                live = await readings(ws, 1)
                await nothing_more(ws, 0.3)
    assert [m["raw_value"] for m in [*missed, *live]] == [
        2.0,
        3.0,
        *map(float, range(4, 1504)),
        -5.0,
    ]
    assert missed[0]["id"] == seen[1]["id"] and missed[0] == seen[1]
