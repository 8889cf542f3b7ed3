"""Alarm rules evaluated at ingest (and ``stale`` by the clock).

Evaluation
    Each stored batch is evaluated, in the ingest transaction, against the rules of its
    sensor that apply to its run: the run's own rules, and the sensor's rules of the kinds
    the run has none of (a run's rule overrides the sensor's of the same kind). A sensor
    without rules costs nothing: ``sensors.alarm_rules`` (a count kept by this module) comes
    with the ingest's one lookup, and 0 means no evaluation at all.

    Readings are evaluated in timestamp order per rule. The evaluator's state lives in the
    rule's row (``last_ts_us``, ``holding_since_us``, ``open_alarm_id``), locked (``FOR
    UPDATE``) and written in the same transaction as the readings: a restart loses nothing,
    and with several API workers two batches of one sensor are evaluated one after the other
    (the second waits for the first's commit and sees its state). A retried batch (the same
    Idempotency-Key, or readings already stored) stores no new readings and is not
    evaluated again, so it never raises twice. Cost: one statement locks the rules and moves
    their newest reading on, and on PostgreSQL reads a ``rate`` rule's window of readings
    before the batch with it (:mod:`cloud.store.alarm_claims`); a batch that holds, raises or
    clears writes those rules again.
    Most batches cannot change a rule, which :func:`common.alarm_eval.quiet` sees
    from the batch's least and greatest values.

    Hold time: the condition must hold on every reading from one at ``t0`` to one at ``t``
    with ``t - t0 >= for_s`` (reading time, not arrival time). Hysteresis: an alarm clears
    at the first reading back past the limit by ``hysteresis`` (``above``: below
    ``threshold - hysteresis``; ``below``: above ``threshold + hysteresis``; ``outside``:
    inside ``(low + hysteresis, high - hysteresis)``; ``rate``: a rate of magnitude below
    ``threshold - hysteresis``). ``rate`` at a reading is the change from the oldest reading
    within ``window_s`` before it (stored readings included), per second; a reading with no
    other one in its window has no rate and clears. ``fault``: a reading whose meta has a
    true ``fault`` (e.g. ``"open_circuit"``, as the decoders name probe faults) holds the
    condition; one without clears it.

    Late: an alarm is ``late`` when the reading that raised it reached the cloud more than
    :data:`LATE_AFTER_S` after its timestamp (an edge that was offline sends its backlog
    in order, so its alarms are raised with their real time and marked late), or came in a
    late batch (after its capture session ended). Readings older than (or at) the newest one
    a rule has evaluated arrive out of order: they are stored but not evaluated by that rule
    (evaluating them would mean revising decisions already published); the answer of ingest
    is unchanged.

    ``stale`` is evaluated by the clock: :func:`stale_tick` (the app's periodic task) raises
    an alarm for every stale rule whose sensor's last reading *arrived* more than ``after_s``
    ago (the cloud's clock, kept in the rule's ``last_ts_us``) while that reading's capture
    session still runs; raised at ``arrival + after_s``. The next reading to arrive clears
    it. By arrival, not by the readings' timestamps: a backlog draining after an outage, or
    a device whose clock is behind the cloud's, would otherwise flap between ticks. On
    PostgreSQL the tick takes a transaction-level advisory lock, so one process evaluates at
    a time whatever the number of workers; the rule row lock makes a second evaluation a
    no-op in any case.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from cloud import utctime
from cloud.db import models
from cloud.services.alarm_lifecycle import clear, raise_alarm
from cloud.services.alarm_rules import rule_dict, spec_of
from cloud.store.alarm_claims import Claimed, claim
from cloud.store.telemetry import telemetry_store
from cloud.store.telemetry.base import StoredBatch, Window, at
from common.alarm_eval import State, evaluate

AR = models.AlarmRule

#: An alarm raised more than this long after its reading's timestamp is marked late.
LATE_AFTER_S = 30.0
_LATE_US = int(LATE_AFTER_S * 1_000_000)
#: The advisory lock key of the stale evaluator (PostgreSQL): one process at a time.
STALE_LOCK = 0x62_6C_61_6C  # "blal"


def evaluate_batch(db: Session, rows: StoredBatch, now: datetime) -> list[dict[str, Any]]:
    """Evaluate a stored batch against its sensor's rules (ingest transaction); the alarm
    transitions, as live messages to send after the commit."""
    readings = _InOrder.of(rows)
    now_us = utctime.micros(now)
    messages: list[dict[str, Any]] = []
    changed: list[Claimed] = []
    for rule in claim(db, rows, readings.stamps[0], readings.stamps[-1], now_us):
        before = (rule.holding_since_us, rule.open_alarm_id)
        if rule.kind == "stale":  # the sensor speaks again
            messages += _clear_open(db, rule, now, readings.values[-1])
        else:
            messages += _evaluate_rule(db, rule, rows, readings, now_us)
        if (rule.holding_since_us, rule.open_alarm_id) != before:
            changed.append(rule)
    if changed:  # a hold begun or broken, an alarm raised or cleared: few batches do
        db.execute(
            update(_RULE_ROWS)
            .where(_RULE_ROWS.c.id == bindparam("rid"))
            .values(holding_since_us=bindparam("hold"), open_alarm_id=bindparam("open")),
            [{"rid": r.id, "hold": r.holding_since_us, "open": r.open_alarm_id} for r in changed],
        )
    return messages


_RULE_ROWS = cast(Table, AR.__table__)


@dataclass
class _InOrder:
    """A batch's readings in timestamp order, with the least and greatest value of each
    tail evaluated (most rules evaluate the whole batch: worked out once for all)."""

    stamps: list[int]
    values: list[float]
    metas: list[dict[str, Any] | None]
    _bounds: dict[int, tuple[float, float]]

    @classmethod
    def of(cls, rows: StoredBatch) -> _InOrder:
        stamps = rows.stamps_us
        if sorted(stamps) == stamps:  # the usual batch (one C pass); timestamps are unique
            return cls(stamps, rows.values, rows.metas, {})
        order = sorted(range(len(stamps)), key=stamps.__getitem__)
        return cls(
            [stamps[k] for k in order],
            [rows.values[k] for k in order],
            [rows.metas[k] for k in order],
            {},
        )

    def after(self, last_us: int | None) -> int:
        """The index of the first reading newer than ``last_us``."""
        if last_us is None or self.stamps[0] > last_us:
            return 0
        return bisect_right(self.stamps, last_us)

    def bounds(self, start: int) -> tuple[float, float]:
        got = self._bounds.get(start)
        if got is None:
            tail = self.values[start:] if start else self.values
            got = self._bounds[start] = (min(tail), max(tail))
        return got


def _evaluate_rule(
    db: Session, rule: Claimed, rows: StoredBatch, readings: _InOrder, now_us: int
) -> list[dict[str, Any]]:
    """One rule over the batch's readings newer than the newest it evaluated (older ones
    arrived out of order: stored, not evaluated)."""
    start = readings.after(rule.last_ts_us)
    ts = readings.stamps[start:] if start else readings.stamps
    if not ts:
        return []
    vs = readings.values[start:] if start else readings.values
    ms = readings.metas[start:] if start else readings.metas
    spec = spec_of(rule)
    state = State(rule.last_ts_us, rule.holding_since_us, rule.open_alarm_id is not None)
    history = None
    if spec.kind == "rate":
        assert spec.window_s is not None
        history = (
            rule.window  # read with the claim: the batch is newer than all the rule evaluated
            if rule.window is not None
            else _history(db, rows.sensor_id, ts[0], spec.window_s, rule.last_ts_us)
        )
    bounds = readings.bounds(start) if spec.kind != "fault" else None
    messages: list[dict[str, Any]] = []
    for change in evaluate(spec, state, ts, vs, ms, history, bounds):
        t, v = ts[change.index], vs[change.index]
        if change.what == "raise":
            late = rows.late or now_us - t > _LATE_US
            alarm, msg = raise_alarm(db, rule, rule_dict(rule), rows, at(t), v, late)
            rule.open_alarm_id = alarm.id
            messages.append(msg)
        else:
            messages += _clear_open(db, rule, at(t), v)
    rule.holding_since_us = state.holding_since_us
    return messages


def _clear_open(
    db: Session, rule: Claimed, cleared_at: datetime, value: float | None
) -> list[dict[str, Any]]:
    """Clear the rule's open alarm."""
    if rule.open_alarm_id is None:
        return []
    alarm_id, rule.open_alarm_id = rule.open_alarm_id, None
    return clear(db, alarm_id, cleared_at, value)


def _history(
    db: Session, sensor_id: uuid.UUID, first_us: int, window_s: float, last_us: int | None
) -> Window | None:
    """Stored readings of the sensor in the window before ``first_us`` (for a rate), up to
    the newest one evaluated (later ones arrived out of order and are not evaluated)."""
    if last_us is None:
        return None
    lo = first_us - int(window_s * 1_000_000)
    return telemetry_store(db).values_between(sensor_id, lo, min(last_us, first_us - 1))


# --- stale, by the clock ------------------------------------------------------------------


def stale_tick(db: Session, now: datetime) -> list[dict[str, Any]]:
    """Raise the alarm of every stale rule whose sensor has been silent for ``after_s``
    while its last reading's capture session runs; the live messages."""
    if db.get_bind().dialect.name == "postgresql":
        got = db.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": STALE_LOCK})
        if not got.scalar():
            return []  # another process evaluates now
    sessions = models.CaptureSession
    candidates = db.scalars(
        select(AR)
        .join(sessions, sessions.id == AR.last_session_id)
        .where(
            AR.kind == "stale",
            AR.deleted_at.is_(None),
            AR.open_alarm_id.is_(None),
            AR.last_ts_us.is_not(None),
            sessions.status == "running",
        )
        .order_by(AR.id)
        .with_for_update(of=AR)
    ).all()
    now_us = utctime.micros(now)
    messages: list[dict[str, Any]] = []
    for rule in candidates:
        assert rule.last_ts_us is not None and rule.after_s is not None
        due = rule.last_ts_us + int(rule.after_s * 1_000_000)
        if rule.open_alarm_id is not None or now_us < due:
            continue
        session = db.get(sessions, rule.last_session_id)
        assert session is not None
        alarm, msg = raise_alarm(
            db, rule, rule_dict(rule), None, at(due), None, now_us - due > _LATE_US,
            run_id=session.run_id, session_id=session.id,
        )  # fmt: skip
        rule.open_alarm_id = alarm.id
        messages.append(msg)
    return messages
