"""Cloud ingest: telemetry and metrics through the API against a raw COPY of the same rows;
metrics also against the MLflow tracking server (``PEERS=1``)."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.harness import Cloud, MachineCpu, Row, Sizes, libpq, pg_database, post_all
from bench.peers import mlflow_server
from bench.project import Bench, backdate, bootstrap
from cloud.store.telemetry.postgres import COPY_TYPES

BATCH = 1000
# The ceiling writes exactly what ingest writes: the same columns and types.
TELEMETRY_TYPES = COPY_TYPES


def _stamps(n: int, start: datetime) -> list[datetime]:
    return [start + timedelta(microseconds=100 * i) for i in range(n)]


def _sawtooth(i: int) -> float:
    return round(20 + (i % 500) * 0.01, 3)


def telemetry_bodies(
    bench: Bench, n: int, start: datetime, value: Callable[[int], float] = _sawtooth
) -> list[bytes]:
    """Batches as the edge sends them: compact JSON, 1000 readings each, 10 kHz from
    ``start``, reading i of value ``value(i)``."""
    stamps = _stamps(n, start)
    bodies = []
    for lo in range(0, n, BATCH):
        readings = [
            {"timestamp": ts.isoformat(), "raw_value": value(i)}
            for i, ts in enumerate(stamps[lo : lo + BATCH], start=lo)
        ]
        body = {
            "sensor_id": bench.sensor_id,
            "run_id": bench.run_id,
            "capture_session_id": bench.capture_session_id,
            "readings": readings,
        }
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


def copy_telemetry(url: str, bench: Bench, n: int, start: datetime) -> float:
    """The ceiling: the rows ingest would store, COPY'd (binary) from one process, one
    transaction per 1000 like one request; returns readings/s."""
    ids = [uuid.UUID(x) for x in (bench.project_id, bench.sensor_id, bench.run_id)]
    session = uuid.UUID(bench.capture_session_id)
    rows = [
        (
            *ids,
            session,
            -1,
            ts,
            20 + (i % 500) * 0.01,
            20 + (i % 500) * 0.01,
            "v1",
            False,
            None,
            None,
        )
        for i, ts in enumerate(_stamps(n, start))
    ]
    cols = (
        "project_id, sensor_id, run_id, capture_session_id, batch_id, ts, raw_value, value,"
        " profile_version, late, meta, seq"
    )
    with psycopg.connect(libpq(url)) as conn:
        started = time.perf_counter()
        for lo in range(0, n, BATCH):
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY telemetry_readings ({cols}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(TELEMETRY_TYPES)
                for row in rows[lo : lo + BATCH]:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DELETE FROM telemetry_readings WHERE batch_id = -1")
        conn.commit()
    return n / elapsed


def store_readings(url: str, bench: Bench, n: int, start: datetime) -> None:
    """Store ``n`` readings of the bench's session (10 kHz from ``start``) by binary COPY,
    the rows ingest would store, for benchmarks and tests that read them back."""
    ids = [uuid.UUID(x) for x in (bench.project_id, bench.sensor_id, bench.run_id)]
    session = uuid.UUID(bench.capture_session_id)
    cols = (
        "project_id, sensor_id, run_id, capture_session_id, batch_id, ts, raw_value, value,"
        " profile_version, late, meta, seq"
    )
    with (
        psycopg.connect(libpq(url)) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY telemetry_readings ({cols}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(TELEMETRY_TYPES)
        for i, ts in enumerate(_stamps(n, start)):
            v = _sawtooth(i) - 25
            copy.write_row((*ids, session, -1, ts, v, v, "v1", False, None, None))


def telemetry_ingest(sizes: Sizes, logs: Path) -> Row:
    """Alternating rounds (ceiling, then the API, with fresh timestamps each) and the median
    of each: on a shared two-core machine one round of either can be off by half."""
    n = sizes.ingest_readings
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-ingest.log") as cloud:
        bench = bootstrap(cloud.url)
        start = datetime.now(UTC) - timedelta(hours=3)
        backdate(url, bench.capture_session_id, start)  # a session takes no earlier reading
        assert cloud.rss is not None
        cloud.rss.reset()
        ceilings, rates, seconds, busy = [], [], [], []
        for k in range(sizes.ingest_rounds):
            ceilings.append(copy_telemetry(url, bench, n, start + timedelta(minutes=20 * k)))
            bodies = telemetry_bodies(bench, n, start + timedelta(minutes=20 * k + 10))
            # Every batch with its own Idempotency-Key, as the edge sends them.
            headers = [
                {
                    "Authorization": f"Bearer {bench.token}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": str(uuid.uuid4()),
                }
                for _ in bodies
            ]
            machine = MachineCpu()
            elapsed = asyncio.run(
                post_all(
                    cloud.url,
                    "/api/v1/telemetry",
                    bodies,
                    headers,
                    sizes.ingest_clients,
                    202,
                    cloud.rss,
                )
            )
            busy.append(machine.busy())
            rates.append(n / elapsed)
            seconds.append(round(elapsed, 2))
        with psycopg.connect(libpq(url)) as conn:
            stored = conn.execute("SELECT count(*) FROM telemetry_readings").fetchone()
        total = n * sizes.ingest_rounds
        assert stored is not None and stored[0] == total, f"stored {stored} of {total}"
        rate, ceiling = statistics.median(rates), statistics.median(ceilings)
        return Row(
            name="telemetry_ingest",
            what="telemetry ingest, readings/s",
            figure=rate,
            unit="readings/s",
            ceiling=ceiling,
            ceiling_what="raw binary COPY, 1 process",
            target=">= 60% of ceiling",
            passed=rate >= 0.6 * ceiling,
            rss_mb={"cloud": cloud.rss.mb},
            extra={
                "readings_per_round": n,
                "clients": sizes.ingest_clients,
                "workers": sizes.cloud_workers,
                "api_rounds": [round(r) for r in rates],
                "ceiling_rounds": [round(c) for c in ceilings],
                "seconds": seconds,
                "worker_cpu_s": cloud.worker_cpu(),
                "machine_busy_pct": busy,
            },
        )


# --- metrics ----------------------------------------------------------------------------------

METRIC_NAMES = ("loss", "accuracy", "lr", "grad_norm")


def _metric_points(n: int, start: datetime) -> list[tuple[str, int, float, datetime]]:
    return [
        (METRIC_NAMES[i % 4], i // 4, 1.0 / (1 + i), start + timedelta(milliseconds=i))
        for i in range(n)
    ]


def metrics_bodies(points: list[tuple[str, int, float, datetime]]) -> list[bytes]:
    return [
        json.dumps(
            {
                "metrics": [
                    {"name": k, "step": s, "value": v, "timestamp": t.isoformat()}
                    for k, s, v, t in points[lo : lo + BATCH]
                ]
            },
            separators=(",", ":"),
        ).encode()
        for lo in range(0, len(points), BATCH)
    ]


def copy_metrics(url: str, bench: Bench, points: list[tuple[str, int, float, datetime]]) -> float:
    run, project = uuid.UUID(bench.run_id), uuid.UUID(bench.project_id)
    rows = [(run, project, k, s, v, t) for k, s, v, t in points]
    with psycopg.connect(libpq(url)) as conn:
        started = time.perf_counter()
        for lo in range(0, len(rows), BATCH):
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY metrics (run_id, project_id, name, step, value, ts)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["uuid", "uuid", "text", "int8", "float8", "timestamptz"])
                for row in rows[lo : lo + BATCH]:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DELETE FROM metrics")
        conn.commit()
    return len(rows) / elapsed


def mlflow_rate(
    url: str, sizes: Sizes, points: list[tuple[str, int, float, datetime]], logs: Path
) -> tuple[float, float]:
    """log-batch of 1000 against the MLflow server on the same PostgreSQL; (points/s, RSS MB)."""
    import httpx

    with mlflow_server(url, sizes.cloud_workers, logs / "mlflow.log") as server:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post(
                "/api/2.0/mlflow/experiments/create", json={"name": f"bench-{uuid.uuid4().hex[:8]}"}
            )
            r.raise_for_status()
            exp = r.json()["experiment_id"]
            r = c.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp})
            r.raise_for_status()
            run_id = r.json()["run"]["info"]["run_id"]
        bodies = [
            json.dumps(
                {
                    "run_id": run_id,
                    "metrics": [
                        {"key": k, "value": v, "timestamp": int(t.timestamp() * 1000), "step": s}
                        for k, s, v, t in points[lo : lo + BATCH]
                    ],
                }
            ).encode()
            for lo in range(0, len(points), BATCH)
        ]
        headers = [{"Content-Type": "application/json"} for _ in bodies]
        server.rss.reset()
        elapsed = asyncio.run(
            post_all(
                server.url,
                "/api/2.0/mlflow/runs/log-batch",
                bodies,
                headers,
                sizes.ingest_clients,
                200,
                server.rss,
            )
        )
        return len(points) / elapsed, server.rss.mb


def metrics_ingest(sizes: Sizes, logs: Path, peers: bool) -> list[Row]:
    """Alternating rounds (raw COPY, then the API) and the median of each, as for telemetry."""
    n = sizes.metrics_points
    start = datetime.now(UTC) - timedelta(hours=1)
    rows: list[Row] = []
    with pg_database() as url:
        with Cloud(url, sizes.cloud_workers, logs / "cloud-metrics.log") as cloud:
            bench = bootstrap(cloud.url)
            assert cloud.rss is not None
            cloud.rss.reset()
            ceilings, rates, seconds = [], [], []
            for k in range(sizes.ingest_rounds):
                # copy_metrics deletes what it wrote, so the API round finds the same table
                points = _metric_points(n, start + timedelta(minutes=10 * k))
                ceilings.append(copy_metrics(url, bench, points))
                bodies = metrics_bodies(points)
                headers = [{**bench.headers, "Content-Type": "application/json"} for _ in bodies]
                elapsed = asyncio.run(
                    post_all(
                        cloud.url,
                        f"/api/v1/runs/{bench.run_id}/metrics",
                        bodies,
                        headers,
                        sizes.ingest_clients,
                        201,
                        cloud.rss,
                    )
                )
                rates.append(n / elapsed)
                seconds.append(round(elapsed, 2))
                with psycopg.connect(libpq(url)) as conn:
                    stored = conn.execute("SELECT count(*) FROM metrics").fetchone()
                    assert stored is not None and stored[0] == n, f"stored {stored} of {n}"
                    conn.execute("DELETE FROM metrics")  # the next round starts from the same
            cloud_rss = cloud.rss.mb
        rate, ceiling = statistics.median(rates), statistics.median(ceilings)
        rows.append(
            Row(
                name="metrics_ingest",
                what="metrics ingest, points/s",
                figure=rate,
                unit="points/s",
                ceiling=ceiling,
                ceiling_what="raw binary COPY, 1 process",
                target=">= 50% of ceiling",
                passed=rate >= 0.5 * ceiling,
                rss_mb={"cloud": cloud_rss},
                extra={
                    "points_per_round": n,
                    "clients": sizes.ingest_clients,
                    "api_rounds": [round(r) for r in rates],
                    "ceiling_rounds": [round(c) for c in ceilings],
                    "seconds": seconds,
                },
            )
        )
        if peers:
            try:
                peer, peer_rss = mlflow_rate(url, sizes, _metric_points(n, start), logs)
            except Exception as exc:  # the peer failing must not hide our own row
                print(f"MLflow: {exc}", file=sys.stderr)
                rows.append(
                    Row(
                        name="metrics_vs_mlflow",
                        what="metrics ingest vs MLflow, points/s",
                        figure=None,
                        unit="points/s",
                        target=">= 5x MLflow",
                        note=f"error: {exc}"[:200],
                    )
                )
                return rows
            rows.append(
                Row(
                    name="metrics_vs_mlflow",
                    what="metrics ingest vs MLflow, points/s",
                    figure=rate,
                    unit="points/s",
                    ceiling=peer,
                    ceiling_what="MLflow server log-batch, same PG/clients",
                    target=">= 5x MLflow",
                    passed=rate >= 5 * peer,
                    rss_mb={"cloud": cloud_rss, "mlflow": peer_rss},
                )
            )
        else:
            rows.append(
                Row(
                    name="metrics_vs_mlflow",
                    what="metrics ingest vs MLflow, points/s",
                    figure=rate,
                    unit="points/s",
                    target=">= 5x MLflow",
                    note="not measured: run with PEERS=1",
                )
            )
    return rows
