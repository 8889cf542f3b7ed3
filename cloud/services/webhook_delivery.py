"""The deliverer: sends the webhook deliveries owed (:mod:`cloud.services.webhook_outbox`)
until each is answered 2xx, or given up on.

At least once
    A delivery is *claimed* (``claimed_until``: the attempt's timeout and a margin) in a short
    transaction, sent outside any transaction, and its outcome recorded in another. A
    deliverer that dies between sending and recording lets its claim lapse, and the delivery
    is sent again: a receiver may see one twice, always with the same ``id``. Claims are taken
    with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (on SQLite the writer's lock), so every API
    process may run a deliverer and none sends a delivery another one holds.

Retries
    Any answer but 2xx, a redirect included (never followed), no answer within the timeout,
    or a refused address is a failed attempt: tried again after an exponential, jittered,
    capped backoff, until :attr:`Policy.give_up_s` after the event; then it is ``failed`` and
    the journal says so (``webhook.delivery_failed``). A receiver that fails holds back the
    other deliveries it is owed as long (not one try each per tick while it is down); one it
    answers 2xx sends them at once.

Order
    A webhook's deliveries are sent one after the other, oldest first; one that fails stops
    the others of its webhook until its retry. Receivers order by ``occurred_at`` all the same:
    a retry may overtake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.container import AppContainer
from cloud.db import models
from cloud.db.outage import RoundLog
from cloud.db.uow import read_only, transaction
from cloud.services import journal, webhook_signing, webhooks
from cloud.settings import Settings

log = logging.getLogger("benchlink.cloud.webhooks")

W, D = models.Webhook, models.WebhookDelivery
USER_AGENT = "benchlink-webhooks/1"


@dataclass(frozen=True)
class Policy:
    every_s: float = 1.0
    timeout_s: float = 10.0
    retry_base_s: float = 5.0
    retry_max_s: float = 3600.0
    give_up_s: float = 86_400.0
    #: Deliveries claimed at once, and sent at once (over all webhooks).
    batch: int = 100
    concurrency: int = 8

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.timeout_s + 30)

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            every_s=settings.webhook_every_s,
            timeout_s=settings.webhook_timeout_s,
            retry_base_s=settings.webhook_retry_base_s,
            retry_max_s=settings.webhook_retry_max_s,
            give_up_s=settings.webhook_give_up_s,
        )


@dataclass(frozen=True)
class Job:
    """A claimed delivery, all its sender needs, detached from the database."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    url: str
    secrets: list[str]
    message_id: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None


def backoff_s(attempts: int, policy: Policy, rand: Callable[[], float] = random.random) -> float:
    """The wait after the ``attempts``-th failed attempt: doubling from ``retry_base_s``, at
    most ``retry_max_s``, jittered down by up to half (receivers that failed together do not
    come back to a stampede)."""
    ceiling = min(policy.retry_max_s, policy.retry_base_s * 2.0 ** min(attempts - 1, 30))
    return float(ceiling * (0.5 + rand() / 2))


def body(delivery: models.WebhookDelivery) -> bytes:
    """The JSON POSTed: the same bytes in every attempt."""
    doc = {
        "id": str(delivery.message_id),
        "kind": delivery.kind,
        "occurred_at": delivery.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "project": str(delivery.project_id),
        "data": delivery.data,
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# --- the database side (worker threads) ------------------------------------------------------


def due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Pending, its time come, held by no deliverer."""
    return (
        D.status == "pending",
        D.next_attempt_at <= now,
        or_(D.claimed_until.is_(None), D.claimed_until <= now),
    )


def claim(db: Session, now: datetime, policy: Policy) -> list[Job]:
    """Due deliveries of enabled webhooks, held now for ``policy.lease``."""
    rows = db.execute(
        select(D, W)
        .join(W, W.id == D.webhook_id)
        .where(*due(now), W.enabled.is_(True))
        .order_by(D.created_at, D.id)
        .limit(policy.batch)
        .with_for_update(of=D, skip_locked=True)
    ).all()
    jobs = []
    for delivery, hook in rows:
        delivery.claimed_until = now + policy.lease
        signers = [hook.secret]
        if hook.previous_secret and (hook.previous_secret_until or now) > now:
            signers.append(hook.previous_secret)
        jobs.append(
            Job(delivery.id, hook.id, hook.url, signers, str(delivery.message_id), body(delivery))
        )
    return jobs


def finish(
    db: Session,
    job: Job,
    outcome: Outcome,
    now: datetime,
    policy: Policy,
    skipped: list[uuid.UUID] | None = None,
) -> str | None:
    """Record an attempt; ``skipped``: deliveries of the same webhook claimed with it and not
    tried (it failed), let go until its retry. The delivery's status, None if it is gone."""
    delivery = db.get(D, job.id, with_for_update=True)
    if delivery is None or delivery.status != "pending":
        return None  # the webhook was deleted meanwhile, or another process recorded it
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = outcome.status_code
    delivery.claimed_until = None
    others = (
        D.webhook_id == job.webhook_id,
        D.status == "pending",
        D.id != job.id,
        or_(D.claimed_until.is_(None), D.claimed_until <= now, D.id.in_(skipped or [])),
    )
    if outcome.ok:
        delivery.status, delivery.delivered_at, delivery.last_error = "delivered", now, None
        # The receiver answers again: what it is owed goes now, not at each one's retry.
        db.execute(
            update(D)
            .where(*others, D.next_attempt_at > now)
            .values(next_attempt_at=now, claimed_until=None)
            .execution_options(synchronize_session=False)
        )
        return delivery.status
    delivery.last_error = outcome.error
    retry = now + timedelta(seconds=backoff_s(delivery.attempts, policy))
    if retry - delivery.created_at > timedelta(seconds=policy.give_up_s):
        delivery.status = "failed"
        _journal_failure(db, delivery)
        retry = now  # the next one is tried in its turn, and is given up on by its own age
    else:
        delivery.next_attempt_at = retry
    # The receiver fails: what else it is owed waits as long (not one try each per tick).
    db.execute(
        update(D)
        .where(*others, D.next_attempt_at < retry)
        .values(next_attempt_at=retry, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    if skipped:
        db.execute(
            update(D)
            .where(D.id.in_(skipped), D.status == "pending")
            .values(claimed_until=None)
            .execution_options(synchronize_session=False)
        )
    return delivery.status


def _journal_failure(db: Session, delivery: models.WebhookDelivery) -> None:
    journal.record(
        db,
        "webhook.delivery_failed",
        project_id=delivery.project_id,
        actor="system:webhooks",
        webhook_id=delivery.webhook_id,
        delivery_id=delivery.id,
        message_id=delivery.message_id,
        event_kind=delivery.kind,
        attempts=delivery.attempts,
        last_error=delivery.last_error,
    )


# --- the network side (the event loop) -------------------------------------------------------


async def send(client: httpx.AsyncClient, job: Job, policy: Policy) -> Outcome:
    """One attempt: POST the body, signed now; only the answer's status is read."""
    url = httpx.URL(job.url)
    refused = await _refused(url)
    if refused is not None:
        return Outcome(False, error=refused)
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Benchlink-Webhook-Id": job.message_id,
        "Benchlink-Webhook-Timestamp": str(stamp),
        "Benchlink-Webhook-Signature": webhook_signing.signature_header(
            job.secrets, job.message_id, stamp, job.body
        ),
    }
    try:
        async with asyncio.timeout(policy.timeout_s):
            async with client.stream("POST", url, content=job.body, headers=headers) as answer:
                code, phrase = answer.status_code, answer.reason_phrase
    except TimeoutError:
        return Outcome(False, error=f"no answer within {policy.timeout_s:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= code < 300:
        return Outcome(True, code)
    if 300 <= code < 400:
        return Outcome(False, code, f"answered {code} {phrase}: redirects are not followed")
    return Outcome(False, code, f"answered {code} {phrase}")


async def _refused(url: httpx.URL) -> str | None:
    """Why not to send to the addresses the URL's host has now, or None."""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            url.host, port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        return f"cannot resolve {url.host}: {exc}"
    for *_, sockaddr in found:
        reason = webhooks.refused_address(ipaddress.ip_address(sockaddr[0]))
        if reason is not None:
            return f"refused: {url.host} resolves to {reason}"
    return None


# --- the task --------------------------------------------------------------------------------


class Deliverer:
    """The app's delivery task: a tick when woken (after a commit that owes deliveries) or
    every ``policy.every_s``, whichever comes first. A tick that finds nothing due has cost
    one read (no write lock: on SQLite, ingest never waits for an idle deliverer), and the
    HTTP client is made by the first delivery."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        readers: sessionmaker[Session],
        policy: Policy,
        counted: Callable[[str], None] = lambda _outcome: None,
    ) -> None:
        self.sessions = sessions
        self.readers = readers
        self.policy = policy
        #: Told each attempt's outcome: delivered, retry or failed (the Prometheus counter).
        self.counted = counted
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        """From any thread."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    async def start(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._task = self._loop.create_task(self._run(self._wake), name="webhook-deliverer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()
        self._loop = self._task = self._client = None

    async def _run(self, wake: asyncio.Event) -> None:
        rounds = RoundLog(log, "webhook delivery")
        while True:
            try:
                busy = await self.tick() >= self.policy.batch
            except Exception as exc:
                rounds.failed(exc, "tried again next time")
                busy = False
            else:
                rounds.succeeded()
            if not busy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.policy.every_s):
                        await wake.wait()
            wake.clear()

    async def tick(self) -> int:
        """Claim what is due, send it (each webhook's in order, webhooks side by side),
        record each outcome; how many were claimed."""
        if not await asyncio.to_thread(self._anything_due):
            return 0
        jobs = await asyncio.to_thread(self._claim)
        if self._client is None:
            # No redirects: a receiver's 3xx is a failed attempt, not a hop elsewhere.
            self._client = httpx.AsyncClient(follow_redirects=False)
        by_webhook: dict[uuid.UUID, list[Job]] = {}
        for job in jobs:
            by_webhook.setdefault(job.webhook_id, []).append(job)
        gate = asyncio.Semaphore(self.policy.concurrency)
        async with asyncio.TaskGroup() as tg:
            for queue in by_webhook.values():
                tg.create_task(self._deliver(self._client, queue, gate))
        return len(jobs)

    async def _deliver(
        self, client: httpx.AsyncClient, queue: list[Job], gate: asyncio.Semaphore
    ) -> None:
        for i, job in enumerate(queue):
            async with gate:
                outcome = await send(client, job, self.policy)
            skipped = [] if outcome.ok else [j.id for j in queue[i + 1 :]]
            status = await asyncio.to_thread(self._finish, job, outcome, skipped)
            if status is not None:
                self.counted("retry" if status == "pending" else status)
            if not outcome.ok:
                return

    def _anything_due(self) -> bool:
        with read_only(self.readers) as db:
            query = select(D.id).join(W, W.id == D.webhook_id).where(*due(datetime.now(UTC)))
            return db.scalar(query.where(W.enabled.is_(True)).limit(1)) is not None

    def _claim(self) -> list[Job]:
        with transaction(self.sessions) as db:
            return claim(db, datetime.now(UTC), self.policy)

    def _finish(self, job: Job, outcome: Outcome, skipped: list[uuid.UUID]) -> str | None:
        with transaction(self.sessions) as db:
            return finish(db, job, outcome, datetime.now(UTC), self.policy, skipped)


def install(services: AppContainer) -> None:
    """The deliverer runs while the app does; alarm transitions wake it at their commit."""
    attempts = services.stats.webhook_attempts
    deliverer = Deliverer(
        services.sessionmaker,
        services.read_sessionmaker,
        Policy.of(services.settings),
        counted=lambda outcome: attempts.labels(outcome=outcome).inc(),
    )
    services.webhook_deliverer = deliverer
    services.alarm_listeners.append(lambda _messages: deliverer.wake())
    services.startup_hooks.append(deliverer.start)
    services.shutdown_hooks.append(deliverer.stop)
