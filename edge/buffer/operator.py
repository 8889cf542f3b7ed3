"""What an operator (the CLI) and the daemon's maintenance do to batches: retry dead ones, send
a time range again, prune synced ones, rotate dead letters. Each runs in its caller's
transaction."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from edge.buffer.batches import members
from edge.buffer.records import DEAD, PENDING, SYNCED


def retry_dead(
    c: sqlite3.Connection,
    ids: Sequence[int] | None,
    sensor_id: str | None,
    rebind: bool,
    now: float,
) -> int:
    """See :meth:`edge.buffer.Buffer.retry_dead`."""
    where = "kind = 'batch' AND retried_at IS NULL"
    params: list[Any] = []
    if ids:
        where += f" AND id IN ({','.join('?' * len(ids))})"
        params += list(ids)
    if sensor_id is not None:
        where += " AND sensor_id = ?"
        params.append(sensor_id)
    picked = c.execute(f"SELECT id, batch_id FROM dead_letter WHERE {where}", params).fetchall()
    for dl_id, batch_id in picked:
        if rebind:
            _rebind(c, batch_id)
        else:
            c.execute(
                "UPDATE batches SET state = ?, attempts = 0 WHERE id = ? AND state = ?",
                (PENDING, batch_id, DEAD),
            )
        c.execute("UPDATE dead_letter SET retried_at = ? WHERE id = ?", (now, dl_id))
    return len(picked)


def _rebind(c: sqlite3.Connection, batch_id: str) -> None:
    """The dead batch's readings move to their sensor's current binding, under a new id."""
    row = c.execute(
        "SELECT s.run_id, s.capture_session_id FROM batches b JOIN sensors s"
        " ON s.sensor_id = b.sensor_id WHERE b.id = ? AND b.state = ?",
        (batch_id, DEAD),
    ).fetchone()
    found = members(c, batch_id)
    if row is None or found is None:
        return
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
