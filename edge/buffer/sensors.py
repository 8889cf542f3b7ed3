"""Sensors in the buffer: their token and their binding (run / capture session). Each function
runs in its caller's transaction."""

from __future__ import annotations

import sqlite3


def upsert(
    c: sqlite3.Connection,
    sensor_id: str,
    token: str,
    source: str,
    binding: tuple[str, str],
    now: float,
) -> None:
    """Register a configured sensor. The config's binding wins only when it changed in the
    config since it was last applied; otherwise a runtime ``bind`` survives a restart."""
    row = c.execute(
        "SELECT config_run_id, config_session_id FROM sensors WHERE sensor_id = ?", (sensor_id,)
    ).fetchone()
    run_id, session_id = binding
    if row is None:
        # (readings without their sensor's row exist only in a file edited by hand; the ones
        # of them already in a batch stay out of the next one all the same)
        c.execute(
            "INSERT INTO sensors (sensor_id, token, source, run_id, capture_session_id,"
            " config_run_id, config_session_id, bound_at, sealed_upto)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, COALESCE((SELECT MAX(id) FROM readings"
            " WHERE sensor_id = ? AND batch_id IS NOT NULL), 0))",
            (sensor_id, token, source, run_id, session_id, run_id, session_id, now, sensor_id),
        )
    elif tuple(row) != binding:
        c.execute(
            "UPDATE sensors SET token = ?, source = ?, run_id = ?, capture_session_id = ?,"
            " config_run_id = ?, config_session_id = ?, bound_at = ? WHERE sensor_id = ?",
            (token, source, run_id, session_id, run_id, session_id, now, sensor_id),
        )
    else:
        c.execute(
            "UPDATE sensors SET token = ?, source = ? WHERE sensor_id = ?",
            (token, source, sensor_id),
        )


def bind(c: sqlite3.Connection, sensor_id: str, binding: tuple[str, str], now: float) -> None:
    """Move a sensor's next readings to another run/session (KeyError: unknown sensor)."""
    cur = c.execute(
        "UPDATE sensors SET run_id = ?, capture_session_id = ?, bound_at = ? WHERE sensor_id = ?",
        (*binding, now, sensor_id),
    )
    if cur.rowcount == 0:
        raise KeyError(f"unknown sensor {sensor_id}")


def set_token(c: sqlite3.Connection, sensor_id: str, token: str) -> bool:
    cur = c.execute(
        "UPDATE sensors SET token = ? WHERE sensor_id = ? AND token != ?",
        (token, sensor_id, token),
    )
    return cur.rowcount > 0


def token(c: sqlite3.Connection, sensor_id: str) -> str:
    row = c.execute("SELECT token FROM sensors WHERE sensor_id = ?", (sensor_id,)).fetchone()
    if row is None:
        raise KeyError(sensor_id)
    return str(row[0])
