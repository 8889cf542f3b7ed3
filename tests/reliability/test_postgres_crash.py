"""kill -9 of PostgreSQL itself (a private cluster the test starts, never the machine's) and
clean restarts of it, during ingest: while it is down the cloud answers 503 and the senders
retry; after crash recovery every batch that got a 2xx is there, once."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.reliability.conftest import Figures, scale
from tests.reliability.helpers import cloud_readings, tally
from tests.reliability.test_cloud_crash import BATCH, SENDERS, Sender
from tests.support.cloud import CloudServer, bootstrap
from tests.support.pgcluster import private_cluster


@pytest.mark.postgres
def test_a_2xx_is_committed_through_kill9_of_postgresql(
    tmp_path: Path, rng: random.Random, figures: Figures, seed_note: str
) -> None:
    with private_cluster() as pg:
        cloud = CloudServer(pg.url, own_group=True, log_path=tmp_path / "cloud.log")
        cloud.start(timeout=60)
        try:
            bench = bootstrap(cloud.url)
            base = datetime.now(UTC) - timedelta(seconds=250)
            senders = [Sender(bench, k, base) for k in range(SENDERS)]
            stop = threading.Event()
            threads = [threading.Thread(target=s.run, args=(cloud.url, stop)) for s in senders]
            for t in threads:
                t.start()
            faults: Counter[str] = Counter()
            try:
                for i in range(int(scale(2, 10))):
                    time.sleep(rng.uniform(0.5, 2.0))
                    kind = (
                        "kill -9 PostgreSQL"
                        if i % 2 == 0
                        else rng.choice(("kill -9 PostgreSQL", "PostgreSQL restart"))
                    )
                    if kind == "kill -9 PostgreSQL":
                        pg.kill9()
                    else:
                        pg.stop()
                    time.sleep(rng.uniform(0.2, 2.0))  # down: the cloud answers 503
                    pg.start()
                    faults[kind] += 1
                time.sleep(2.0)  # a last stretch without faults
            finally:
                stop.set()
                for t in threads:
                    t.join(150)
            answers: Counter[str] = sum((s.answers for s in senders), Counter())
            unexpected = [u for s in senders for u in s.unexpected]
            sent: Counter[Any] = sum((s.sent for s in senders), Counter())
            stored = cloud_readings(pg.url, bench.sensor_id)
        finally:
            cloud.kill_group()
    assert unexpected == [], f"{unexpected[:5]} ({seed_note})"
    result = tally(sent, stored)
    assert result.exact, f"{result} ({seed_note})"
    assert result.captured >= BATCH * SENDERS
    assert answers["503"] > 0, answers  # the outages were seen
    http_5xx = sum(n for a, n in answers.items() if a.startswith("5") and a != "503")
    assert http_5xx == 0, answers
    figures.record(
        "processes",
        "cloud on a private PostgreSQL cluster, killed -9 and restarted",
        faults=dict(faults),
        readings=result.captured,
        lost=result.lost,
        doubled=result.doubled,
        http_5xx=http_5xx,
        answers=dict(answers),
    )


@pytest.mark.postgres
def test_ingest_while_the_database_is_away_is_503_not_500(pg_url: str) -> None:
    """The sensor token is checked before the app's exception handlers: a database that went
    away there was a 500 (the sender cannot tell a bug from an outage), now a 503 to retry."""
    from cloud.migrate import upgrade
    from tests.cloud.conftest import Api, assert_problem, make_client
    from tests.cloud.test_outage import _admin

    upgrade(pg_url)
    name = make_url(pg_url).database
    with make_client(pg_url) as client:
        api = Api(client)
        ids = api.stack(api.project())
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        try:
            r = api.ingest(ids, [{"timestamp": "2026-12-06T00:00:00Z", "raw_value": 1.0}])
        finally:
            with _admin() as admin:
                admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert_problem(r, 503)
    assert int(r.headers["retry-after"]) > 0
