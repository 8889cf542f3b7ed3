"""The app's side of alarms: the ``stale`` evaluator run by the clock, and the alarm
transitions handed to the live stream after their commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session

from cloud.db.uow import after_commit
from cloud.services import alarms
from cloud.services.telemetry import IngestedBatch

log = logging.getLogger("benchlink.cloud.alarms")

#: How often the stale evaluator looks (a stale alarm is raised at most this late).
STALE_EVERY_S = 1.0

Publish = Callable[[list[dict[str, Any]]], None]


def install(app: FastAPI) -> None:
    app.state.alarm_listeners = []

    def publish(messages: list[dict[str, Any]]) -> None:
        """After a commit (any thread): each listener gets the transitions."""
        for listener in app.state.alarm_listeners:
            try:
                listener(messages)
            except Exception:  # the alarms are stored; only their live delivery failed
                log.exception("alarm listener failed")

    app.state.publish_alarms = publish

    def in_transaction(db: Session, batch: IngestedBatch) -> None:
        if batch.alarms:
            after_commit(db, lambda: publish(batch.alarms))

    app.state.ingest_tx_listeners.append(in_transaction)
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
    """One evaluation of the stale rules, committed, its transitions published."""
    with app.state.sessionmaker.begin() as db:
        messages = alarms.stale_tick(db, now or datetime.now(UTC))
    if messages:
        app.state.publish_alarms(messages)
    return messages
