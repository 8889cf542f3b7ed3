"""Heartbeats of a fleet: what 1,000 edges reporting every 30 s cost the cloud.

Each edge, each period, does what a running daemon does: one ``PUT
/api/v1/edges/{id}/heartbeat`` with its token (whose answer is its clock sample; ``GET
/api/v1/time`` is only asked while a daemon has no estimate yet), on a new connection (an
edge's kept-alive connection has long expired 30 s later). The figure is the API process's CPU time
for one period's requests, as a share of one core over the period; the ceiling is the same
number of ``GET /healthz`` (the HTTP floor of the server) measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.harness import Cloud, MachineCpu, Row, Sizes, _send, pg_database
from bench.project import bootstrap

PERIOD_S = 30.0
CLIENTS = 8
#: the fleet of the target (a figure measured with fewer edges is scaled to it)
FLEET = 1000


def _raw(
    method: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()] + ["Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def heartbeat(edge_id: str, n_sensors: int = 4) -> bytes:
    sensor = {
        "source": "serial",
        "source_state": "open",
        "run_id": str(uuid.uuid4()),
        "capture_session_id": str(uuid.uuid4()),
        "last_reading_ts": datetime.now(UTC).isoformat(),
        "last_reading_age_s": 0.4,
        "waiting": 12,
        "oldest_waiting_age_s": 1.1,
        "pending": 12,
        "inflight": 0,
        "synced": 250_000,
        "dead": 0,
        "rate_per_s": 10.0,
    }
    body = {
        "edge_id": edge_id,
        "version": "0.1.0",
        "host": "bench-pc",
        "uptime_s": 86400.0,
        "sent_at": datetime.now(UTC).isoformat(),
        "heartbeat_s": PERIOD_S,
        "buffer": {
            "id": uuid.uuid4().hex,
            "path": "/var/lib/benchlink/buffer.db",
            "used_bytes": 300_000_000,
            "max_bytes": 2_000_000_000,
        },
        "dead_letters": 0,
        "clock": {
            "offset_ms": -1.5,
            "uncertainty_ms": 0.9,
            "rtt_ms": 1.8,
            "samples": 40,
            "max_offset_ms": 500.0,
            "age_s": 0.01,
        },
        "sensors": {str(uuid.uuid4()): sensor for _ in range(n_sensors)},
    }
    return json.dumps(body).encode()


async def _all(host: str, port: int, requests: list[tuple[bytes, int]]) -> None:
    queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)

    async def worker() -> None:
        while not queue.empty():
            raw, expect = queue.get_nowait()
            status, answer = await _send(host, port, raw)
            if status != expect:
                raise RuntimeError(f"{raw[:40]!r}: {answer[:500]!r}")

    await asyncio.gather(*(worker() for _ in range(CLIENTS)))


def heartbeats(sizes: Sizes, logs: Path) -> Row:
    n = sizes.fleet_edges
    with pg_database() as url, Cloud(url, 1, logs / "cloud-fleet.log") as cloud:
        bench = bootstrap(cloud.url)
        host, port = "127.0.0.1", cloud.port
        edges: list[tuple[str, str]] = []
        with httpx.Client(base_url=cloud.url, headers=bench.headers, timeout=30) as c:
            for i in range(n):
                r = c.post("/api/v1/edges", json={"name": f"bench-pc-{i:04d}"})
                r.raise_for_status()
                edges.append((r.json()["edge"]["id"], r.json()["token"]))
        period: list[tuple[bytes, int]] = []
        for edge_id, token in edges:
            auth = {"Authorization": f"Bearer {token}"}
            put = {**auth, "Content-Type": "application/json"}
            path = f"/api/v1/edges/{edge_id}/heartbeat"
            period.append((_raw("PUT", host, port, path, put, heartbeat(edge_id)), 200))
        floor = [(_raw("GET", host, port, "/healthz", {}, b""), 200)] * len(period)
        asyncio.run(_all(host, port, period))  # warm-up: tokens remembered, plans cached
        figures, ceilings = [], []
        machine = MachineCpu()
        for _ in range(sizes.repeats):
            before = cloud.cpu_seconds()
            asyncio.run(_all(host, port, floor))
            ceilings.append(cloud.cpu_seconds() - before)
            before = cloud.cpu_seconds()
            asyncio.run(_all(host, port, period))
            figures.append(cloud.cpu_seconds() - before)
        busy = machine.busy()
        # Medians, as telemetry_ingest: on a shared two-core machine one round can be off 3x.
        # Scaled to the target's fleet (exact at full size; --quick measures fewer edges).
        scale = FLEET / n
        share = 100 * statistics.median(figures) * scale / PERIOD_S
        floor_share = 100 * statistics.median(ceilings) * scale / PERIOD_S
        return Row(
            name="fleet_heartbeats",
            what=f"heartbeats of {FLEET:,} edges / {PERIOD_S:.0f} s, % of one core",
            figure=share,
            unit="%",
            ceiling=floor_share,
            ceiling_what=f"as many GET /healthz ({len(period)} measured)",
            target="< 5% of one core (1,000 edges)",
            passed=share < 5.0,
            rss_mb={"cloud": cloud.rss.mb} if cloud.rss else {},
            extra={
                "edges_measured": n,
                "requests_per_period": len(period),
                "api_cpu_s_rounds": [round(f, 3) for f in figures],
                "healthz_cpu_s_rounds": [round(c, 3) for c in ceilings],
                "cpu_ms_per_edge": round(1000 * statistics.median(figures) / n, 3),
                "machine_busy_pct": busy,
            },
        )
