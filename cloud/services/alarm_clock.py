"""The app's side of alarms: the ``stale`` evaluator run by the clock, and the alarm
transitions handed to the live stream and counted (Prometheus) after their commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud.db.uow import after_commit, transaction
from cloud.live.pgbus import ALARM_CHANNEL
from cloud.services import alarms
from cloud.services.telemetry import IngestedBatch

log = logging.getLogger("benchlink.cloud.alarms")

#: How often the stale evaluator looks (a stale alarm is raised at most this late).
STALE_EVERY_S = 1.0

_NOTIFY = text(f"SELECT pg_notify('{ALARM_CHANNEL}', :payload)")


def install(app: FastAPI) -> None:
    #: Called with each transaction's alarm transitions after its commit (any thread).
    app.state.alarm_listeners = []
    announce = _announcer(app)
    app.state.announce_alarms = announce

    def in_transaction(db: Session, batch: IngestedBatch) -> None:
        announce(db, batch.alarms)

    app.state.ingest_tx_listeners.append(in_transaction)
    _run_clock(app)


def _announcer(app: FastAPI) -> Callable[[Session, list[dict[str, Any]]], None]:
    postgres = app.state.engine.dialect.name == "postgresql"

    def announce(db: Session, messages: list[dict[str, Any]]) -> None:
        """Inside the transaction that made the transitions: on PostgreSQL NOTIFYed with it
        (every process's live hub gets them at the commit, and only if it commits); where no
        bus listens, this process's hub gets them after the commit."""
        if not messages:
            return
        hub = getattr(app.state, "live_hub", None)
        bus_up = False
        if postgres:
            for message in messages:
                db.execute(_NOTIFY, {"payload": json.dumps(message, separators=(",", ":"))})
            bus_up = hub is not None and hub.bus is not None and hub.bus.listening

        def after() -> None:
            # The same messages the journal's events were written with: one place counts
            # every transition, from ingest, the clock, an ack or a deleted rule.
            app.state.stats.alarms_committed(messages)
            if hub is not None and not bus_up:
                hub.notify_alarms_soon(messages)
            for listener in app.state.alarm_listeners:
                try:
                    listener(messages)
                except Exception:  # the alarms are stored; only a listener failed
                    log.exception("alarm listener failed")

        after_commit(db, after)

    return announce


def _run_clock(app: FastAPI) -> None:
    """The stale rules' clock, a task from the app's start to its stop."""
    task: asyncio.Task[None] | None = None

    async def start(app: FastAPI) -> None:
        nonlocal task
        task = asyncio.get_running_loop().create_task(_loop(app), name="alarms-stale")

    async def stop(app: FastAPI) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)


async def _loop(app: FastAPI) -> None:
    every = getattr(app.state, "stale_every_s", STALE_EVERY_S)
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(tick, app)
        except Exception:
            log.exception("stale alarm evaluation failed; tried again next time")


def tick(app: FastAPI, now: datetime | None = None) -> list[dict[str, Any]]:
    """One evaluation of the stale rules, committed, its transitions announced."""
    with contextmanager(transaction)(app.state.sessionmaker) as db:
        messages = alarms.stale_tick(db, now or datetime.now(UTC))
        app.state.announce_alarms(db, messages)
    return messages
