"""Alarm rules on a sensor's converted values, evaluated at ingest, and the alarms they raise.

Evaluation
    Each stored batch is evaluated, in the ingest transaction, against the rules of its
    sensor that apply to its run: the run's own rules, and the sensor's rules of the kinds
    the run has none of (a run's rule overrides the sensor's of the same kind). A sensor
    without rules costs nothing: ``sensors.alarm_rules`` (a count kept by this module) comes
    with the ingest's one lookup, and 0 means no evaluation at all.

    Readings are evaluated in timestamp order per rule. The evaluator's state lives in the
    rule's row (``last_ts_us``, ``holding_since_us``, ``open_alarm_id``) and is read with
    ``SELECT ... FOR UPDATE`` and written in the same transaction as the readings: a restart
    loses nothing, and with several API workers two batches of one sensor are evaluated one
    after the other (the second waits for the first's commit and sees its state). A retried
    batch (the same Idempotency-Key, or readings already stored) stores no new readings and
    is not evaluated again, so it never raises twice.

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
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, and_, bindparam, case, delete, exists, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from cloud import utctime
from cloud.db import models
from cloud.deps import Principal
from cloud.errors import FieldError, InvalidInput, NotFound, invalid
from cloud.pagination import Keyset, aware_datetime, uid
from cloud.schemas_alarms import AckIn, AlarmRuleIn, AlarmRulePatch
from cloud.services import journal
from cloud.services.alarm_eval import Spec, State, evaluate
from cloud.services.scope import get_in_project
from cloud.store.telemetry import telemetry_store
from cloud.store.telemetry.base import StoredBatch, at

AR, AL = models.AlarmRule, models.Alarm

#: An alarm raised more than this long after its reading's timestamp is marked late.
LATE_AFTER_S = 30.0
_LATE_US = int(LATE_AFTER_S * 1_000_000)
#: The advisory lock key of the stale evaluator (PostgreSQL): one process at a time.
STALE_LOCK = 0x62_6C_61_6C  # "blal"

RULE_FIELDS = ("threshold", "low", "high", "window_s", "after_s", "for_s", "hysteresis")
#: The fields each kind needs; the others must be left out.
NEEDS: dict[str, tuple[str, ...]] = {
    "above": ("threshold",),
    "below": ("threshold",),
    "outside": ("low", "high"),
    "rate": ("threshold", "window_s"),
    "stale": ("after_s",),
    "fault": (),
}
_OPTIONAL = ("for_s", "hysteresis")


class RuleLike(Protocol):
    """A rule's definition: its row, or the evaluator's copy of it."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def project_id(self) -> uuid.UUID: ...
    @property
    def sensor_id(self) -> uuid.UUID: ...
    @property
    def run_id(self) -> uuid.UUID | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def low(self) -> float | None: ...
    @property
    def high(self) -> float | None: ...
    @property
    def window_s(self) -> float | None: ...
    @property
    def after_s(self) -> float | None: ...
    @property
    def for_s(self) -> float: ...
    @property
    def hysteresis(self) -> float: ...


# --- rules --------------------------------------------------------------------------------


def _check(rule: models.AlarmRule) -> None:
    """Per kind: the fields it needs are there, the others are not, and they make sense."""
    errors: list[FieldError] = []
    needs = NEEDS[rule.kind]
    for name in RULE_FIELDS:
        value = getattr(rule, name)
        if name in needs and value is None:
            errors.append(FieldError(name, f"is required by {rule.kind} rules"))
        elif name not in needs and name not in _OPTIONAL and value is not None:
            errors.append(
                FieldError(
                    name,
                    f"is not used by {rule.kind} rules (they take "
                    f"{', '.join(needs + _OPTIONAL) if needs else ', '.join(_OPTIONAL)})",
                )
            )
    if rule.kind == "outside" and rule.low is not None and rule.high is not None:
        if rule.low >= rule.high:
            errors.append(FieldError("high", f"must be above low ({rule.low:g})"))
        elif rule.hysteresis * 2 >= rule.high - rule.low:
            errors.append(
                FieldError("hysteresis", "must be under half of high - low (or it never clears)")
            )
    if rule.kind == "rate" and rule.threshold is not None:
        if rule.threshold <= 0:
            errors.append(FieldError("threshold", "must be a rate above 0 (units per second)"))
        elif rule.hysteresis >= rule.threshold:
            errors.append(FieldError("hysteresis", "must be under threshold (or it never clears)"))
    if rule.kind in ("stale", "fault") and rule.hysteresis:
        errors.append(FieldError("hysteresis", f"has no meaning for {rule.kind} rules"))
    if rule.kind == "stale" and rule.for_s:
        errors.append(FieldError("for_s", "has no meaning for stale rules (after_s is their hold)"))
    if errors:
        raise InvalidInput(
            f"{len(errors)} problem(s) with this {rule.kind} rule: "
            f"{errors[0].field} {errors[0].reason}",
            errors=errors,
        )


def _count(db: Session, sensor_id: uuid.UUID, delta: int) -> None:
    S = models.Sensor
    db.execute(update(S).where(S.id == sensor_id).values(alarm_rules=S.alarm_rules + delta))


def create_rule(
    db: Session, caller: Principal, sensor_id: uuid.UUID, body: AlarmRuleIn
) -> models.AlarmRule:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    if body.run_id is not None:
        run = db.get(models.Run, body.run_id)
        if run is None or run.project_id != caller.project_id or run.deleted_at is not None:
            raise invalid("run_id", f"no run {body.run_id} in this project")
    fields = body.model_dump(include=set(RULE_FIELDS))
    rule = AR(
        id=uuid.uuid4(),
        project_id=caller.project_id,
        sensor_id=sensor.id,
        run_id=body.run_id,
        kind=body.kind,
        created_by=caller.user_id,
        **fields,
    )
    _check(rule)
    db.add(rule)
    _count(db, sensor.id, 1)
    db.flush()
    _journal_rule(db, caller, "alarm_rule.created", rule, rule=rule_dict(rule))
    return rule


def list_rules(
    db: Session, caller: Principal, sensor_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[models.AlarmRule], str | None]:
    get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    query = select(AR).where(AR.sensor_id == sensor_id, AR.deleted_at.is_(None))
    return _RULES.page(db, query, limit, cursor)


def get_rule(
    db: Session, caller: Principal, sensor_id: uuid.UUID, rule_id: uuid.UUID, lock: bool = False
) -> models.AlarmRule:
    rule = get_in_project(db, AR, rule_id, caller.project_id, lock=lock)
    if rule.sensor_id != sensor_id or rule.deleted_at is not None:
        raise NotFound(f"alarm rule {rule_id} not found on sensor {sensor_id}")
    return rule


def patch_rule(
    db: Session, caller: Principal, sensor_id: uuid.UUID, rule_id: uuid.UUID, body: AlarmRulePatch
) -> models.AlarmRule:
    rule = get_rule(db, caller, sensor_id, rule_id, lock=True)
    changes = body.model_dump(exclude_unset=True)
    for key in ("for_s", "hysteresis"):  # never null: null means "leave as it is"
        if key in changes and changes[key] is None:
            changes.pop(key)
    for key, value in changes.items():
        setattr(rule, key, value)
    _check(rule)
    # A new condition: what was holding under the old one holds under it no longer; an open
    # alarm stays open until the new condition clears it.
    rule.holding_since_us = None
    rule.updated_at = datetime.now(UTC)
    _journal_rule(db, caller, "alarm_rule.updated", rule, changes=changes)
    return rule


def delete_rule(
    db: Session, caller: Principal, sensor_id: uuid.UUID, rule_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The rule stops; its open alarm clears now (by the clock); its alarms stay. The
    transition, as a live message."""
    rule = get_rule(db, caller, sensor_id, rule_id, lock=True)
    now = datetime.now(UTC)
    messages: list[dict[str, Any]] = []
    if rule.open_alarm_id is not None:
        alarm = db.get(AL, rule.open_alarm_id, with_for_update=True)
        if alarm is not None:
            messages = _clear(db, alarm, now, None, actor=caller.actor, reason="rule deleted")
    rule.open_alarm_id = None
    rule.deleted_at = now
    _count(db, rule.sensor_id, -1)
    _journal_rule(db, caller, "alarm_rule.deleted", rule, rule=rule_dict(rule))
    return messages


def release_run_alarms(db: Session, run_id: uuid.UUID) -> None:
    """Before a purged run's alarms go: a sensor's rule whose open alarm is one of them has
    none open any more (the evaluator takes ``open_alarm_id`` for an open alarm)."""
    ids = select(AL.id).where(AL.run_id == run_id)
    db.execute(update(AR).where(AR.open_alarm_id.in_(ids)).values(open_alarm_id=None))


def purge_run_rules(db: Session, run_id: uuid.UUID) -> None:
    """A purged run's own rules go with it (its alarms went before)."""
    live = db.scalars(select(AR).where(AR.run_id == run_id, AR.deleted_at.is_(None))).all()
    for rule in live:
        _count(db, rule.sensor_id, -1)
    db.execute(delete(AR).where(AR.run_id == run_id))


def rule_dict(rule: RuleLike) -> dict[str, Any]:
    out: dict[str, Any] = {"id": str(rule.id), "kind": rule.kind}
    if rule.run_id is not None:
        out["run_id"] = str(rule.run_id)
    for name in RULE_FIELDS:
        value = getattr(rule, name)
        if value is not None and (name in NEEDS[rule.kind] or name in _OPTIONAL):
            out[name] = value
    return out


def _spec(rule: RuleLike) -> Spec:
    return Spec(
        kind=rule.kind,
        threshold=rule.threshold,
        low=rule.low,
        high=rule.high,
        window_s=rule.window_s,
        for_s=rule.for_s or 0.0,
        hysteresis=rule.hysteresis or 0.0,
    )


def _journal_rule(
    db: Session, caller: Principal, kind: str, r: models.AlarmRule, /, **payload: Any
) -> None:
    journal.record(
        db,
        kind,
        project_id=caller.project_id,
        actor=caller.actor,
        run_id=r.run_id,
        sensor_id=r.sensor_id,
        alarm_rule_id=r.id,
        **payload,
    )


_RULES = Keyset(
    "alarm_rules", (AR.created_at, AR.id), (aware_datetime, uid),
    lambda r: (r.created_at.isoformat(), r.id),
)  # fmt: skip


# --- evaluation at ingest -------------------------------------------------------------------


def evaluate_batch(db: Session, rows: StoredBatch, now: datetime) -> list[dict[str, Any]]:
    """Evaluate a stored batch against its sensor's rules (ingest transaction); the alarm
    transitions, as live messages to send after the commit."""
    readings = _InOrder.of(rows)
    now_us = utctime.micros(now)
    messages: list[dict[str, Any]] = []
    changed: list[_Claimed] = []
    for rule in _claim(db, rows, readings.stamps[-1], now_us):
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


@dataclass
class _Claimed:
    """A rule as the evaluator needs it: its definition, its state, and ``last_ts_us``, the
    newest reading it had evaluated before this batch."""

    id: uuid.UUID
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID | None
    kind: str
    threshold: float | None
    low: float | None
    high: float | None
    window_s: float | None
    after_s: float | None
    for_s: float
    hysteresis: float
    holding_since_us: int | None
    open_alarm_id: uuid.UUID | None
    last_ts_us: int | None


def _claimed(row: Any) -> _Claimed:
    return _Claimed(*row)


_COLUMNS = tuple(getattr(AR, f.name) for f in fields(_Claimed)[:-1])


def _claim(db: Session, rows: StoredBatch, last_us: int, now_us: int) -> list[_Claimed]:
    """The rules that apply to the batch (a run's, and the sensor's of the kinds the run has
    none of), locked to the commit, each as it was before the batch, its newest reading
    moved on to the batch's: nearly every batch changes that, and only that.

    On PostgreSQL one statement locks the rows (in id order: concurrent ingests of a sensor
    lock them in one order, so with several API workers two batches of one sensor are
    evaluated one after the other, the second seeing the first's state), updates them and
    returns them with their previous ``last_ts_us``. SQLite runs one writing transaction at
    a time: a read, then the update."""
    X = aliased(AR)
    overridden = exists().where(
        X.sensor_id == AR.sensor_id, X.run_id == rows.run_id, X.kind == AR.kind,
        X.deleted_at.is_(None),
    )  # fmt: skip
    applies = and_(
        AR.sensor_id == rows.sensor_id,
        AR.deleted_at.is_(None),
        or_(AR.run_id == rows.run_id, and_(AR.run_id.is_(None), ~overridden)),
    )
    # Stale rules keep the arrival (the cloud's clock); the others the newest reading, and
    # the session it came in, when the batch has one newer than theirs.
    newer = or_(AR.last_ts_us.is_(None), AR.last_ts_us < last_us)
    stale = AR.kind == "stale"
    moved = {
        AR.last_ts_us: case(
            (and_(stale, AR.last_ts_us > now_us), AR.last_ts_us),
            (stale, now_us),
            (newer, last_us),
            else_=AR.last_ts_us,
        ),
        AR.last_session_id: case(
            (or_(stale, newer), rows.capture_session_id), else_=AR.last_session_id
        ),
    }
    if db.get_bind().dialect.name != "postgresql":
        found = db.execute(select(*_COLUMNS, AR.last_ts_us).where(applies).order_by(AR.id))
        claimed = [_claimed(row) for row in found]
        db.execute(update(AR).where(applies).values(moved), execution_options=_CORE)
        return claimed
    prior = select(AR.id, AR.last_ts_us).where(applies).order_by(AR.id).with_for_update()
    cte = prior.cte("prior")
    claim = update(AR).where(AR.id == cte.c.id).values(moved).returning(*_COLUMNS, cte.c.last_ts_us)
    return [_claimed(row) for row in db.execute(claim, execution_options=_CORE)]


#: The rule rows are written as rows (no ORM object of them is loaded at ingest).
_CORE = {"synchronize_session": False}
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
    db: Session, rule: _Claimed, rows: StoredBatch, readings: _InOrder, now_us: int
) -> list[dict[str, Any]]:
    """One rule over the batch's readings newer than the newest it evaluated (older ones
    arrived out of order: stored, not evaluated)."""
    start = readings.after(rule.last_ts_us)
    ts = readings.stamps[start:] if start else readings.stamps
    if not ts:
        return []
    vs = readings.values[start:] if start else readings.values
    ms = readings.metas[start:] if start else readings.metas
    spec = _spec(rule)
    state = State(rule.last_ts_us, rule.holding_since_us, rule.open_alarm_id is not None)
    history = None
    if spec.kind == "rate":
        assert spec.window_s is not None
        history = _history(db, rows.sensor_id, ts[0], spec.window_s, rule.last_ts_us)
    bounds = readings.bounds(start) if spec.kind != "fault" else None
    messages: list[dict[str, Any]] = []
    for change in evaluate(spec, state, ts, vs, ms, history, bounds):
        t, v = ts[change.index], vs[change.index]
        if change.what == "raise":
            late = rows.late or now_us - t > _LATE_US
            alarm, msg = _raise(db, rule, rows, at(t), v, late)
            rule.open_alarm_id = alarm.id
            messages.append(msg)
        else:
            messages += _clear_open(db, rule, at(t), v)
    rule.holding_since_us = state.holding_since_us
    return messages


def _clear_open(
    db: Session, rule: _Claimed, cleared_at: datetime, value: float | None
) -> list[dict[str, Any]]:
    """Clear the rule's open alarm (loaded only now: most batches clear nothing)."""
    if rule.open_alarm_id is None:
        return []
    alarm = db.get(AL, rule.open_alarm_id)
    rule.open_alarm_id = None
    return _clear(db, alarm, cleared_at, value) if alarm is not None else []


def _history(
    db: Session, sensor_id: uuid.UUID, first_us: int, window_s: float, last_us: int | None
) -> tuple[list[int], list[float]] | None:
    """Stored readings of the sensor in the window before ``first_us`` (for a rate), up to
    the newest one evaluated (later ones arrived out of order and are not evaluated)."""
    if last_us is None:
        return None
    lo = first_us - int(window_s * 1_000_000)
    return telemetry_store(db).values_between(sensor_id, lo, min(last_us, first_us - 1))


def _raise(
    db: Session,
    rule: RuleLike,
    rows: StoredBatch | None,
    raised_at: datetime,
    value: float | None,
    late: bool,
    *,
    run_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
) -> tuple[models.Alarm, dict[str, Any]]:
    alarm = AL(
        id=uuid.uuid4(),
        project_id=rule.project_id,
        rule_id=rule.id,
        sensor_id=rule.sensor_id,
        run_id=rows.run_id if rows is not None else run_id,
        capture_session_id=rows.capture_session_id if rows is not None else session_id,
        kind=rule.kind,
        rule=rule_dict(rule),
        state="raised",
        raised_at=raised_at,
        value=value,
        late=late,
        created_at=datetime.now(UTC),
    )
    db.add(alarm)
    db.flush()
    _journal_alarm(db, "alarm.raised", alarm, "system:alarms", value=value, late=late)
    return alarm, live_message("alarm.raised", alarm)


def _clear(
    db: Session,
    alarm: models.Alarm,
    cleared_at: datetime,
    value: float | None,
    *,
    actor: str = "system:alarms",
    reason: str | None = None,
) -> list[dict[str, Any]]:
    if alarm.cleared_at is not None:
        return []
    alarm.cleared_at = cleared_at
    alarm.cleared_value = value
    alarm.state = "cleared"
    extra = {"reason": reason} if reason else {}
    _journal_alarm(db, "alarm.cleared", alarm, actor, value=value, **extra)
    return [live_message("alarm.cleared", alarm)]


def live_message(kind: str, alarm: models.Alarm) -> dict[str, Any]:
    """An alarm transition as the live stream sends it."""
    return {
        "type": kind,
        "alarm_id": str(alarm.id),
        "project_id": str(alarm.project_id),
        "rule_id": str(alarm.rule_id),
        "sensor_id": str(alarm.sensor_id),
        "run_id": str(alarm.run_id) if alarm.run_id else None,
        "capture_session_id": str(alarm.capture_session_id) if alarm.capture_session_id else None,
        "kind": alarm.kind,
        "state": alarm.state,
        "raised_at": alarm.raised_at.astimezone(UTC).isoformat(),
        "value": alarm.value,
        "late": alarm.late,
        "cleared_at": alarm.cleared_at.astimezone(UTC).isoformat() if alarm.cleared_at else None,
        "acknowledged_by": alarm.acknowledged_by,
    }


def _journal_alarm(db: Session, kind: str, alarm: models.Alarm, actor: str, **payload: Any) -> None:
    run = db.get(models.Run, alarm.run_id) if alarm.run_id is not None else None
    journal.record(
        db,
        kind,
        project_id=alarm.project_id,
        actor=actor,
        experiment_id=run.experiment_id if run is not None else None,
        run_id=alarm.run_id,
        capture_session_id=alarm.capture_session_id,
        sensor_id=alarm.sensor_id,
        alarm_id=alarm.id,
        alarm_rule_id=alarm.rule_id,
        alarm_kind=alarm.kind,
        raised_at=alarm.raised_at,
        cleared_at=alarm.cleared_at,
        **payload,
    )


# --- stale, by the clock ------------------------------------------------------------------


def stale_tick(db: Session, now: datetime) -> list[dict[str, Any]]:
    """Raise the alarm of every stale rule whose sensor has been silent for ``after_s``
    while its last reading's capture session runs; the live messages."""
    if db.get_bind().dialect.name == "postgresql":
        got = db.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": STALE_LOCK})
        if not got.scalar():
            return []  # another process evaluates now
    C = models.CaptureSession
    candidates = db.scalars(
        select(AR)
        .join(C, C.id == AR.last_session_id)
        .where(
            AR.kind == "stale",
            AR.deleted_at.is_(None),
            AR.open_alarm_id.is_(None),
            AR.last_ts_us.is_not(None),
            C.status == "running",
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
        session = db.get(C, rule.last_session_id)
        assert session is not None
        alarm, msg = _raise(
            db, rule, None, at(due), None, now_us - due > _LATE_US,
            run_id=session.run_id, session_id=session.id,
        )  # fmt: skip
        rule.open_alarm_id = alarm.id
        messages.append(msg)
    return messages


# --- alarms -------------------------------------------------------------------------------

_BY_RAISED = Keyset(
    "alarms", (AL.raised_at, AL.id), (aware_datetime, uid),
    lambda a: (a.raised_at.isoformat(), a.id), descending=True,
)  # fmt: skip


def list_for_run(
    db: Session,
    caller: Principal,
    run_id: uuid.UUID,
    state: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.Alarm], str | None]:
    """A run's alarms, newest raised first."""
    get_in_project(db, models.Run, run_id, caller.project_id)
    query = select(AL).where(AL.run_id == run_id)
    if state is not None:
        query = query.where(AL.state == state)
    return _BY_RAISED.page(db, query, limit, cursor)


def list_in_project(
    db: Session,
    caller: Principal,
    state: str | None,
    sensor_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.Alarm], str | None]:
    """The project's alarms, newest raised first; those of deleted runs left out."""
    R = models.Run
    query = (
        select(AL)
        .outerjoin(R, R.id == AL.run_id)
        .where(AL.project_id == caller.project_id, or_(AL.run_id.is_(None), R.deleted_at.is_(None)))
    )
    if state is not None:
        query = query.where(AL.state == state)
    if sensor_id is not None:
        query = query.where(AL.sensor_id == sensor_id)
    return _BY_RAISED.page(db, query, limit, cursor)


def get(db: Session, caller: Principal, alarm_id: uuid.UUID, lock: bool = False) -> models.Alarm:
    alarm = get_in_project(db, AL, alarm_id, caller.project_id, lock=lock)
    if alarm.run_id is not None:
        get_in_project(db, models.Run, alarm.run_id, caller.project_id)
    return alarm


def acknowledge(
    db: Session, caller: Principal, alarm_id: uuid.UUID, body: AckIn
) -> tuple[models.Alarm, list[dict[str, Any]]]:
    """Raised → acknowledged, or cleared and acknowledged; a second ack is refused."""
    alarm = get(db, caller, alarm_id, lock=True)
    if alarm.acknowledged_at is not None:
        raise InvalidInput(
            f"alarm {alarm.id} was acknowledged already by {alarm.acknowledged_by}",
            errors=[FieldError("alarm_id", "already acknowledged")],
        )
    alarm.acknowledged_at = datetime.now(UTC)
    alarm.acknowledged_by = caller.actor
    alarm.ack_note = body.note.strip() or None
    if alarm.state == "raised":
        alarm.state = "acknowledged"
    _journal_alarm(db, "alarm.acknowledged", alarm, caller.actor, note=alarm.ack_note)
    return alarm, [live_message("alarm.acknowledged", alarm)]
