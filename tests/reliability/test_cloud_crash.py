"""The cloud's processes under faults during ingest, on PostgreSQL: kill -9 of the whole service
(1 worker and 2), kill -9 of one of two workers, pg_terminate_backend of its database
connections. Senders retry each batch with its Idempotency-Key until a 2xx and never after:
a 2xx that was not committed would be a reading missing at the end, a retry stored twice a
reading doubled. Only 2xx, 409 (the same key still running) and 503 (retry) may come back."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.reliability.conftest import Figures, scale
from tests.reliability.helpers import cloud_readings, tally
from tests.support.cloud import Bench, CloudServer, bootstrap
from tests.support.services import PG_ADMIN_DSN

SENDERS = 4
BATCH = 20
RETRY_ANSWERS = (409, 503)


@dataclass
class Sender:
    """One client posting numbered batches, each until a 2xx."""

    bench: Bench
    k: int
    base: datetime
    sent: Counter[tuple[datetime, float]] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def run(self, url: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            j = 0
            while not stop.is_set():
                self.post_until_2xx(c, j, stop)
                j += 1

    def post_until_2xx(self, c: httpx.Client, j: int, stop: threading.Event) -> None:
        readings = [
            (self.base + timedelta(milliseconds=60_000 * self.k + BATCH * j + i), float(j + i))
            for i in range(BATCH)
        ]
        body = {
            "sensor_id": self.bench.sensor_id,
            "run_id": self.bench.run_id,
            "capture_session_id": self.bench.capture_session_id,
            "readings": [{"timestamp": t.isoformat(), "raw_value": v} for t, v in readings],
        }
        headers = {
            "Authorization": f"Bearer {self.bench.token}",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = c.post("/api/v1/telemetry", json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.answers[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            self.answers[str(r.status_code)] += 1
            if r.is_success:
                self.sent.update(readings)
                return
            if r.status_code not in RETRY_ANSWERS:
                self.unexpected.append(f"{r.status_code} {r.text[:300]}")
            time.sleep(0.05)
        self.unexpected.append("no 2xx within 120 s")


def terminate_backends(database: str) -> int:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def worker_pids(cloud: CloudServer) -> list[int]:
    assert cloud.proc is not None
    children = Path(f"/proc/{cloud.proc.pid}/task/{cloud.proc.pid}/children").read_text()
    return [int(p) for p in children.split()]


def inject(cloud: CloudServer, kind: str, database: str) -> None:
    if kind == "kill -9 cloud":
        cloud.kill_group()
        cloud.start(timeout=60)
    elif kind == "kill -9 one worker":
        import os
        import signal

        pids = worker_pids(cloud)
        if pids:
            os.kill(random.choice(pids), signal.SIGKILL)
    else:
        terminate_backends(database)


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 2])
def test_a_2xx_is_committed_through_kills_of_the_cloud_and_its_connections(
    workers: int,
    pg_url: str,
    tmp_path: Path,
    rng: random.Random,
    figures: Figures,
    seed_note: str,
) -> None:
    database = make_url(pg_url).database
    assert database is not None
    cloud = CloudServer(pg_url, workers=workers, own_group=True, log_path=tmp_path / "cloud.log")
    cloud.start(timeout=60)
    try:
        bench = bootstrap(cloud.url)
        base = datetime.now(UTC) - timedelta(seconds=250)
        senders = [Sender(bench, k, base) for k in range(SENDERS)]
        stop = threading.Event()
        threads = [threading.Thread(target=s.run, args=(cloud.url, stop)) for s in senders]
        for t in threads:
            t.start()
        kinds = ["kill -9 cloud", "pg_terminate_backend"]
        if workers > 1:
            kinds.append("kill -9 one worker")
        faults: Counter[str] = Counter()
        deadline = time.monotonic() + scale(3, 60)
        try:
            while time.monotonic() < deadline or min(faults[k] for k in kinds) == 0:
                time.sleep(rng.uniform(0.2, 1.2))
                kind = (
                    kinds[len(faults) % len(kinds)]
                    if len(faults) < len(kinds)
                    else rng.choice(kinds)
                )
                inject(cloud, kind, database)
                faults[kind] += 1
            time.sleep(1.0)  # a last stretch without faults
        finally:
            stop.set()
            for t in threads:
                t.join(150)
        answers: Counter[str] = sum((s.answers for s in senders), Counter())
        unexpected = [u for s in senders for u in s.unexpected]
        sent: Counter[Any] = sum((s.sent for s in senders), Counter())
    finally:
        cloud.kill_group()
    assert unexpected == [], f"{unexpected[:5]} ({seed_note})"
    result = tally(sent, cloud_readings(pg_url, bench.sensor_id))
    assert result.exact, f"{result} ({seed_note})"
    assert result.captured >= BATCH * SENDERS
    http_5xx = sum(n for a, n in answers.items() if a.startswith("5") and a != "503")
    assert http_5xx == 0, answers
    figures.record(
        "processes",
        f"cloud on PostgreSQL, {workers} worker(s), {SENDERS} senders",
        faults=dict(faults),
        readings=result.captured,
        lost=result.lost,
        doubled=result.doubled,
        http_5xx=http_5xx,
        answers=dict(answers),
    )
