"""What an operator (the CLI) and the daemon's maintenance do to batches: retry dead ones, send
a time range again, prune synced ones, rotate dead letters. Each runs in its caller's
transaction."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from edge.buffer import faults
from edge.buffer.batches import members, seq_ranges
from edge.buffer.records import DEAD, PENDING, SYNCED


class Retried(NamedTuple):
    """What a retry of dead letters queued again."""

    batches: int
    #: device-fault episodes the cloud refused (:mod:`edge.buffer.faults`)
    episodes: int


def retry_dead(
    c: sqlite3.Connection,
    ids: Sequence[int] | None,
    sensor_id: str | None,
    rebind: bool,
    now: float,
) -> Retried:
    """See :meth:`edge.buffer.Buffer.retry_dead`."""
    where = "kind IN ('batch', 'fault') AND retried_at IS NULL"
    params: list[Any] = []
    if ids:
        where += f" AND id IN ({','.join('?' * len(ids))})"
        params += list(ids)
    if sensor_id is not None:
        where += " AND sensor_id = ?"
        params.append(sensor_id)
    picked = c.execute(
        f"SELECT id, kind, batch_id, payload FROM dead_letter WHERE {where}", params
    ).fetchall()
    batches = episodes = 0
    for dl_id, kind, batch_id, payload in picked:
        if kind == "fault":
            episodes += faults.retry(c, faults.episode_of(payload), rebind=rebind)
        elif rebind:
            _rebind(c, batch_id)
            batches += 1
        else:
            c.execute(
                "UPDATE batches SET state = ?, attempts = 0 WHERE id = ? AND state = ?",
                (PENDING, batch_id, DEAD),
            )
            batches += 1
        c.execute("UPDATE dead_letter SET retried_at = ? WHERE id = ?", (now, dl_id))
    return Retried(batches, episodes)


def _rebind(c: sqlite3.Connection, batch_id: str) -> None:
    """The dead batch's readings move to their sensor's current binding, under a new id, and
    so do their sequence numbers' session segments: each capture session's completeness
    counts them where they are sent, not where they were captured first."""
    row = c.execute(
        "SELECT s.run_id, s.capture_session_id, s.sensor_id FROM batches b JOIN sensors s"
        " ON s.sensor_id = b.sensor_id WHERE b.id = ? AND b.state = ?",
        (batch_id, DEAD),
    ).fetchone()
    found = members(c, batch_id)
    if row is None or found is None:
        return
    numbers = seq_ranges(c, batch_id)
    if numbers:
        move_numbers(c, row[2], numbers, (row[0], row[1]))
    new_id = str(uuid.uuid4())
    c.execute(
        f"UPDATE {found.table} SET run_id = ?, capture_session_id = ? WHERE {found.where}",
        (row[0], row[1], *found.params),
    )
    c.execute("UPDATE readings SET batch_id = ? WHERE batch_id = ?", (new_id, batch_id))
    c.execute(
        "UPDATE batches SET id = ?, run_id = ?, capture_session_id = ?, state = ?,"
        " attempts = 0, last_error = NULL WHERE id = ?",
        (new_id, row[0], row[1], PENDING, batch_id),
    )


def move_numbers(
    c: sqlite3.Connection, sensor_id: str, ranges: list[list[int]], binding: tuple[str, str]
) -> None:
    """Record that the sensor's numbers in ``ranges`` went to ``binding`` (run, session): the
    segments of ``seq_sessions`` they lie in are split around them, and neighbours with one
    binding joined (see :func:`edge.buffer.writes.extend_session`)."""
    rows = c.execute(
        "SELECT run_id, capture_session_id, first_seq, last_seq FROM seq_sessions"
        " WHERE sensor_id = ? ORDER BY first_seq",
        (sensor_id,),
    ).fetchall()
    pieces: list[tuple[str, str, int, int]] = []
    for run_id, session_id, first, last in rows:
        lo = first
        for a, b in sorted(ranges):  # disjoint
            if b < lo or a > last:
                continue
            if a > lo:
                pieces.append((run_id, session_id, lo, a - 1))
            pieces.append((*binding, max(a, lo), min(b, last)))
            lo = min(b, last) + 1
        if lo <= last:
            pieces.append((run_id, session_id, lo, last))
    joined: list[tuple[str, str, int, int]] = []
    for p in pieces:
        if joined and joined[-1][:2] == p[:2] and joined[-1][3] + 1 == p[2]:
            joined[-1] = (*p[:2], joined[-1][2], p[3])
        else:
            joined.append(p)
    c.execute("DELETE FROM seq_sessions WHERE sensor_id = ?", (sensor_id,))
    c.executemany(
        "INSERT INTO seq_sessions (sensor_id, run_id, capture_session_id, first_seq, last_seq)"
        " VALUES (?, ?, ?, ?, ?)",
        [(sensor_id, *p) for p in joined],
    )


def requeue_range(c: sqlite3.Connection, since: str, until: str, sensor_id: str | None) -> int:
    """Mark the synced batches that overlap [since, until] for sending again."""
    sql = "UPDATE batches SET state = ?, attempts = 0 WHERE state = ? AND first_ts <= ?"
    sql += " AND last_ts >= ?"
    params: list[Any] = [PENDING, SYNCED, until, since]
    if sensor_id is not None:
        sql += " AND sensor_id = ?"
        params.append(sensor_id)
    return int(c.execute(sql, params).rowcount)


def prune(c: sqlite3.Connection, cutoff: float) -> int:
    """Delete the batches synced at or before ``cutoff`` (unix time) and their readings."""
    ids = [
        r[0]
        for r in c.execute(
            "SELECT id FROM batches WHERE state = ? AND synced_at <= ?", (SYNCED, cutoff)
        )
    ]
    for batch_id in ids:
        found = members(c, batch_id)
        if found is not None:
            c.execute(f"DELETE FROM {found.table} WHERE {found.where}", found.params)
    c.executemany("DELETE FROM batches WHERE id = ?", [(i,) for i in ids])
    return len(ids)


def rotate_dead_letters(c: sqlite3.Connection, keep: int) -> int:
    """Delete the oldest dead letters beyond ``keep``; return how many went.

    Only records that hold no unsynced reading go: rejected MQTT payloads and serial or
    reading records (copies kept for inspection; the message was acked as dead), and records
    of batches already retried. A dead *batch* keeps its record and its readings until an
    operator retries it -- unsynced data is never dropped by a rotation."""
    return int(
        c.execute(
            "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter"
            " WHERE kind != 'batch' OR retried_at IS NOT NULL ORDER BY id DESC"
            " LIMIT -1 OFFSET ?)",
            (keep,),
        ).rowcount
    )
