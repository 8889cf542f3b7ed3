"""What the buffer holds, for ``benchlink-edge status``, the gauges and the dead-letter list.
Read-only; each runs in its caller's read transaction."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from edge.buffer.records import DEAD, INFLIGHT, PENDING, SYNCED


def rows_as_dicts(
    c: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    cursor = c.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def sensors(c: sqlite3.Connection) -> list[dict[str, Any]]:
    return rows_as_dicts(c, "SELECT * FROM sensors ORDER BY sensor_id")


def dead_letters(c: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    return rows_as_dicts(
        c,
        "SELECT id, at, kind, sensor_id, batch_id, origin, payload, reason, retried_at"
        " FROM dead_letter ORDER BY id DESC LIMIT ?",
        (limit,),
    )


def unsynced(c: sqlite3.Connection) -> int:
    """Readings not yet synced, from indexes only: cheap on any buffer size."""
    in_batches = c.execute(
        "SELECT COALESCE(SUM(count), 0) FROM batches WHERE state IN (?, ?)", (PENDING, INFLIGHT)
    ).fetchone()[0]
    # CROSS JOIN fixes the order (sensors outside): each sensor's unsealed readings are then
    # one range of readings_sensor, where the planner would scan every reading.
    unsealed = c.execute(
        "SELECT COUNT(*) FROM sensors s CROSS JOIN readings r"
        " ON r.sensor_id = s.sensor_id AND r.id > s.sealed_upto"
    ).fetchone()[0]
    return int(in_batches) + int(unsealed)


def unsent_batches(c: sqlite3.Connection) -> int:
    return int(
        c.execute(
            "SELECT COUNT(*) FROM batches WHERE state IN (?, ?)", (PENDING, INFLIGHT)
        ).fetchone()[0]
    )


def per_sensor(c: sqlite3.Connection, rate_window_s: float) -> dict[str, dict[str, Any]]:
    """Each sensor's binding, readings by state, arrival rate and last error."""
    since = time.time() - rate_window_s
    out: dict[str, dict[str, Any]] = {}
    for s in sensors(c):
        sid = s["sensor_id"]
        counts = dict(
            c.execute(
                "SELECT state, COALESCE(SUM(count), 0) FROM batches WHERE sensor_id = ?"
                " GROUP BY state",
                (sid,),
            ).fetchall()
        )
        unsealed = c.execute(
            "SELECT COUNT(*) FROM readings WHERE sensor_id = ? AND id > ?", (sid, s["sealed_upto"])
        ).fetchone()[0]
        recent = c.execute(
            "SELECT COUNT(*) FROM readings WHERE sensor_id = ? AND arrived >= ?", (sid, since)
        ).fetchone()[0]
        err = c.execute(
            "SELECT last_error FROM batches WHERE sensor_id = ? AND last_error IS NOT NULL"
            " ORDER BY last_attempt_at DESC LIMIT 1",
            (sid,),
        ).fetchone()
        out[sid] = {
            "source": s["source"],
            "run_id": s["run_id"],
            "capture_session_id": s["capture_session_id"],
            "pending": int(counts.get(PENDING, 0)) + int(unsealed),
            "inflight": int(counts.get(INFLIGHT, 0)),
            "synced": int(counts.get(SYNCED, 0)),
            "dead": int(counts.get(DEAD, 0)),
            "rate_per_s": round(recent / rate_window_s, 3),
            "last_error": err[0] if err else None,
        }
    return out


def open_dead_letters(c: sqlite3.Connection) -> int:
    """Dead letters not yet retried."""
    return int(c.execute("SELECT COUNT(*) FROM dead_letter WHERE retried_at IS NULL").fetchone()[0])
