"""Migration 0003: batches stored before it get commit positions (in id order), and it
downgrades and upgrades cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from cloud.db.engine import make_engine
from cloud.migrate import downgrade, upgrade
from tests.live.helpers import stamps
from tests.support.cloud import CloudServer, bootstrap


def _commits(url: str) -> list[tuple[int, int]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT position, batch_id FROM telemetry_batch_commits ORDER BY position")
            )
            return [(int(p), int(b)) for p, b in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_batches_from_before_the_migration_get_positions_in_id_order(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'cloud.db'}"
        if backend == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    with CloudServer(url, log_path=tmp_path / "server.log") as server:
        bench = bootstrap(server.url)
        with bench.client() as c:
            for value in (1.0, 2.0, 3.0):
                r = c.post(
                    "/api/v1/telemetry",
                    json={
                        "sensor_id": bench.sensor_id,
                        "run_id": bench.run_id,
                        "capture_session_id": bench.capture_session_id,
                        "readings": [{"timestamp": stamps(1)[0], "raw_value": value}],
                    },
                    headers={"Authorization": f"Bearer {bench.token}"},
                )
                assert r.status_code == 202, r.text
    ingested = _commits(url)
    assert len(ingested) == 3
    downgrade(url, "0002")
    upgrade(url)
    backfilled = _commits(url)
    assert [b for _, b in backfilled] == sorted(b for _, b in ingested)
    assert [p for p, _ in backfilled] == sorted(p for p, _ in backfilled)
