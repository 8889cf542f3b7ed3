"""The app's side of alarms: the ``stale`` evaluator run by the clock, and the alarm
transitions handed to the live stream and counted (Prometheus) after their commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud.container import AppContainer
from cloud.db.outage import RoundLog
from cloud.db.uow import after_commit, transaction
from cloud.live.pgbus import ALARM_CHANNEL
from cloud.services import alarms
from cloud.services.telemetry import IngestedBatch

log = logging.getLogger("benchlink.cloud.alarms")

_NOTIFY = text(f"SELECT pg_notify('{ALARM_CHANNEL}', :payload)")


def install(services: AppContainer) -> None:
    announce = _announcer(services)
    services.announce_alarms = announce

    def in_transaction(db: Session, batch: IngestedBatch) -> None:
        announce(db, batch.alarms)

    services.ingest_tx_listeners.append(in_transaction)
    _run_clock(services)


def _announcer(services: AppContainer) -> Callable[[Session, list[dict[str, Any]]], None]:
    postgres = services.engine.dialect.name == "postgresql"

    def announce(db: Session, messages: list[dict[str, Any]]) -> None:
        """Inside the transaction that made the transitions: on PostgreSQL NOTIFYed with it
        (every process's live hub gets them at the commit, and only if it commits); where no
        bus listens, this process's hub gets them after the commit."""
        if not messages:
            return
        hub = services.live_hub
        bus_up = False
        if postgres:
            for message in messages:
                db.execute(_NOTIFY, {"payload": json.dumps(message, separators=(",", ":"))})
            bus_up = hub.bus is not None and hub.bus.listening

        def after() -> None:
            # The same messages the journal's events were written with: one place counts
            # every transition, from ingest, the clock, an ack or a deleted rule.
            services.stats.alarms_committed(messages)
            if not bus_up:
                hub.notify_alarms_soon(messages)
            for listener in services.alarm_listeners:
                try:
                    listener(messages)
                except Exception:  # the alarms are stored; only a listener failed
                    log.exception("alarm listener failed")

        after_commit(db, after)

    return announce


def _run_clock(services: AppContainer) -> None:
    """The stale rules' clock, a task from the app's start to its stop."""
    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal task
        task = asyncio.get_running_loop().create_task(_loop(services), name="alarms-stale")

    async def stop() -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    services.startup_hooks.append(start)
    services.shutdown_hooks.append(stop)


async def _loop(services: AppContainer) -> None:
    rounds = RoundLog(log, "stale alarm evaluation")
    while True:
        await asyncio.sleep(services.stale_every_s)
        try:
            await asyncio.to_thread(tick, services)
        except Exception as exc:
            rounds.failed(exc, "tried again next time")
        else:
            rounds.succeeded()


def tick(services: AppContainer, now: datetime | None = None) -> list[dict[str, Any]]:
    """One evaluation of the stale rules, committed, its transitions announced."""
    with transaction(services.sessionmaker) as db:
        messages = alarms.stale_tick(db, now or datetime.now(UTC))
        services.announce_alarms(db, messages)
    return messages
