"""The claim of a sensor's alarm rules by a stored batch: the rules that apply to it (a run's,
and the sensor's of the kinds the run has none of), locked to the commit, each as it was
before the batch, its newest reading moved on to the batch's (nearly every batch changes
that, and only that). On PostgreSQL or SQLite, chosen here; the evaluator
(:mod:`cloud.services.alarm_evaluation`) does not ask which.

PostgreSQL: one statement locks the rows (in id order: concurrent ingests of a sensor lock
them in one order, so with several API workers two batches of one sensor are evaluated one
after the other, the second seeing the first's state), updates them and returns them with
their previous ``last_ts_us``, and with each ``rate`` rule its window of stored readings
before the batch, when the batch is newer than everything the rule evaluated (the usual
case): one round trip where the window's own read was a second. SQLite runs one writing
transaction at a time: a read, then the update; windows are read by the evaluator."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from cloud.db import models
from cloud.store.telemetry.base import StoredBatch, Window
from cloud.store.telemetry.postgres import sent_window


@dataclass
class Claimed:
    """A rule as the evaluator needs it: its definition, its state, ``last_ts_us``, the
    newest reading it had evaluated before this batch, and for a ``rate`` rule, when the
    claim read it, the window of stored readings before the batch (None: not read)."""

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
    window: Window | None = None


def claim(
    db: Session, rows: StoredBatch, first_us: int, last_us: int, now_us: int
) -> list[Claimed]:
    """The batch's rules, claimed (``first_us``, ``last_us``: its oldest and newest
    reading; ``now_us``: the arrival, which ``stale`` rules keep)."""
    params = {
        "b_sensor": rows.sensor_id,
        "b_run": rows.run_id,
        "b_session": rows.capture_session_id,
        "b_first_us": first_us,
        "b_last_us": last_us,
        "b_now_us": now_us,
    }
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        pg = conn.connection.driver_connection  # psycopg's own, in the same transaction
        assert pg is not None
        with pg.cursor(binary=True) as cur:
            cur.execute(_PG_CLAIM, params)
            return [_with_window(row) for row in cur.fetchall()]
    found, move = _sqlite_statements()
    claimed = [Claimed(*row) for row in conn.execute(found, params)]
    conn.execute(move, params)
    return claimed


def _with_window(row: tuple[Any, ...]) -> Claimed:
    *rule, read, stamps, values = row
    claimed = Claimed(*rule)
    if read:
        claimed.window = sent_window(stamps, values)
    return claimed


_RULE_COLUMNS = [f.name for f in fields(Claimed)[:-2]]

# The previous ``last_ts_us`` of a rule comes from the locking read (``prior``): the UPDATE's
# own row is already the new one in RETURNING. The window: readings from ``window_s``
# before the batch's first (microseconds, truncated as the evaluator does) up to the newest
# the rule evaluated, as ``values_between`` reads them (binary arrays). Read only for a
# rate rule whose newest evaluated reading is older than the whole batch (otherwise the
# evaluator reads the window from the first reading it evaluates), and only when the
# rule's row locked is the one this statement's snapshot sees (``fresh``): a batch that
# waited for the lock while another of its sensor committed sees that one's rule row
# (PostgreSQL rereads a row locked after a wait) but not its readings (the snapshot is
# older than the wait), so the evaluator reads the window then, in a statement of its own.
_PG_CLAIM = f"""
WITH prior AS (
    SELECT r.id, r.last_ts_us, r.kind, r.window_s, r.ctid AS version
    FROM alarm_rules AS r
    WHERE r.sensor_id = %(b_sensor)s AND r.deleted_at IS NULL
      AND (r.run_id = %(b_run)s OR (r.run_id IS NULL AND NOT EXISTS (
          SELECT FROM alarm_rules AS o
          WHERE o.sensor_id = %(b_sensor)s AND o.run_id = %(b_run)s AND o.kind = r.kind
            AND o.deleted_at IS NULL)))
    ORDER BY r.id
    FOR UPDATE
)
UPDATE alarm_rules AS t SET
    last_ts_us = CASE
        WHEN t.kind = 'stale' AND t.last_ts_us > %(b_now_us)s::int8 THEN t.last_ts_us
        WHEN t.kind = 'stale' THEN %(b_now_us)s::int8
        WHEN t.last_ts_us IS NULL OR t.last_ts_us < %(b_last_us)s::int8 THEN %(b_last_us)s::int8
        ELSE t.last_ts_us
    END,
    last_session_id = CASE
        WHEN t.kind = 'stale' OR t.last_ts_us IS NULL OR t.last_ts_us < %(b_last_us)s::int8
        THEN %(b_session)s
        ELSE t.last_session_id
    END
FROM prior CROSS JOIN LATERAL (
    SELECT prior.kind = 'rate' AND prior.last_ts_us < %(b_first_us)s::int8
        AND prior.version = (SELECT s.ctid FROM alarm_rules AS s WHERE s.id = prior.id)
        AS read
) AS fresh LEFT JOIN LATERAL (
    SELECT array_send(array_agg(w.ts)) AS stamps, array_send(array_agg(w.value)) AS vals
    FROM (
        SELECT ts, value FROM telemetry_readings
        WHERE fresh.read AND sensor_id = %(b_sensor)s
          AND ts >= timestamptz 'epoch' + interval '1 microsecond'
              * (%(b_first_us)s::int8 - floor(prior.window_s * 1000000)::int8)
          AND ts <= timestamptz 'epoch' + interval '1 microsecond' * prior.last_ts_us
        ORDER BY ts
    ) AS w
) AS h ON true
WHERE t.id = prior.id
RETURNING {", ".join(f"t.{c}" for c in _RULE_COLUMNS)}, prior.last_ts_us,
    coalesce(fresh.read, false), h.stamps, h.vals
"""


@cache
def _sqlite_statements() -> tuple[Executable, Executable]:
    """The read and the update, Core statements on the rules' table with bound parameters,
    built once (and so compiled once): building them per batch cost more than running them."""
    t, run_rule = _RULE_ROWS, _RULE_ROWS.alias("run_rule")
    overridden = exists().where(
        run_rule.c.sensor_id == bindparam("b_sensor"), run_rule.c.run_id == bindparam("b_run"),
        run_rule.c.kind == t.c.kind, run_rule.c.deleted_at.is_(None),
    )  # fmt: skip
    applies = and_(
        t.c.sensor_id == bindparam("b_sensor"),
        t.c.deleted_at.is_(None),
        or_(t.c.run_id == bindparam("b_run"), and_(t.c.run_id.is_(None), ~overridden)),
    )
    # Stale rules keep the arrival (the cloud's clock); the others the newest reading, and
    # the session it came in, when the batch has one newer than theirs.
    stamp = t.c.last_ts_us.type  # typed: a bound value in a CASE has no column to go by
    last_us, now_us = bindparam("b_last_us", type_=stamp), bindparam("b_now_us", type_=stamp)
    newer = or_(t.c.last_ts_us.is_(None), t.c.last_ts_us < last_us)
    stale = t.c.kind == "stale"
    moved = {
        "last_ts_us": case(
            (and_(stale, t.c.last_ts_us > now_us), t.c.last_ts_us),
            (stale, now_us),
            (newer, last_us),
            else_=t.c.last_ts_us,
        ),
        "last_session_id": case(
            (or_(stale, newer), bindparam("b_session", type_=t.c.last_session_id.type)),
            else_=t.c.last_session_id,
        ),
    }
    columns = [t.c[name] for name in _RULE_COLUMNS]
    found = select(*columns, t.c.last_ts_us).where(applies).order_by(t.c.id)
    return found, update(t).where(applies).values(moved)


_RULE_ROWS = cast(Table, models.AlarmRule.__table__)
