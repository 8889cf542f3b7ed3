"""Resume follows the commit order, not the batch ids (real PostgreSQL, real servers).

A batch's id is drawn from a sequence when its row is inserted; concurrent ingest
transactions then commit in any order. Here the batch with the lower id is made to commit
after the one with the higher id, which a client has seen: a client resuming after it, in a
process that never saw it, must still get the later-committed batch, exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection, connect

from cloud.live.pgbus import libpq_dsn
from tests.live.helpers import (
    TICKET_SECRET,
    ingest,
    next_message,
    nothing_more,
    readings,
    stamps,
    ws_url,
)
from tests.support.cloud import Bench, CloudServer, bootstrap
from tests.support.services import PG_ADMIN_DSN


async def _ingest_with_key(base_url: str, bench: Bench, value: float, key: str) -> dict[str, Any]:
    body = {
        "sensor_id": bench.sensor_id,
        "run_id": bench.run_id,
        "capture_session_id": bench.capture_session_id,
        "readings": [{"timestamp": stamps(1)[0], "raw_value": value}],
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as c:
        r = await c.post(
            "/api/v1/telemetry",
            json=body,
            headers={"Authorization": f"Bearer {bench.token}", "Idempotency-Key": key},
        )
    assert r.status_code == 202, r.text
    result: dict[str, Any] = r.json()
    return result


async def _until_waiting_on_a_lock(database: str, timeout: float = 20.0) -> None:
    """Until an INSERT into telemetry_batches in ``database`` waits for a lock."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        while True:
            (n,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO telemetry_batches%%'",
                [database],
            ).fetchone() or (0,)
            if n:
                return
            assert time.monotonic() < deadline, "the ingest never reached its batch insert"
            await asyncio.sleep(0.05)


def _batch_ids(dsn: str) -> dict[float, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT raw_value, batch_id FROM telemetry_readings").fetchall()
    return {float(v): int(b) for v, b in rows}


async def test_a_batch_with_a_lower_id_committed_after_the_resume_point_is_not_skipped(
    pg_url: str, tmp_path: Path
) -> None:
    env = {"BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET}
    dsn = libpq_dsn(pg_url)
    database = str(make_url(pg_url).database)
    key = f"late-{uuid.uuid4()}"
    with CloudServer(pg_url, env=env, log_path=tmp_path / "a.log") as a:
        bench = bootstrap(a.url)
        async with connect(
            ws_url(a.url, sensor_id=bench.sensor_id), additional_headers=bench.headers
        ) as ws:
            assert (await next_message(ws))["type"] == "subscribed"
            await ingest(a.url, bench, [1.0])
            seen = await readings(ws, 1)
            # Another transaction holds the key the "late" batch is sent with: that batch
            # draws its id, then waits at its insert until the holder rolls back.
            with psycopg.connect(dsn) as holder:
                now = datetime.now(UTC)
                holder.execute(
                    "INSERT INTO telemetry_batches (sensor_id, run_id, capture_session_id,"
                    " idempotency_key, count, late, profile_version, first_ts, last_ts,"
                    " received_at) VALUES (%s, %s, %s, %s, 1, 0, 'v1', %s, %s, %s)",
                    [
                        bench.sensor_id,
                        bench.run_id,
                        bench.capture_session_id,
                        key,
                        now,
                        now,
                        now,
                    ],
                )
                late = asyncio.create_task(_ingest_with_key(a.url, bench, 2.0, key))
                await _until_waiting_on_a_lock(database)
                await ingest(a.url, bench, [3.0])  # a higher id, committed first
                seen += await readings(ws, 1)
                holder.rollback()
            await late
            # Live, the client gets the late batch after the other one (commit order).
            seen += await readings(ws, 1)
        assert [m["raw_value"] for m in seen] == [1.0, 3.0, 2.0]
        ids = _batch_ids(dsn)
        assert ids[2.0] < ids[3.0], "the scenario needs the late batch to have the lower id"

        # A client that saw 3.0 resumes in a process that never saw it (started now).
        with CloudServer(pg_url, env=env, log_path=tmp_path / "b.log") as b:
            resume = ws_url(b.url, sensor_id=bench.sensor_id, last_event_id=seen[1]["id"])
            async with connect(resume, additional_headers=bench.headers) as ws:
                assert (await next_message(ws))["resumed_from"] == seen[1]["id"]
                await ingest(a.url, bench, [4.0])  # then live: whatever came first, up to it
                resumed = await _until(ws, 4.0)
                await nothing_more(ws, 0.3)
            assert [m["raw_value"] for m in resumed] == [2.0, 4.0]  # nothing skipped
            assert resumed[0] == seen[2]
            # And one that saw the late batch last has nothing to catch up on.
            resume = ws_url(b.url, sensor_id=bench.sensor_id, last_event_id=seen[2]["id"])
            async with connect(resume, additional_headers=bench.headers) as ws:
                assert (await next_message(ws))["resumed_from"] == seen[2]["id"]
                after_late = await readings(ws, 1)
                await nothing_more(ws, 0.3)
            assert [m["raw_value"] for m in after_late] == [4.0]  # nothing twice


async def _until(ws: ClientConnection, last: float) -> list[dict[str, Any]]:
    """Readings up to and including the one with raw value ``last``."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["raw_value"] != last:
        out += await readings(ws, 1)
    return out
