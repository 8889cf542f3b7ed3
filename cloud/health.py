"""Fleet health rules: conditions on an edge or one of its sensors that start and end.

Five rules (docs/fleet.md, "Health rules"):

* ``edge_silent``: no heartbeat for more than 3 x the edge's ``heartbeat_s``;
* ``sensor_silent``: a sensor with ``expected_interval_s`` set has no reading captured for
  more than 10 x that (its last reading's age in the heartbeat plus the time since);
* ``backlog_old``: a sensor's oldest reading waiting at the edge has waited over an hour;
* ``clock_offset``: the edge's clock estimate is past its ``[clock] max_offset_ms``;
* ``buffer_full``: the edge's buffer uses more than 80 % of its budget.

The conditions in force are kept on the edge's row (``edges.health``); a change is made with
the row locked, and each start and end is a journal event (``edge.health_started``,
``edge.health_ended``) in the same transaction, so two API processes never record one twice.

The rules based on silence are evaluated by the clock: :class:`Evaluator`, the app's periodic
task (on PostgreSQL one process at a time holds an advisory lock for the round; the others
skip it). The rules on what a heartbeat says are evaluated when it is stored
(:meth:`Evaluator.after_store`, called by :mod:`cloud.fleet` in its flush transaction); a
heartbeat also ends ``edge_silent``. A heartbeat that changes nothing costs no statement:
this process remembers what each edge's last heartbeat gave (so with several API processes,
a silence opened by another one may be ended by the next periodic round rather than at once).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.db.models import Edge, Sensor
from cloud.db.outage import RoundLog
from cloud.db.uow import transaction
from cloud.fleet import newest
from cloud.services import journal

log = logging.getLogger("benchlink.cloud")

Rule = Literal["edge_silent", "sensor_silent", "backlog_old", "clock_offset", "buffer_full"]
RULES: tuple[Rule, ...] = (
    "edge_silent",
    "sensor_silent",
    "backlog_old",
    "clock_offset",
    "buffer_full",
)
#: what a heartbeat's arrival settles (it also ends the edge's silence)
ON_HEARTBEAT: frozenset[Rule] = frozenset(
    {"edge_silent", "backlog_old", "clock_offset", "buffer_full"}
)

SILENT_AFTER_BEATS = 3
SENSOR_SILENT_AFTER_INTERVALS = 10
BACKLOG_MAX_AGE_S = 3600.0
BUFFER_MAX_SHARE = 0.8
#: how often the periodic evaluation runs (seconds)
EVERY_S = 10.0
#: PostgreSQL advisory lock key of the periodic round ("benchlink health", any constant)
ADVISORY_KEY = 0x62_6C_68_65_61_6C_74_68

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def key(rule: str, sensor_id: str | None) -> str:
    return f"{rule}:{sensor_id}" if sensor_id else rule


def _condition(rule: Rule, sensor_id: str | None, value: float, limit: float) -> dict[str, Any]:
    return {"rule": rule, "sensor_id": sensor_id, "value": round(value, 3), "limit": limit}


def evaluate(
    heartbeat: Mapping[str, Any] | None,
    heartbeat_at: datetime | None,
    expected_intervals: Mapping[str, float],
    now: datetime,
    rules: Iterable[Rule] = RULES,
) -> dict[str, dict[str, Any]]:
    """The conditions in force now, by :func:`key`, among ``rules``: each with its rule,
    sensor (or None), value and limit. An edge that never reported has none."""
    wanted = set(rules)
    found: dict[str, dict[str, Any]] = {}
    if heartbeat is None or heartbeat_at is None:
        return found
    silent = max(0.0, (now - heartbeat_at).total_seconds())
    period = float(heartbeat.get("heartbeat_s") or 30.0)

    def add(rule: Rule, sensor_id: str | None, value: float, limit: float) -> None:
        if rule in wanted and value > limit:
            found[key(rule, sensor_id)] = _condition(rule, sensor_id, value, limit)

    add("edge_silent", None, silent, SILENT_AFTER_BEATS * period)
    buffer = heartbeat.get("buffer") or {}
    if buffer.get("max_bytes"):
        share = float(buffer.get("used_bytes") or 0) / float(buffer["max_bytes"])
        if buffer.get("full"):  # refusing readings (budget spent, or the disk at its reserve)
            share = max(share, 1.0)
        add("buffer_full", None, share, BUFFER_MAX_SHARE)
    clock = heartbeat.get("clock")
    if clock:
        add("clock_offset", None, abs(float(clock["offset_ms"])), float(clock["max_offset_ms"]))
    for sid, sensor in (heartbeat.get("sensors") or {}).items():
        oldest = sensor.get("oldest_waiting_age_s")
        if oldest is not None:
            add("backlog_old", sid, float(oldest), BACKLOG_MAX_AGE_S)
        expected = expected_intervals.get(sid)
        age = sensor.get("last_reading_age_s")
        if expected and age is not None:
            add("sensor_silent", sid, float(age) + silent, SENSOR_SILENT_AFTER_INTERVALS * expected)
    return found


def apply(
    db: Session,
    edge: models.Edge,
    found: Mapping[str, dict[str, Any]],
    rules: Iterable[Rule],
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """Make the edge's conditions among ``rules`` the ``found`` ones (the row is locked by
    the caller): a journal event for each one that starts and each one that ends. Returns
    the edge's conditions in force."""
    scope = set(rules)
    current: dict[str, dict[str, Any]] = dict(edge.health or {})
    changed = False
    for k, cond in list(current.items()):
        if cond["rule"] in scope and k not in found:
            del current[k]
            changed = True
            _record(db, edge, "edge.health_ended", cond, since=cond.get("since"))
    for k, cond in found.items():
        if k not in current:
            current[k] = {**cond, "since": now.isoformat()}
            changed = True
            _record(db, edge, "edge.health_started", cond)
    if changed:
        edge.health = current
    return current


def _record(
    db: Session, edge: models.Edge, kind: str, cond: Mapping[str, Any], **more: Any
) -> None:
    journal.record(
        db,
        kind,
        project_id=edge.project_id,
        actor="system:health",
        sensor_id=_uuid(cond.get("sensor_id")),
        edge_id=str(edge.id),
        edge_name=edge.name,
        rule=cond["rule"],
        sensor=cond.get("sensor_id"),
        value=cond["value"],
        limit=cond["limit"],
        **more,
    )


def _uuid(text: str | None) -> uuid.UUID | None:
    """A sensor id as the journal's column takes it (the heartbeat's keys are strings; one
    that is not a UUID is still in the event's payload)."""
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


def expected_intervals(db: Session) -> dict[str, float]:
    rows = db.execute(
        select(Sensor.id, Sensor.expected_interval_s).where(Sensor.expected_interval_s.isnot(None))
    )
    return {str(sid): float(v) for sid, v in rows if v is not None}


def _keys(conditions: Mapping[str, Any], rules: Iterable[Rule]) -> frozenset[str]:
    scope = set(rules)
    return frozenset(k for k, c in conditions.items() if c["rule"] in scope)


class Evaluator:
    """The periodic evaluation (:meth:`run`, :meth:`round`) and the one on each stored
    heartbeat (:meth:`after_store`). ``now`` is the cloud's clock, injectable."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        now: Now = _utcnow,
        every_s: float = EVERY_S,
        pending: Callable[[], Mapping[uuid.UUID, Any]] | None = None,
    ) -> None:
        self.sessions, self.now, self.every_s = sessions, now, every_s
        #: heartbeats this process took and has not stored (``cloud.fleet.Pending``)
        self.pending = pending or dict
        #: each edge's conditions among ON_HEARTBEAT as this process last knew them
        self.known: dict[uuid.UUID, frozenset[str]] = {}

    def after_store(self, db: Session, stored: Mapping[uuid.UUID, Any]) -> None:
        """In the heartbeat flush's transaction: ``stored`` is edge id -> Pending (body,
        at). Edges whose heartbeat gives the conditions it gave last time are left alone."""
        now = self.now()
        changed = {}
        for edge_id, p in stored.items():
            found = evaluate(p.body, p.at, {}, now, ON_HEARTBEAT)
            if self.known.get(edge_id) != frozenset(found):
                changed[edge_id] = found
        for edge_id, found in changed.items():
            edge = db.get(models.Edge, edge_id, with_for_update=True, populate_existing=True)
            if edge is None:
                continue
            current = apply(db, edge, found, ON_HEARTBEAT, now)
            self.known[edge_id] = _keys(current, ON_HEARTBEAT)

    def round(self) -> int:
        """Evaluate every edge's rules now (blocking); the number of conditions that started
        or ended. Another process holding the round's lock (PostgreSQL): 0, nothing done."""
        now = self.now()
        pending = dict(self.pending())
        changes = 0
        with transaction(self.sessions) as db:
            postgres = db.get_bind().dialect.name == "postgresql"
            # SQLite: one writer at a time already (BEGIN IMMEDIATE), no lock to take.
            if postgres and not db.scalar(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ADVISORY_KEY}
            ):
                return 0
            expected = expected_intervals(db)
            # in id order, as the heartbeat flush locks them: two lockers never wait on each other
            rows = db.execute(
                select(Edge.id, Edge.heartbeat, Edge.heartbeat_at, Edge.health).order_by(Edge.id)
            ).all()
            for edge_id, stored_body, stored_at, health in rows:
                p = pending.get(edge_id)
                body, at = newest(stored_body, stored_at, p)
                found = evaluate(body, at, expected, now)
                if frozenset(found) == frozenset(health or {}):
                    continue
                edge = db.get(Edge, edge_id, with_for_update=True, populate_existing=True)
                if edge is None:
                    continue
                if body is stored_body:  # as it is now, locked: one may have been stored since
                    found = evaluate(edge.heartbeat, edge.heartbeat_at, expected, now)
                before = frozenset(edge.health or {})
                current = apply(db, edge, found, RULES, now)
                changes += len(before ^ frozenset(current))
                self.known[edge_id] = _keys(current, ON_HEARTBEAT)
        return changes

    async def run(self) -> None:
        rounds = RoundLog(log, "fleet health evaluation")
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await asyncio.to_thread(self.round)
            except Exception as exc:
                rounds.failed(exc, "trying again next round")
            else:
                rounds.succeeded()


def counts_by_rule(db: Session) -> dict[str, int]:
    """Conditions in force by rule, all projects (the cloud's Prometheus gauge)."""
    counts: dict[str, int] = dict.fromkeys(RULES, 0)
    for (health,) in db.execute(select(models.Edge.health).where(models.Edge.health.isnot(None))):
        for cond in (health or {}).values():
            if cond.get("rule") in counts:
                counts[cond["rule"]] += 1
    return counts
