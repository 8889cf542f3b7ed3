"""The app's reprocessing runner: one background task per API process that runs the queued
and unfinished jobs, oldest first, a chunk at a time (:mod:`cloud.services.reprocess_chunks`).

One runner works at a time across processes: on PostgreSQL the one holding a session-level
advisory lock (on a connection of its own, kept for as long as it runs jobs; a process that
dies loses its connection and the lock with it, and another process's runner takes over at
its next look); on SQLite, deployed as one process, there is no lock to take. Either way a
chunk commits only if the job is as the chunk read it, so even two runners on one job
would convert each reading once.

A job interrupted by a restart (``running`` in the table, no runner on it) is picked up by
the next look of any process: it resumes after the last committed chunk. A look happens
every ``reprocess_every_s`` and at once when a job is accepted in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cloud.container import AppContainer
from cloud.db.models import ReprocessJob
from cloud.db.outage import RoundLog, retry_later
from cloud.db.uow import advisory_lock, read_only
from cloud.services import reprocess, reprocess_chunks

log = logging.getLogger("benchlink.cloud.reprocess")

#: PostgreSQL advisory lock key of the runner ("bl reprc"): one runner at a time.
RUNNER_LOCK = 0x626C_7265_7072_63


class Runner:
    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        readers: sessionmaker[Session],
        chunk: int,
        pause_s: float,
    ) -> None:
        self.engine, self.sessions, self.readers = engine, sessions, readers
        self.chunk, self.pause_s = chunk, pause_s
        #: set to look for work now; ``stopping``: end after the current chunk
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run_pending(self) -> int:
        """Run every pending job to its end (blocking); how many were run. 0 when another
        process's runner holds the lock."""
        ran = 0
        with self._one_runner() as held:
            if not held:
                return 0
            while not self.stopping.is_set():
                job_id = self._next_job()
                if job_id is None:
                    break
                self.run_job(job_id)
                ran += 1
        return ran

    def run_job(self, job_id: uuid.UUID) -> None:
        reprocess_chunks.start(self.sessions, job_id)
        try:
            while not self.stopping.is_set():
                if not reprocess_chunks.step(self.readers, self.sessions, job_id, self.chunk):
                    return
                if self.pause_s:
                    time.sleep(self.pause_s)
        except Exception as exc:
            if retry_later(exc):
                raise  # the database is away: the job stays running, resumed next look
            log.exception("reprocess job %s failed", job_id)
            why = str(exc.orig or exc) if isinstance(exc, DBAPIError) else None
            reprocess_chunks.fail(self.sessions, job_id, why or f"{type(exc).__name__}: {exc}")

    def _next_job(self) -> uuid.UUID | None:
        with read_only(self.readers) as db:
            return db.scalar(
                select(ReprocessJob.id)
                .where(ReprocessJob.status.in_(reprocess.PENDING))
                .order_by(ReprocessJob.created_at, ReprocessJob.id)
                .limit(1)
            )

    @contextlib.contextmanager
    def _one_runner(self) -> Iterator[bool]:
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        with advisory_lock(self.engine, RUNNER_LOCK) as held:
            yield held


def install(services: AppContainer) -> None:
    settings = services.settings
    runner = Runner(
        services.engine,
        services.sessionmaker,
        services.read_sessionmaker,
        settings.reprocess_chunk,
        settings.reprocess_pause_s,
    )
    services.reprocess_runner = runner
    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal task
        runner.stopping.clear()
        task = asyncio.get_running_loop().create_task(
            _loop(runner, settings.reprocess_every_s), name="reprocess-runner"
        )

    async def stop() -> None:
        runner.stopping.set()
        runner.wake.set()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    services.startup_hooks.append(start)
    services.shutdown_hooks.append(stop)


async def _loop(runner: Runner, every_s: float) -> None:
    rounds = RoundLog(log, "reprocess runner")
    while not runner.stopping.is_set():
        try:
            await asyncio.to_thread(runner.run_pending)
        except Exception as exc:
            rounds.failed(exc, f"it looks again in {every_s:.1f} s")
        else:
            rounds.succeeded()
        await asyncio.to_thread(runner.wake.wait, every_s)
        runner.wake.clear()
