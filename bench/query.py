"""Chart query: one session with a million readings (ingested through the API, so with the
summaries ingest keeps), ``GET /telemetry/series?max_points=2000``, against reading all of
that session's (timestamp, value) pairs straight from PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench.harness import Cloud, Row, Sizes, libpq, pg_database, post_all
from bench.ingest import telemetry_bodies
from bench.project import Bench, backdate, bootstrap
from bench.store import Target, store_readings


def fill(url: str, cloud_url: str, bench: Bench, n: int, start: datetime) -> None:
    """Ingest ``n`` readings (10 kHz, a slow sine with spikes) through the API, 1000 a batch
    as the edge sends them, so that the session has the summaries ingest keeps."""

    def value(i: int) -> float:
        return 20 + 5 * math.sin(i / 50_000) + (30 if i % 99_991 == 0 else 0)

    bodies = telemetry_bodies(bench, n, start, value)
    headers = [{"Authorization": f"Bearer {bench.token}", "Content-Type": "application/json"}]
    asyncio.run(post_all(cloud_url, "/api/v1/telemetry", bodies, headers * len(bodies), 4, 202))
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        # What autovacuum does shortly after a bulk load; the plan then may read the index only.
        conn.execute("VACUUM ANALYZE telemetry_readings")
        conn.execute("VACUUM ANALYZE telemetry_rollups")


def read_all(url: str, bench: Bench) -> float:
    """Seconds to fetch every (ts, value) of the session into Python: the naive chart."""
    with psycopg.connect(libpq(url)) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ts, value FROM telemetry_readings WHERE capture_session_id = %s"
                " AND sensor_id = %s ORDER BY ts, id",
                (bench.capture_session_id, bench.sensor_id),
            )
            rows = cur.fetchall()
        elapsed = time.perf_counter() - started
    assert len(rows) > 0
    return elapsed


def chart(sizes: Sizes, logs: Path) -> Row:
    n = sizes.chart_readings
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-chart.log") as cloud:
        bench = bootstrap(cloud.url)
        start = datetime.now(UTC) - timedelta(hours=3)
        backdate(url, bench.capture_session_id, start)  # a session takes no earlier reading
        fill(url, cloud.url, bench, n, start)
        params: dict[str, str | int] = {
            "sensor_id": bench.sensor_id,
            "capture_session_id": bench.capture_session_id,
            "max_points": 2000,
        }
        timings = []
        with bench.client() as c:
            c.base_url = httpx.URL(cloud.url)
            assert cloud.rss is not None
            cloud.rss.reset()
            for i in range(sizes.repeats + 1):
                t0 = time.perf_counter()
                r = c.get("/api/v1/telemetry/series", params=params)
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                body = r.json()
                assert body["total"] == n, body["total"]
                assert body["downsampled"] and len(body["points"]) <= 2000
                if i:  # the first request warms caches and connections
                    timings.append(elapsed * 1000)
            cloud_rss = cloud.rss.mb
        everything = statistics.median(read_all(url, bench) for _ in range(3)) * 1000
        median = statistics.median(timings)
        return Row(
            name="chart_query",
            what=f"chart query ({n:,} readings), ms",
            figure=median,
            unit="ms",
            ceiling=everything,
            ceiling_what="fetch all (ts, value) via psycopg",
            target="< 200 ms",
            passed=median < 200,
            rss_mb={"cloud": cloud_rss},
            extra={"timings_ms": [round(t, 1) for t in timings], "points": len(body["points"])},
        )


# --- every filter of the portal, as the data grows ----------------------------------------

#: Sensors of the run, all recording into its one capture session, each at 1 kHz.
SENSORS = 4
STEP_US = 1000
WINDOW = timedelta(seconds=10)


def _wave(i: int) -> float:
    return 20 + 5 * math.sin(i / 50_000) + (30 if i % 99_991 == 0 else 0)


def _add_sensors(bench: Bench, n: int) -> list[str]:
    """``n`` sensors more in the bench's project."""
    ids = []
    with bench.client() as c:
        for k in range(n):
            r = c.post(
                "/api/v1/sensors",
                json={
                    "project_id": bench.project_id,
                    "name": f"probe-{k + 2}",
                    "type": "thermocouple",
                    "input_unit": "mV",
                    "display_unit": "C",
                    "conversion_profile": {
                        "version": "v1",
                        "kind": "linear",
                        "payload": {"a": 1.0, "b": 0.0},
                    },
                },
            )
            r.raise_for_status()
            ids.append(r.json()["sensor"]["id"])
    return ids


def _median_ms(c: httpx.Client, path: str, params: dict[str, str | int], repeats: int) -> float:
    """Median latency of ``repeats`` requests after one that warms caches and connections."""
    timings = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        r = c.get(path, params=params)
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        if i:
            timings.append(elapsed * 1000)
    return statistics.median(timings)


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _run_page_ms(cloud_url: str, bench: Bench, sensors: int, repeats: int) -> float | None:
    """Median time from navigation to the run page until every sensor's chart holds its
    history (Chromium, headless); None when Chromium is not installed."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        return None
    from playwright.sync_api import sync_playwright

    identity = json.dumps(
        {
            "user": bench.owner_user_id,
            "project": bench.project_id,
            "role": "viewer",
            "projectName": "bench",
            "source": "dialog",
        }
    )
    drawn = (
        "n => { const c = [...document.querySelectorAll('.chart[data-sensor-id]')];"
        " return c.length === n && c.every(e => Number(e.dataset.readings) > 0)"
        " ? performance.now() : false }"
    )
    timings = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.add_init_script(f"localStorage.setItem('benchlink.identity', {identity!r})")
            for i in range(repeats + 1):
                page.goto(f"{cloud_url}/runs/{bench.run_id}", wait_until="commit")
                at = page.wait_for_function(drawn, arg=sensors, polling="raf", timeout=60_000)
                if i:  # the first load warms the server's and the browser's caches
                    timings.append(float(at.json_value()))
        finally:
            browser.close()
    return statistics.median(timings)


def filters(sizes: Sizes, logs: Path) -> list[Row]:
    """The chart of each filter the portal and the API take, and the first page of the
    telemetry list, with 1M and then 10M readings stored (four sensors at 1 kHz in one
    session), and the portal's run page at 10M. The readings go straight into the database
    through ingest's COPY and summaries (:mod:`bench.store`); nothing is vacuumed or analysed
    after them, as when a session has just been recorded."""
    env = {"BENCHLINK_DEV_IDENTITY": "1"}  # the run page sends the identity headers itself
    with (
        pg_database() as url,
        Cloud(url, sizes.cloud_workers, logs / "cloud-filters.log", env) as cloud,
    ):
        bench = bootstrap(cloud.url)
        sensor_ids = [bench.sensor_id, *_add_sensors(bench, SENSORS - 1)]
        targets = [Target.of(bench, s) for s in sensor_ids]
        start_us = (time.time_ns() // 1000 - 3 * 3_600_000_000) // STEP_US * STEP_US
        backdate(url, bench.capture_session_id, datetime.fromtimestamp(start_us / 1e6, UTC))
        charts: dict[str, dict[str, str | int]] = {
            "sensor": {"sensor_id": bench.sensor_id},
            "sensor + session": {
                "sensor_id": bench.sensor_id,
                "capture_session_id": bench.capture_session_id,
            },
            "sensor + run": {"sensor_id": bench.sensor_id, "run_id": bench.run_id},
        }
        lists: dict[str, dict[str, str | int]] = {
            "session": {"capture_session_id": bench.capture_session_id},
            "run": {"run_id": bench.run_id},
            "sensor": {"sensor_id": bench.sensor_id},
        }
        figures: dict[tuple[str, str, int], float] = {}
        stored = 0
        assert cloud.rss is not None
        cloud.rss.reset()
        with bench.client() as c:
            c.base_url = httpx.URL(cloud.url)
            for total in sizes.filters_readings:
                per_sensor = total // SENSORS
                t0 = time.perf_counter()
                store_readings(url, targets, start_us, STEP_US, range(stored, per_sensor), _wave)
                print(f"   stored {total:,} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
                stored = per_sensor
                for name, params in charts.items():
                    q = {**params, "max_points": 2000}
                    path = "/api/v1/telemetry/series"
                    figures["chart", name, total] = _median_ms(c, path, q, sizes.repeats)
                middle = start_us + per_sensor * STEP_US // 2
                since = datetime.fromtimestamp(middle / 1e6, UTC)
                window = {
                    **charts["sensor + session"],
                    "max_points": 2000,
                    "since": since.isoformat(),
                    "until": (since + WINDOW).isoformat(),
                }
                path = "/api/v1/telemetry/series"
                figures["window", "", total] = _median_ms(c, path, window, sizes.repeats)
                for name, params in lists.items():
                    path = "/api/v1/telemetry"
                    figures["list", name, total] = _median_ms(c, path, params, sizes.repeats)
            cloud_rss = cloud.rss.mb
        page = _run_page_ms(cloud.url, bench, SENSORS, min(sizes.repeats, 3))
    small, large = sizes.filters_readings[0], sizes.filters_readings[-1]
    rows = []
    for name in charts:
        key = name.replace(" + ", "_")
        for total in (small, large):
            ms = figures["chart", name, total]
            grows = total == large
            rows.append(
                Row(
                    name=f"chart_{key}_{'large' if grows else 'small'}",
                    what=f"chart, {name}, {_label(total)} stored, ms",
                    figure=ms,
                    unit="ms",
                    target="< 50 ms, <= 2x at 1/10" if grows else "< 50 ms",
                    passed=ms < 50 and (not grows or ms <= 2 * figures["chart", name, small]),
                    rss_mb={"cloud": cloud_rss},
                )
            )
    ms = figures["window", "", large]
    rows.append(
        Row(
            name="chart_window",
            what=f"chart, 10 s window, {_label(large)} stored, ms",
            figure=ms,
            unit="ms",
            target="< 20 ms",
            passed=ms < 20,
            rss_mb={"cloud": cloud_rss},
            extra={"small_ms": round(figures["window", "", small], 1)},
        )
    )
    for name in lists:
        ms = figures["list", name, large]
        rows.append(
            Row(
                name=f"list_{name}",
                what=f"telemetry list first page, {name}, {_label(large)} stored, ms",
                figure=ms,
                unit="ms",
                target="< 50 ms",
                passed=ms < 50,
                rss_mb={"cloud": cloud_rss},
                extra={"small_ms": round(figures["list", name, small], 1)},
            )
        )
    rows.append(
        Row(
            name="run_page",
            what=f"portal run page, {SENSORS} charts, {_label(large)} stored, ms",
            figure=page,
            unit="ms",
            target="< 1000 ms",
            passed=page < 1000 if page is not None else None,
            rss_mb={"cloud": cloud_rss},
            note="" if page is not None else "not measured: no /usr/bin/chromium",
        )
    )
    return rows
