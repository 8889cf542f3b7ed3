"""What the soak measures: every process's RSS from /proc, live viewers (WebSocket and SSE) that
count every reading they get and its latency, chart queries and theirs, and least-squares
slopes over time."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.live.helpers import sse_events, ws_url
from tests.support.cloud import Bench

Reading = tuple[str, float]  # (sensor id, raw value)


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"process {pid} has no VmRSS (a zombie?)")


def descendants(pid: int) -> list[int]:
    """The process's children, their children, ... (the cloud's workers)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += [int(child), *descendants(int(child))]
    return out


def cloud_processes(pid: int) -> dict[str, int]:
    """The cloud's supervisor and its workers, named (multiprocessing's resource tracker, also
    a child, is a process of its own)."""
    out = {"cloud supervisor": pid}
    workers = 0
    for child in descendants(pid):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"resource_tracker" in cmdline:
            out["cloud resource tracker"] = child
        else:
            workers += 1
            out[f"cloud worker {workers}"] = child
    return out


@dataclass
class RssSampler:
    """RSS of named processes over time: ``samples[name]`` is a list of (seconds, MB)."""

    pids: dict[str, int]
    started: float = field(default_factory=time.monotonic)
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def sample(self) -> None:
        now = time.monotonic() - self.started
        for name, pid in self.pids.items():
            self.samples.setdefault(name, []).append((now, rss_mb(pid)))


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, y) in y per minute."""
    if len(points) < 2:
        return 0.0
    xs = [t / 60 for t, _ in points]
    ys = [y for _, y in points]
    return float(statistics.linear_regression(xs, ys).slope)


def windowed_p99(
    samples: list[tuple[float, float]], window_s: float, since: float
) -> list[tuple[float, float]]:
    """(window's middle in seconds, p99) of (seconds, ms) samples, per window from ``since``."""
    by_window: dict[int, list[float]] = collections.defaultdict(list)
    for t, ms in samples:
        if t >= since:
            by_window[int((t - since) // window_s)].append(ms)
    out = []
    for w, values in sorted(by_window.items()):
        if len(values) >= 2:
            p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
            out.append((since + (w + 0.5) * window_s, p99))
    return out


@dataclass
class Viewer:
    """One live client subscribed to the run: what it got, each reading's latency (receipt
    minus the device's timestamp) and anything else the stream said."""

    kind: str  # "websocket" or "sse"
    got: collections.Counter[Reading] = field(default_factory=collections.Counter)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (wall seconds, ms)
    errors: list[str] = field(default_factory=list)
    subscribed: bool = False

    def take(self, message: dict[str, Any]) -> None:
        if message.get("type") != "readings":
            self.errors.append(json.dumps(message)[:300])
            return
        now = time.time()
        for item in message["items"]:
            self.got[(item["sensor_id"], float(item["raw_value"]))] += 1
            sent = datetime.fromisoformat(item["timestamp"]).timestamp()
            self.latencies.append((now, (now - sent) * 1000))

    async def watch(self, base_url: str, bench: Bench) -> None:
        try:
            if self.kind == "websocket":
                await self._websocket(base_url, bench)
            else:
                await self._sse(base_url, bench)
            self.errors.append("the stream ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the stream is an error the test reports
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _websocket(self, base_url: str, bench: Bench) -> None:
        url = ws_url(base_url, run_id=bench.run_id, batch="true")
        async with connect(url, additional_headers=bench.headers, max_size=None) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "subscribed", hello
            self.subscribed = True
            async for raw in ws:
                self.take(json.loads(raw))

    async def _sse(self, base_url: str, bench: Bench) -> None:
        params = {"run_id": bench.run_id, "batch": "true"}
        timeout = httpx.Timeout(30, read=None)
        async with (
            httpx.AsyncClient(base_url=base_url, headers=bench.headers, timeout=timeout) as c,
            c.stream("GET", "/api/v1/telemetry/stream/sse", params=params) as r,
        ):
            assert r.status_code == 200, r.status_code
            events = sse_events(r)
            hello = await anext(events)
            assert hello["event"] == "subscribed", hello
            self.subscribed = True
            async for event in events:
                self.take(event["data"])


def watch_all(base_url: str, bench: Bench, viewers: list[Viewer], stop: threading.Event) -> None:
    """Run the viewers on an event loop of their own until ``stop`` (in a thread)."""

    async def main() -> None:
        tasks = [asyncio.create_task(v.watch(base_url, bench)) for v in viewers]
        await asyncio.to_thread(stop.wait)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


@dataclass
class ChartQueries:
    """A viewer's chart: the last minute of a random sensor, ``per_s`` times a second."""

    base_url: str
    bench: Bench
    sensors: list[str]
    rng: random.Random
    per_s: float = 2.0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (wall seconds, ms)
    answers: collections.Counter[int] = field(default_factory=collections.Counter)

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.bench.headers, timeout=30) as c:
            while not stop.wait(1 / self.per_s):
                since = datetime.fromtimestamp(time.time() - 60, UTC).isoformat()
                params = {
                    "sensor_id": self.rng.choice(self.sensors),
                    "run_id": self.bench.run_id,
                    "since": since,
                    "max_points": 500,
                }
                started = time.perf_counter()
                r = c.get("/api/v1/telemetry/series", params=params)
                self.latencies.append((time.time(), (time.perf_counter() - started) * 1000))
                self.answers[r.status_code] += 1
