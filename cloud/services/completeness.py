"""Proof of completeness: for a capture session (or a run, or one sensor of them), how many of
the readings captured at the edge arrived, are waiting there, were set aside there, and how
many are unaccounted for -- with the missing ones named as edge sequence number ranges.

Two sources, one per side of the wire:

* the cloud's own record: ``telemetry_seq_ranges`` (the numbers each stored batch brought)
  checked against the readings' rows (``telemetry_readings.seq``), so rows deleted outside
  benchlink no longer count as arrived, and are named exactly;
* the edge's last heartbeat: per sensor and epoch, which numbers went to which capture
  session (captured), which are still in its buffer (waiting) and which were dead-lettered,
  with the reason (``common.heartbeat.SequenceReport``).

Sets of numbers are lists of ``[first, last]`` ranges, so the work grows with the number of
batches and gaps, not of readings -- except one scan of the session's readings counting the
rows of each batch (a batch short of its ranges is looked at number by number).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import Edge
from cloud.errors import NotFound
from cloud.fleet import newest
from cloud.identity import Principal
from cloud.schemas_completeness import (
    MAX_GAPS,
    Gap,
    RunCompleteness,
    SensorCompleteness,
    SessionCompleteness,
)
from cloud.services.scope import get_in_project
from common.heartbeat import SequenceReport

Ranges = list[list[int]]
SR, TR, TB = models.TelemetrySeqRange, models.TelemetryReading, models.TelemetryBatch

# -- sets of numbers as ranges -------------------------------------------------------------------


def normal(ranges: Iterable[Iterable[int]]) -> Ranges:
    """Sorted, touching or overlapping ranges joined."""
    out: Ranges = []
    for a, b in sorted([int(x), int(y)] for x, y in ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def union(x: Ranges, y: Ranges) -> Ranges:
    return normal([*x, *y])


def subtract(x: Ranges, y: Ranges) -> Ranges:
    """The numbers of ``x`` not in ``y`` (both normal)."""
    out: Ranges = []
    j = 0
    for a, b in x:
        lo = a
        while j < len(y) and y[j][1] < lo:
            j += 1
        k = j
        while k < len(y) and y[k][0] <= b:
            if y[k][0] > lo:
                out.append([lo, y[k][0] - 1])
            lo = max(lo, y[k][1] + 1)
            k += 1
        if lo <= b:
            out.append([lo, b])
    return out


def intersect(x: Ranges, y: Ranges) -> Ranges:
    return subtract(x, subtract(x, y))


def size(x: Ranges) -> int:
    return sum(b - a + 1 for a, b in x)


# -- what the cloud holds ------------------------------------------------------------------------


@dataclass
class Held:
    """One sensor and epoch's numbers in the cloud, for one capture session."""

    arrived: Ranges = field(default_factory=list)
    #: the batches these came by: (batch id, its own ranges without copies)
    batches: dict[int, Ranges] = field(default_factory=dict)


def _held(db: Session, session_id: uuid.UUID) -> dict[tuple[uuid.UUID, uuid.UUID], Held]:
    """The numbers each sensor and epoch brought to the session, less those whose rows are
    gone (deleted outside benchlink)."""
    held: dict[tuple[uuid.UUID, uuid.UUID], Held] = defaultdict(Held)
    raw: dict[tuple[uuid.UUID, uuid.UUID], Ranges] = defaultdict(list)
    for sensor, epoch, batch_id, a, b, dup in db.execute(
        select(SR.sensor_id, SR.epoch, SR.batch_id, SR.seq_first, SR.seq_last, SR.duplicate)
        .where(SR.capture_session_id == session_id)
        .order_by(SR.sensor_id, SR.epoch, SR.seq_first)
    ):
        raw[(sensor, epoch)].append([a, b])
        if not dup:
            held[(sensor, epoch)].batches.setdefault(batch_id, []).append([a, b])
    rows = dict(
        db.execute(
            select(TR.batch_id, func.count(TR.seq))
            .where(TR.capture_session_id == session_id, TR.seq.is_not(None))
            .group_by(TR.batch_id)
        ).all()
    )
    for key, h in held.items():
        lost: Ranges = []
        for batch_id, ranges in h.batches.items():
            if rows.get(batch_id, 0) != size(ranges):
                lost += subtract(normal(ranges), _batch_numbers(db, session_id, batch_id))
        h.arrived = subtract(normal(raw[key]), normal(lost))
    for key in raw.keys() - held.keys():  # only copies: arrived all the same
        held[key].arrived = normal(raw[key])
    return held


def _batch_numbers(db: Session, session_id: uuid.UUID, batch_id: int) -> Ranges:
    """The numbers of a batch's rows still stored (a batch short of its ranges: rare)."""
    seqs = db.scalars(
        select(TR.seq)
        .where(TR.capture_session_id == session_id, TR.batch_id == batch_id)
        .where(TR.seq.is_not(None))
    ).all()
    return normal([s, s] for s in seqs if s is not None)


def _unnumbered(db: Session, session_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """Readings the session holds without a number, by sensor."""
    return dict(
        db.execute(
            select(TR.sensor_id, func.count())
            .where(TR.capture_session_id == session_id, TR.seq.is_(None))
            .group_by(TR.sensor_id)
        ).all()
    )


# -- what the edges report -----------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    seq: SequenceReport
    at: datetime


def edge_reports(
    db: Session, project_id: uuid.UUID, pending: Mapping[uuid.UUID, Any] | None = None
) -> dict[tuple[uuid.UUID, uuid.UUID], Report]:
    """The last sequence report of each sensor and epoch, from the project's edges' last
    heartbeats (``pending``: heartbeats this process took and has not stored, by edge id,
    with ``body`` and ``at``). The newest one wins when two edges name the same pair."""
    beats: dict[uuid.UUID, tuple[dict[str, Any], datetime]] = {}
    pending = pending or {}
    for edge_id, body, at in db.execute(
        select(Edge.id, Edge.heartbeat, Edge.heartbeat_at).where(Edge.project_id == project_id)
    ):
        latest, latest_at = newest(body, at, pending.get(edge_id))
        if latest is not None and latest_at is not None:
            beats[edge_id] = (latest, latest_at)
    out: dict[tuple[uuid.UUID, uuid.UUID], Report] = {}
    for body, at in beats.values():
        for sid, state in (body.get("sensors") or {}).items():
            data = state.get("sequence") if isinstance(state, dict) else None
            if not data:
                continue
            try:
                seq = SequenceReport.model_validate(data)
                key = (uuid.UUID(sid), seq.epoch)
            except (ValidationError, ValueError):
                continue  # a heartbeat of another shape: no report
            if key not in out or out[key].at < at:
                out[key] = Report(seq, at)
    return out


# -- the answers ---------------------------------------------------------------------------------


def for_session(
    db: Session,
    caller: Principal,
    session_id: uuid.UUID,
    *,
    sensor_id: uuid.UUID | None = None,
    pending: Mapping[uuid.UUID, Any] | None = None,
) -> SessionCompleteness:
    session = db.get(models.CaptureSession, session_id)
    if session is None:
        raise NotFound(f"capture session {session_id} not found")
    try:
        get_in_project(db, models.Run, session.run_id, caller.project_id)
    except NotFound:
        raise NotFound(f"capture session {session_id} not found") from None
    reports = edge_reports(db, caller.project_id, pending)
    return session_answer(db, session, reports, sensor_id)


def for_run(
    db: Session,
    caller: Principal,
    run_id: uuid.UUID,
    *,
    sensor_id: uuid.UUID | None = None,
    pending: Mapping[uuid.UUID, Any] | None = None,
) -> RunCompleteness:
    get_in_project(db, models.Run, run_id, caller.project_id)
    reports = edge_reports(db, caller.project_id, pending)
    sessions = db.scalars(
        select(models.CaptureSession)
        .where(models.CaptureSession.run_id == run_id)
        .order_by(models.CaptureSession.ordinal_number)
    ).all()
    answers = [session_answer(db, s, reports, sensor_id) for s in sessions]
    known = all(a.captured is not None for a in answers)
    by_reason: dict[str, int] = defaultdict(int)
    for a in answers:
        for reason, n in a.dead_lettered_by_reason.items():
            by_reason[reason] += n
    return RunCompleteness(
        run_id=run_id,
        captured=sum(a.captured or 0 for a in answers) if known else None,
        arrived=sum(a.arrived for a in answers),
        arrived_without_edge_accounting=sum(a.arrived_without_edge_accounting for a in answers),
        waiting=sum(a.waiting for a in answers),
        dead_lettered=sum(a.dead_lettered for a in answers),
        dead_lettered_by_reason=dict(by_reason),
        unaccounted=sum(a.unaccounted or 0 for a in answers) if known else None,
        edge_accounting=_overall([a.edge_accounting for a in answers]),
        sessions=answers,
    )


def _overall(kinds: list[str]) -> str:
    if not kinds or all(k == "none" for k in kinds):
        return "none"
    return "full" if all(k == "full" for k in kinds) else "partial"


def session_answer(
    db: Session,
    session: models.CaptureSession,
    reports: Mapping[tuple[uuid.UUID, uuid.UUID], Report],
    sensor_id: uuid.UUID | None = None,
) -> SessionCompleteness:
    held = _held(db, session.id)
    sensors, gaps = _numbered(held, reports, str(session.id), sensor_id)
    numbered = {s.sensor_id for s in sensors}
    _add_unnumbered(sensors, _unnumbered(db, session.id), sensor_id)
    numbered_known = all(s.edge_report for s in sensors if s.sensor_id in numbered)
    reported = [s for s in sensors if s.epoch is not None]
    without = sum(s.arrived_without_edge_accounting for s in sensors)
    kind = "none" if not reported else "full" if numbered_known and not without else "partial"
    by_reason: dict[str, int] = defaultdict(int)
    for s in sensors:
        for reason, n in s.dead_lettered_by_reason.items():
            by_reason[reason] += n
    not_reported = sum(s.dead_lettered_not_reported for s in sensors)
    listed = [_gap(db, session.id, held, g) for g in gaps[:MAX_GAPS]]
    captured = sum(s.captured or 0 for s in reported) if numbered_known and reported else None
    if not reported and not without:
        captured = 0  # nothing captured, nothing arrived: complete, trivially
    return SessionCompleteness(
        run_id=session.run_id,
        capture_session_id=session.id,
        captured=captured,
        arrived=sum(s.arrived for s in sensors),
        arrived_without_edge_accounting=without,
        waiting=sum(s.waiting for s in sensors),
        dead_lettered=sum(s.dead_lettered for s in sensors),
        dead_lettered_by_reason=dict(by_reason),
        unaccounted=(None if captured is None else sum(s.unaccounted or 0 for s in reported)),
        edge_accounting=kind,
        note=_note(kind, without, numbered_known, not_reported),
        gaps=listed,
        gaps_truncated=len(gaps) > MAX_GAPS,
        sensors=sensors,
    )


def _numbered(
    held: Mapping[tuple[uuid.UUID, uuid.UUID], Held],
    reports: Mapping[tuple[uuid.UUID, uuid.UUID], Report],
    sid_text: str,
    sensor_id: uuid.UUID | None,
) -> tuple[list[SensorCompleteness], list[tuple[uuid.UUID, uuid.UUID, list[int]]]]:
    """Each (sensor, epoch) with numbers in this session, on either side of the wire, and
    the gaps in their numbers."""
    keys = set(held)
    for key, r in reports.items():
        if any(str(s.capture_session_id) == sid_text for s in r.seq.sessions):
            keys.add(key)
    sensors: list[SensorCompleteness] = []
    gaps: list[tuple[uuid.UUID, uuid.UUID, list[int]]] = []
    for sensor, epoch in sorted(keys, key=lambda k: (str(k[0]), str(k[1]))):
        if sensor_id is not None and sensor != sensor_id:
            continue
        one, holes = _sensor(
            held.get((sensor, epoch), Held()), reports.get((sensor, epoch)), sid_text
        )
        one_out = SensorCompleteness(sensor_id=sensor, epoch=epoch, **one)
        sensors.append(one_out)
        gaps += [(sensor, epoch, h) for h in holes]
    return sensors, gaps


def _add_unnumbered(
    sensors: list[SensorCompleteness],
    unnumbered: Mapping[uuid.UUID, int],
    sensor_id: uuid.UUID | None,
) -> None:
    """Readings that arrived without sequence numbers: added to their sensor's entry, or an
    entry of their own for a sensor with none numbered."""
    for sensor, n in sorted(unnumbered.items(), key=lambda kv: str(kv[0])):
        if sensor_id is not None and sensor != sensor_id:
            continue
        match = next((s for s in sensors if s.sensor_id == sensor), None)
        if match is not None:
            match.arrived_without_edge_accounting += n
        else:
            sensors.append(
                SensorCompleteness(
                    sensor_id=sensor,
                    epoch=None,
                    edge_report=False,
                    captured=None,
                    arrived=0,
                    arrived_without_edge_accounting=n,
                    waiting=0,
                    dead_lettered=0,
                    unaccounted=None,
                )
            )


def _note(kind: str, without: int, numbered_known: bool, not_reported: int = 0) -> str:
    parts = []
    if kind == "full":
        parts.append("every reading is accounted for by its edge's sequence numbers")
    if without:
        parts.append(
            f"{without} readings arrived without edge sequence numbers (sent directly to the"
            " API): counted as arrived, outside the edge accounting"
        )
    if kind != "none" and not numbered_known:
        parts.append(
            "some sensors' edges have sent no heartbeat with sequence numbers for this session"
            " (none, or their last one no longer lists it): for them only the holes between"
            " arrived numbers are named as gaps, and captured is unknown"
        )
    if not_reported:
        parts.append(
            f"an edge's report left out {not_reported} dead-lettered readings (its oldest"
            " ranges, to keep its heartbeat small): those of this session are counted as"
            " unaccounted; `benchlink-edge dead-letter list` at the bench shows them"
        )
    if kind == "none" and not without:
        parts.append("no readings")
    return "; ".join(parts)


def _sensor(held: Held, report: Report | None, session_id: str) -> tuple[dict[str, Any], Ranges]:
    """One sensor and epoch's counts in the session, and its gaps."""
    arrived = held.arrived
    if report is None:
        # captured unknown; the holes between arrived numbers were captured for sure (a
        # sensor's numbers are contiguous), though they may belong to another session
        hull = [[arrived[0][0], arrived[-1][1]]] if arrived else []
        return (
            {
                "edge_report": False,
                "captured": None,
                "arrived": size(arrived),
                "arrived_without_edge_accounting": 0,
                "waiting": 0,
                "dead_lettered": 0,
                "unaccounted": None,
            },
            subtract(hull, arrived),
        )
    seq = report.seq
    mine = normal(
        [s.first, s.last] for s in seq.sessions if str(s.capture_session_id) == session_id
    )
    if not mine:
        # The report does not speak of this session (an edge lists its newest session
        # segments only): what it captured here is unknown, not "what arrived".
        return _sensor(held, None, session_id)
    # a heartbeat is older than the answer: numbers that arrived since it count as captured
    captured = union(mine, arrived)
    waiting = subtract(intersect(normal(seq.waiting), captured), arrived)
    dead_by_reason: dict[str, int] = defaultdict(int)
    dead_all: Ranges = []
    for d in seq.dead:
        part = subtract(subtract(intersect([[d.first, d.last]], captured), arrived), waiting)
        part = subtract(part, normal(dead_all))
        if part:
            dead_by_reason[d.reason] += size(part)
            dead_all = union(dead_all, part)
    holes = subtract(subtract(subtract(captured, arrived), waiting), dead_all)
    left_out = seq.left_out.dead_readings if seq.left_out is not None else 0
    return (
        {
            "edge_report": True,
            "reported_at": report.at,
            # only where it may explain some of this session's holes
            "dead_lettered_not_reported": left_out if holes else 0,
            "captured": size(captured),
            "arrived": size(arrived),
            "arrived_without_edge_accounting": 0,
            "waiting": size(waiting),
            "dead_lettered": size(dead_all),
            "dead_lettered_by_reason": dict(dead_by_reason),
            "unaccounted": size(holes),
        },
        holes,
    )


def _gap(
    db: Session,
    session_id: uuid.UUID,
    held: Mapping[tuple[uuid.UUID, uuid.UUID], Held],
    gap: tuple[uuid.UUID, uuid.UUID, list[int]],
) -> Gap:
    sensor, epoch, (a, b) = gap
    h = held.get((sensor, epoch))
    return Gap(
        sensor_id=sensor,
        epoch=epoch,
        first=a,
        last=b,
        count=b - a + 1,
        after_ts=_ts_of(db, session_id, sensor, h, a - 1),
        before_ts=_ts_of(db, session_id, sensor, h, b + 1),
    )


def _ts_of(
    db: Session, session_id: uuid.UUID, sensor: uuid.UUID, held: Held | None, n: int
) -> datetime | None:
    """The timestamp of the sensor's reading number ``n`` in the session, if stored: looked
    up in the batch that brought it, within that batch's time span (an index range)."""
    if held is None or n < 1:
        return None
    batch_id = next(
        (bid for bid, ranges in held.batches.items() if any(x <= n <= y for x, y in ranges)),
        None,
    )
    if batch_id is None:
        return None
    span = db.execute(select(TB.first_ts, TB.last_ts).where(TB.id == batch_id)).first()
    if span is None:
        return None
    return db.scalar(
        select(TR.ts).where(
            TR.capture_session_id == session_id,
            TR.sensor_id == sensor,
            TR.ts.between(span[0], span[1]),
            TR.batch_id == batch_id,
            TR.seq == n,
        )
    )
