"""Per-sensor sequence numbers: what lets the cloud prove a capture session complete.

Every reading committed to the buffer gets its sensor's next number (1, 2, 3, ...) in the
same transaction as the reading (:class:`edge.buffer.writes.SeqCounter`): a number is never
given twice and never skipped, so a sensor's numbers are contiguous. They belong to the
buffer file: its id (``edge_id``) is their *epoch*, and a new buffer file starts again from 1
under a new epoch. Readings that were already in a buffer when it was upgraded to numbers stay
pre-sequence (see :func:`edge.buffer.schema.sequence_numbers`).

A batch carries its readings' numbers as ranges (in the common case one range, known from the
batch row alone). The heartbeat reports, per sensor, what the cloud cannot know by itself
(:func:`report`): the highest number given, which numbers went to which capture session,
which ones are still waiting in the buffer, and which ones were set aside (dead-lettered)
and why. The cloud's completeness answer is captured − arrived − waiting − dead-lettered.

Runs inside its caller's read transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from common.reading import to_ranges
from edge.buffer.batches import seq_ranges
from edge.buffer.records import DEAD, INFLIGHT, PENDING

#: most ranges one sensor's report lists per kind (the rest are merged into the last one's
#: count, see :func:`_capped`): a heartbeat stays small whatever the buffer holds
MAX_RANGES = 200


def report(c: sqlite3.Connection, epoch: str) -> dict[str, dict[str, Any]]:
    """Each sensor's sequence report (``common.heartbeat.SequenceReport``), by sensor id."""
    out: dict[str, dict[str, Any]] = {}
    for sid, top, sealed_upto in c.execute(
        "SELECT sensor_id, seq, sealed_upto FROM sensors ORDER BY sensor_id"
    ).fetchall():
        sessions = [
            {"run_id": r, "capture_session_id": s, "first": a, "last": b}
            for r, s, a, b in c.execute(
                "SELECT run_id, capture_session_id, first_seq, last_seq FROM seq_sessions"
                " WHERE sensor_id = ? ORDER BY first_seq",
                (sid,),
            )
        ]
        out[sid] = {
            "epoch": epoch,
            "captured_upto": int(top),
            "sessions": sessions[-MAX_RANGES:],
            "waiting": _capped(_waiting(c, sid, int(sealed_upto))),
            "dead": _dead(c, sid),
        }
    return out


def _waiting(c: sqlite3.Connection, sensor_id: str, sealed_upto: int) -> list[list[int]]:
    """The numbers of the sensor's readings not yet accepted by the cloud: in batches pending
    or inflight, and not yet sealed (those are the numbers above the last sealed one, all of
    them, since readings are numbered in id order)."""
    numbers: list[list[int]] = []
    for batch_id, first, last, count in c.execute(
        "SELECT id, seq_first, seq_last, count FROM batches WHERE sensor_id = ?"
        " AND state IN (?, ?) ORDER BY seq",
        (sensor_id, PENDING, INFLIGHT),
    ).fetchall():
        if first is not None and last - first + 1 == count:
            numbers.append([first, last])
        else:
            numbers += seq_ranges(c, batch_id) or []
    # numbers grow with ids: the first and the last unsealed reading bound them (two index
    # probes, where MIN/MAX would read every unsealed reading of a long outage's backlog)
    ends: list[int] = []
    for order in ("", " DESC"):
        row = c.execute(
            "SELECT seq FROM readings WHERE sensor_id = ? AND id > ? AND seq IS NOT NULL"
            f" ORDER BY id{order} LIMIT 1",
            (sensor_id, sealed_upto),
        ).fetchone()
        if row is not None:
            ends.append(int(row[0]))
    if ends:
        numbers.append([ends[0], ends[-1]])
    return merge(numbers)


def _dead(c: sqlite3.Connection, sensor_id: str) -> list[dict[str, Any]]:
    """The numbers of the sensor's readings in dead-lettered batches, with each one's reason
    (``benchlink-edge dead-letter list`` shows the batches)."""
    out: list[dict[str, Any]] = []
    for batch_id, first, last, count, reason in c.execute(
        "SELECT id, seq_first, seq_last, count, last_error FROM batches"
        " WHERE sensor_id = ? AND state = ? ORDER BY seq",
        (sensor_id, DEAD),
    ).fetchall():
        if first is not None and last - first + 1 == count:
            ranges = [[first, last]]
        else:
            ranges = seq_ranges(c, batch_id) or []
        why = (reason or "dead-lettered")[:500]
        out += [{"first": a, "last": b, "reason": why} for a, b in ranges]
    # The newest: past MAX_RANGES the oldest drop out, and their readings then count as
    # unaccounted in the cloud (an over-count, never a loss hidden).
    return out[-MAX_RANGES:]


def merge(ranges: list[list[int]]) -> list[list[int]]:
    """Ranges sorted, with touching or overlapping ones joined."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _capped(ranges: list[list[int]]) -> list[list[int]]:
    """At most :data:`MAX_RANGES`: the last ones are joined into one covering them (a report
    that errs towards "waiting" for numbers between them, never towards "missing")."""
    if len(ranges) <= MAX_RANGES:
        return ranges
    head = ranges[: MAX_RANGES - 1]
    return [*head, [ranges[MAX_RANGES - 1][0], ranges[-1][1]]]


__all__ = ["MAX_RANGES", "merge", "report", "to_ranges"]
