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

#: most ranges one sensor's report lists per kind (waiting ones beyond are joined, see
#: :func:`capped`; sessions and dead ranges beyond are left out and counted, see
#: :func:`newest_sessions`, :func:`fewest_dead`)
MAX_RANGES = 200


def report(c: sqlite3.Connection, epoch: str) -> dict[str, dict[str, Any]]:
    """Each sensor's sequence report (``common.heartbeat.SequenceReport``), by sensor id."""
    out: dict[str, dict[str, Any]] = {}
    for sid, top, sealed_upto in c.execute(
        "SELECT sensor_id, seq, sealed_upto FROM sensors ORDER BY sensor_id"
    ).fetchall():
        segments = [
            {"run_id": r, "capture_session_id": s, "first": a, "last": b}
            for r, s, a, b in c.execute(
                "SELECT run_id, capture_session_id, first_seq, last_seq FROM seq_sessions"
                " WHERE sensor_id = ? ORDER BY first_seq",
                (sid,),
            )
        ]
        sessions, sessions_out = newest_sessions(segments, MAX_RANGES)
        dead, dead_out, dead_readings = fewest_dead(_dead(c, sid), MAX_RANGES, sessions)
        out[sid] = {
            "epoch": epoch,
            "captured_upto": int(top),
            "sessions": sessions,
            "waiting": capped(_waiting(c, sid, int(sealed_upto)), MAX_RANGES),
            "dead": dead,
        }
        add_left_out(out[sid], sessions_out, dead_out, dead_readings)
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
    (``benchlink-edge dead-letter list`` shows the batches), oldest first; consecutive
    batches set aside for the same reason are one range."""
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
        for a, b in ranges:
            if out and out[-1]["last"] + 1 == a and out[-1]["reason"] == why:
                out[-1]["last"] = b
            else:
                out.append({"first": a, "last": b, "reason": why})
    return out


def newest_sessions(segments: list[dict[str, Any]], most: int) -> tuple[list[dict[str, Any]], int]:
    """The segments (in order) of the newest capture sessions that fit in ``most`` segments,
    each session whole, and how many sessions were left out. Whole: a session listed with
    only some of its segments would look captured short, and the cloud would count the
    readings of the others as neither captured nor missing -- a loss hidden. A session not
    listed at all is "not accounted" in the cloud (captured unknown)."""
    if len(segments) <= most:
        return segments, 0
    newest: dict[str, int] = {}
    counts: dict[str, int] = {}
    for i, seg in enumerate(segments):
        sid = str(seg["capture_session_id"])
        newest[sid] = i
        counts[sid] = counts.get(sid, 0) + 1
    kept: set[str] = set()
    room = most
    for sid in sorted(newest, key=newest.__getitem__, reverse=True):
        if counts[sid] > room:
            break
        kept.add(sid)
        room -= counts[sid]
    return [s for s in segments if str(s["capture_session_id"]) in kept], len(newest) - len(kept)


def fewest_dead(
    dead: list[dict[str, Any]], most: int, listed: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int, int]:
    """At most ``most`` of the dead ranges (in order), and how many ranges and readings were
    left out: first those outside the ``listed`` session segments (their sessions are not
    accounted anyway), then the oldest. Those readings count as unaccounted in the cloud
    (an over-count, never a loss hidden)."""
    if len(dead) <= most:
        return dead, 0, 0
    spans = [(s["first"], s["last"]) for s in listed]

    def in_listed(d: dict[str, Any]) -> bool:
        return any(a <= d["last"] and d["first"] <= b for a, b in spans)

    order = [i for i, d in enumerate(dead) if not in_listed(d)]
    order += [i for i, d in enumerate(dead) if in_listed(d)]
    gone = set(order[: len(dead) - most])
    readings = sum(dead[i]["last"] - dead[i]["first"] + 1 for i in gone)
    return [d for i, d in enumerate(dead) if i not in gone], len(gone), readings


def add_left_out(report: dict[str, Any], sessions: int, dead: int, dead_readings: int) -> None:
    """Add to the report's ``left_out`` counts (``common.heartbeat.SeqLeftOut``); no key
    while nothing is left out."""
    if not (sessions or dead or dead_readings):
        return
    left = report.setdefault("left_out", {"sessions": 0, "dead": 0, "dead_readings": 0})
    left["sessions"] += sessions
    left["dead"] += dead
    left["dead_readings"] += dead_readings


def merge(ranges: list[list[int]]) -> list[list[int]]:
    """Ranges sorted, with touching or overlapping ones joined."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def capped(ranges: list[list[int]], most: int) -> list[list[int]]:
    """At most ``most`` ranges: the last ones are joined into one covering them (a report
    that errs towards "waiting" for numbers between them, never towards "missing")."""
    if len(ranges) <= most:
        return ranges
    if most < 1:
        return [[ranges[0][0], ranges[-1][1]]] if ranges else []
    head = ranges[: most - 1]
    return [*head, [ranges[most - 1][0], ranges[-1][1]]]


__all__ = [
    "MAX_RANGES",
    "add_left_out",
    "capped",
    "fewest_dead",
    "merge",
    "newest_sessions",
    "report",
    "to_ranges",
]
