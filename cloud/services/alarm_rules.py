"""Alarm rules of a sensor: their fields per kind, checked; created, listed, changed and
deleted (journal events); a count of them kept on the sensor, so that ingest evaluates
only a sensor that has some."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import FieldError, InvalidInput, NotFound, invalid
from cloud.identity import Principal
from cloud.pagination import Keyset, aware_datetime, uid
from cloud.schemas_alarms import AlarmRuleIn, AlarmRulePatch
from cloud.services import journal
from cloud.services.alarm_lifecycle import RuleLike, clear
from cloud.services.scope import get_in_project
from common.alarm_eval import Spec

AR, AL = models.AlarmRule, models.Alarm

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


def _check(rule: models.AlarmRule) -> None:
    """Per kind: the fields it needs are there, the others are not, and they make sense."""
    errors = _fields_of_kind(rule) + _values_of_kind(rule)
    if errors:
        raise InvalidInput(
            f"{len(errors)} problem(s) with this {rule.kind} rule: "
            f"{errors[0].field} {errors[0].reason}",
            errors=errors,
        )


def _fields_of_kind(rule: models.AlarmRule) -> list[FieldError]:
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
    return errors


def _values_of_kind(rule: models.AlarmRule) -> list[FieldError]:
    errors: list[FieldError] = []
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
    return errors


def _count(db: Session, sensor_id: uuid.UUID, delta: int) -> None:
    sensor = models.Sensor
    db.execute(
        update(sensor).where(sensor.id == sensor_id).values(alarm_rules=sensor.alarm_rules + delta)
    )


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
        messages = clear(
            db, rule.open_alarm_id, now, None, actor=caller.actor, reason="rule deleted"
        )
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


def spec_of(rule: RuleLike) -> Spec:
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
