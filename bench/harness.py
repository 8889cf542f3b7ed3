"""Plumbing shared by the benchmarks: a throw-away PostgreSQL database, the cloud with N
workers in a subprocess, peak RSS of a process tree, concurrent HTTP clients, results.

Services come from ``bench/services.py`` and ``bench/project.py`` (free ports, a private
Mosquitto, bootstrap through the public API), which ``tests/support`` uses as well: the
benchmarks and the integration tests start things the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

from bench.services import free_port, wait_port

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("BENCHLINK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent


@dataclass
class Sizes:
    """How much each benchmark pushes; ``quick`` proves the script works in seconds."""

    ingest_readings: int = 400_000
    ingest_clients: int = 8
    ingest_rounds: int = 3
    metrics_points: int = 300_000
    capture_messages: int = 40_000
    capture_rounds: int = 3
    sync_backlog: int = 1_000_000
    sync_sensors: int = 4
    live_seconds: float = 10.0
    live_rate: int = 10_000
    #: readings per POST of the live sender (an edge's batch_size)
    live_batch: int = 1000
    chart_readings: int = 1_000_000
    export_readings: int = 1_000_000
    #: readings of the run exported as Parquet and as Arrow
    export_columnar_readings: int = 10_000_000
    #: readings of the run the Python client reads into pandas
    client_readings: int = 1_000_000
    #: readings stored (all four sensors) when the chart of each filter is measured
    filters_readings: tuple[int, ...] = (1_000_000, 10_000_000)
    repeats: int = 7
    cloud_workers: int = 2
    #: edges sending a heartbeat (and two clock samples) per 30 s period
    fleet_edges: int = 1000
    #: readings of the run a reprocessing job re-derives
    reprocess_readings: int = 1_000_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            ingest_readings=4_000,
            ingest_clients=2,
            ingest_rounds=1,
            metrics_points=4_000,
            capture_messages=1_000,
            capture_rounds=1,
            sync_backlog=4_000,
            sync_sensors=2,
            live_seconds=1.0,
            live_rate=1_000,
            live_batch=100,
            chart_readings=10_000,
            export_readings=10_000,
            export_columnar_readings=20_000,
            client_readings=20_000,
            filters_readings=(40_000, 200_000),
            repeats=2,
            cloud_workers=1,
            fleet_edges=200,
            reprocess_readings=4_000,
        )


@dataclass
class Row:
    """One line of the table. ``ratio`` is figure/ceiling (or, for absolute targets, None)."""

    name: str
    what: str
    figure: float | None
    unit: str
    ceiling: float | None = None
    ceiling_what: str = ""
    target: str = ""
    passed: bool | None = None
    rss_mb: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.figure is None or not self.ceiling:
            return None
        return self.figure / self.ceiling

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


# --- PostgreSQL -------------------------------------------------------------------------------


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """Create ``benchlink_bench_<random>``, yield its SQLAlchemy URL, drop it afterwards."""
    name = f"benchlink_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN_DSN.rsplit("/", 1)[0]
        try:
            yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# --- memory -----------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    kids = [int(p) for p in text.split()]
    return kids + [g for k in kids for g in _children(k)]


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRss:
    """Peak resident set of a process and its children (summed), sampled while it runs.

    Each process's own high-water mark (VmHWM) is read, so short peaks between samples count;
    children that exit early are caught by the sampling."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, int] = {}

    def sample(self) -> None:
        for p in [self.pid, *_children(self.pid)]:
            kb = _hwm_kb(p)
            if kb:
                self.peaks[p] = max(self.peaks.get(p, 0), kb)

    def reset(self) -> None:
        """Forget peaks so far (resets the kernel's high-water marks, Linux >= 4.0)."""
        for p in [self.pid, *_children(self.pid)]:
            with contextlib.suppress(OSError):
                Path(f"/proc/{p}/clear_refs").write_text("5")
        self.peaks.clear()

    @property
    def mb(self) -> float:
        self.sample()
        return round(sum(self.peaks.values()) / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(database_url: str) -> float | None:
    """CPU seconds used so far by this machine's PostgreSQL backends connected to the
    database of ``database_url`` (None: none seen here, e.g. a server on another host). A
    backend shows its database in its process title."""
    name = make_url(database_url).database
    title = f" {name} ".encode()
    seen, total = False, 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if title in (entry / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                seen = True
                total += cpu_seconds(int(entry.name))
    return total if seen else None


class MachineCpu:
    """Share of the machine's CPU time that was busy (not idle, not waiting on I/O) between
    construction and :meth:`busy`: says whether a figure was bound by the CPU."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    def busy(self) -> float:
        total, idle = self._read()
        dt = total - self.start[0]
        return round(100 * (1 - (idle - self.start[1]) / dt), 1) if dt else 0.0


# --- the cloud --------------------------------------------------------------------------------


class Cloud:
    """``benchlink-cloud serve --workers N`` on a throw-away database, migrated first."""

    def __init__(
        self, database_url: str, workers: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.database_url, self.workers, self.log = database_url, workers, log
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: PeakRss | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Cloud:
        from cloud.migrate import upgrade

        upgrade(self.database_url)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "benchlink-cloud"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--database-url",
                    self.database_url,
                    "--workers",
                    str(self.workers),
                    "--no-migrate",
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.rss = PeakRss(self.proc.pid)
        deadline = time.monotonic() + 60
        ready = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloud exited: {self.log.read_text()[-2000:]}")
            if wait_port("127.0.0.1", self.port, timeout=0.2):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                        ready += 1
                        # every worker answers readyz; ask a few times so all have started
                        if ready >= 2 * self.workers:
                            return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("cloud did not become ready")

    def cpu_seconds(self) -> float:
        """CPU seconds the API's processes (server and workers) have used so far."""
        assert self.proc is not None
        return sum(cpu_seconds(p) for p in [self.proc.pid, *_children(self.proc.pid)])

    def worker_cpu(self) -> list[float]:
        """CPU seconds of each worker process so far (how evenly the load was spread)."""
        if self.proc is None:
            return []
        workers = []
        for k in _children(self.proc.pid):
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{k}/cmdline").read_bytes()
                if b"resource_tracker" not in cmd:
                    workers.append(k)
        return [round(cpu_seconds(k), 1) for k in workers or [self.proc.pid]]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Cloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- load -------------------------------------------------------------------------------------


def _request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _send(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        answer = await reader.read()  # Connection: close, so the answer ends at EOF
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status = answer.split(b"\r\n", 1)[0].split(b" ", 2)
    return (int(status[1]) if len(status) > 1 else 0), answer


async def post_all(
    base_url: str,
    path: str,
    bodies: Sequence[bytes],
    headers: Sequence[dict[str, str]],
    clients: int,
    expect: int,
    sampler: PeakRss | None = None,
) -> float:
    """POST every body with ``clients`` concurrent connections; return the elapsed seconds.

    The load generator shares the two cores with what it measures, so it is a minimal
    HTTP/1.1 client (requests built before the clock starts, as wrk or oha would send
    them): httpx cost 2 ms of CPU per request, a fifth of the whole request path's CPU.
    A new connection per request: uvicorn's workers share one listening socket, and
    kept-alive connections stay with whichever worker accepted them first (often one worker
    takes them all). Connecting per request lets an idle worker take the next one, as a load
    balancer in front of the workers would; the handshake costs both sides a little."""
    host, port = _host_port(base_url)
    queue = _requests(host, port, path, zip(bodies, headers, strict=True))
    return await _post_queues(base_url, path, [queue] * clients, expect, sampler)


async def post_streams(
    base_url: str,
    path: str,
    streams: Sequence[Sequence[tuple[bytes, dict[str, str]]]],
    expect: int,
    sampler: PeakRss | None = None,
) -> float:
    """POST each stream's bodies (with their headers) in order, one at a time, one client
    per stream, the streams concurrently (as edges sync each sensor's batches); return the
    elapsed seconds. The same client as :func:`post_all`."""
    host, port = _host_port(base_url)
    queues = [_requests(host, port, path, stream) for stream in streams]
    return await _post_queues(base_url, path, queues, expect, sampler)


def _host_port(base_url: str) -> tuple[str, int]:
    url = httpx.URL(base_url)
    return url.host, url.port or 80


def _requests(
    host: str, port: int, path: str, sent: Iterable[tuple[bytes, dict[str, str]]]
) -> asyncio.Queue[bytes]:
    """The requests, built before the clock starts, in a queue."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body, headers in sent:
        queue.put_nowait(_request(host, port, path, body, headers))
    return queue


async def _post_queues(
    base_url: str,
    path: str,
    queues: Sequence[asyncio.Queue[bytes]],
    expect: int,
    sampler: PeakRss | None,
) -> float:
    """One client per queue, each sending its queue's requests one after the other (a queue
    shared by several clients: whichever is free takes the next)."""
    host, port = _host_port(base_url)
    clients = len(queues)

    async def worker(requests: asyncio.Queue[bytes]) -> None:
        while not requests.empty():
            status, answer = await _send(host, port, requests.get_nowait())
            if status != expect:
                raise RuntimeError(f"POST {path}: {answer[:700]!r}")

    async def watch() -> None:
        while sampler is not None:
            sampler.sample()
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in range(clients)))  # warm-up
    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tg:
            for queue in queues:
                tg.create_task(worker(queue))
    finally:
        watcher.cancel()
    return time.perf_counter() - started
