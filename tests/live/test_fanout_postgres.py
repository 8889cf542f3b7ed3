"""Fan-out across API processes on PostgreSQL (LISTEN/NOTIFY): two real servers, one database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection, connect

from tests.live.helpers import TICKET_SECRET, ingest, next_message, nothing_more, readings, ws_url
from tests.support.cloud import Bench, CloudServer, bootstrap
from tests.support.services import PG_ADMIN_DSN


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


async def _listeners(database: str, count: int, timeout: float = 20.0) -> None:
    """Wait until ``count`` processes LISTEN in ``database``."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        while True:
            (n,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN %%'",
                [database],
            ).fetchone() or (0,)
            if n == count:
                return
            assert time.monotonic() < deadline, f"{n} listeners, {count} expected"
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def _listen_outage(database: str) -> Iterator[None]:
    """Every LISTEN connection to ``database`` cut, and no new connection let in, until the
    block ends (pooled connections keep working: ingest goes on)."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND query LIKE 'LISTEN %%'",
                [database],
            )
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


async def _until_last(
    ws: ClientConnection, base_url: str, bench: Bench, seen: list[dict[str, Any]], last: float
) -> tuple[ClientConnection, list[str]]:
    """Follow the stream into ``seen`` until the reading ``last`` arrives, resuming after the
    last reading seen whenever the server cuts the client off (as a client should). Returns
    the connection in use and the reason of each time the client was cut off."""
    cut_off: list[str] = []
    async with asyncio.timeout(30):
        while not seen or seen[-1]["raw_value"] != last:
            msg = await next_message(ws, 10)
            if msg["type"] == "reading":
                seen.append(msg)
                continue
            assert msg["type"] == "overflow", msg
            cut_off.append(msg["reason"])
            await ws.close()
            url = ws_url(base_url, sensor_id=bench.sensor_id, last_event_id=seen[-1]["id"])
            ws = await connect(url, additional_headers=bench.headers)
            assert (await next_message(ws))["resumed_from"] == seen[-1]["id"]
    return ws, cut_off


async def test_readings_committed_while_a_process_was_deaf_are_never_skipped(
    two_servers: tuple[CloudServer, CloudServer], pg_url: str
) -> None:
    """A batch committed while a process's LISTEN connection was down never reaches that
    process. Its clients must not go on as if it had never been: they are cut off once it
    listens again and resume from the database, so they get every reading."""
    a, b = two_servers
    database = str(make_url(pg_url).database)
    bench = bootstrap(a.url)
    seen: list[dict[str, Any]] = []
    ws = await connect(ws_url(b.url, sensor_id=bench.sensor_id), additional_headers=bench.headers)
    try:
        assert (await next_message(ws))["type"] == "subscribed"
        await ingest(a.url, bench, [1.0])
        seen += await readings(ws, 1)
        with _listen_outage(database):
            await _listeners(database, 0)
            await ingest(a.url, bench, [2.0])  # b cannot hear of it
        await _listeners(database, 2)
        await ingest(a.url, bench, [3.0])
        ws, cut_off = await _until_last(ws, b.url, bench, seen, 3.0)
        await nothing_more(ws, 0.3)
    finally:
        await ws.close()
    assert [m["raw_value"] for m in seen] == [1.0, 2.0, 3.0]
    assert cut_off == ["resync"]  # the notice says why: no fault of the client


async def test_a_watcher_whose_batch_could_not_be_read_is_cut_off_and_resumes(
    two_servers: tuple[CloudServer, CloudServer], pg_url: str
) -> None:
    """b reads a's batches back for its watcher on connections of its own, without a
    pre-ping: one that broke fails a read. The watcher must then be disconnected with the
    overflow notice (and resume without a gap), not stay connected and never hear again."""
    a, b = two_servers
    database = str(make_url(pg_url).database)
    bench = bootstrap(a.url)
    seen: list[dict[str, Any]] = []
    ws = await connect(ws_url(b.url, sensor_id=bench.sensor_id), additional_headers=bench.headers)
    try:
        assert (await next_message(ws))["type"] == "subscribed"
        await ingest(a.url, bench, [1.0])
        seen += await readings(ws, 1)  # read back by b
        # Every idle connection but the LISTEN ones: request pools ping before use and
        # reconnect; b's read-back pool does not, so its next read fails.
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                " AND state = 'idle' AND query NOT LIKE 'LISTEN %%'",
                [database],
            ).fetchall()
        assert killed
        await ingest(a.url, bench, [2.0])  # b's read of it fails
        await ingest(a.url, bench, [3.0])
        ws, cut_off = await _until_last(ws, b.url, bench, seen, 3.0)
        await nothing_more(ws, 0.3)
    finally:
        await ws.close()
    assert [m["raw_value"] for m in seen] == [1.0, 2.0, 3.0]
    assert cut_off == ["read_failed"]


async def test_a_stream_resumes_from_where_it_started_on_a_process_started_later(
    pg_url: str, tmp_path: Path
) -> None:
    """The client had no reading yet when its server went away: it resumes from the
    position its stream started at, on a new process, and gets what was stored meanwhile."""
    env = {"BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET}
    with CloudServer(pg_url, env=env, log_path=tmp_path / "a.log") as a:
        bench = bootstrap(a.url)
        await ingest(a.url, bench, [0.0])  # before the stream: not the client's
        url = ws_url(a.url, sensor_id=bench.sensor_id)
        async with connect(url, additional_headers=bench.headers) as ws:
            hello = await next_message(ws)
    with CloudServer(pg_url, env=env, log_path=tmp_path / "b.log") as b:
        await ingest(b.url, bench, [1.0, 2.0])
        await ingest(b.url, bench, [float(i) for i in range(3, 1503)])
        resume = ws_url(b.url, sensor_id=bench.sensor_id, last_event_id=hello["id"])
        async with connect(resume, additional_headers=bench.headers, max_size=None) as ws:
            assert (await next_message(ws))["id"] == hello["id"]
            missed = await readings(ws, 1502)
            await ingest(b.url, bench, [-5.0])
            live = await readings(ws, 1)
            await nothing_more(ws, 0.3)
        unknown = ws_url(b.url, sensor_id=bench.sensor_id, last_event_id="p999999999")
        async with connect(unknown, additional_headers=bench.headers) as ws:
            await next_message(ws)
            assert (await next_message(ws))["type"] == "reset"
    assert [m["raw_value"] for m in [*missed, *live]] == [*map(float, range(1, 1503)), -5.0]


async def test_a_client_cut_off_before_its_first_reading_misses_nothing_of_the_outage(
    two_servers: tuple[CloudServer, CloudServer], pg_url: str
) -> None:
    """As above (a process deaf for a while cuts its clients off), for a client that has
    had no reading yet: it resumes from where its stream started."""
    a, b = two_servers
    database = str(make_url(pg_url).database)
    bench = bootstrap(a.url)
    ws = await connect(ws_url(b.url, sensor_id=bench.sensor_id), additional_headers=bench.headers)
    try:
        hello = await next_message(ws)
        with _listen_outage(database):
            await _listeners(database, 0)
            await ingest(a.url, bench, [1.0, 2.0])  # b cannot hear of it
        await _listeners(database, 2)
        assert (await next_message(ws, 10))["reason"] == "resync"
        await ws.close()
        url = ws_url(b.url, sensor_id=bench.sensor_id, last_event_id=hello["id"])
        ws = await connect(url, additional_headers=bench.headers)
        assert (await next_message(ws))["resumed_from"] == hello["id"]
        await ingest(a.url, bench, [3.0])
        got = await readings(ws, 3)
        await nothing_more(ws, 0.3)
    finally:
        await ws.close()
    assert [m["raw_value"] for m in got] == [1.0, 2.0, 3.0]
