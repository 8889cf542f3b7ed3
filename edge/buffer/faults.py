"""Device faults (an open or shorted probe) kept until the cloud has them.

A fault has no value, so it is not a reading: it has a table of its own. A probe open for an
hour at 10 Hz reports 36,000 faults; they are one **episode** -- a row with the fault's
``kind``, the time of its first and last fault and their ``count`` -- that grows while the
fault lasts. The source names the episode (a random id) at its first fault and ends it at the
sensor's next reading or a fault of another kind (a restart of the daemon starts a new one).

Sending: an episode goes to the cloud whole (``POST /api/v1/sensors/{id}/faults``), again
each time it has grown (``sent_count < count``). The cloud keys it by its id and keeps the
latest of what it was sent, so an episode sent twice -- a retry after a lost answer -- is
stored once and never raises an alarm twice: an update only ever moves ``last_ts`` and
``count`` forward. One row per episode, not per fault: the buffer and the wire carry what
changed, whatever the rate of the device.

Runs inside the transactions :class:`edge.buffer.Buffer` opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from edge.buffer.records import NewFault, ts_text

#: longest detail kept (the decoder's description of the fault)
MAX_DETAIL = 200
#: episodes read for sending at once
SEND_AHEAD = 50
OK, DEAD = "ok", "dead"


def create(c: sqlite3.Connection) -> None:
    """The buffer migration ``sensor_faults``."""
    c.execute(
        "CREATE TABLE IF NOT EXISTS faults (id INTEGER PRIMARY KEY, episode TEXT NOT NULL UNIQUE,"
        " sensor_id TEXT NOT NULL, run_id TEXT NOT NULL, capture_session_id TEXT NOT NULL,"
        " kind TEXT NOT NULL, detail TEXT, first_ts TEXT NOT NULL, last_ts TEXT NOT NULL,"
        " count INTEGER NOT NULL, sent_count INTEGER NOT NULL DEFAULT 0,"
        " state TEXT NOT NULL DEFAULT 'ok', last_error TEXT, updated REAL NOT NULL)"
    )
    c.execute(
        "CREATE INDEX IF NOT EXISTS faults_unsent ON faults (sensor_id, id)"
        " WHERE sent_count < count AND state = 'ok'"
    )


def store(
    c: sqlite3.Connection,
    faults: Sequence[NewFault],
    bindings: dict[str, tuple[str, str]],
    now: float,
) -> set[str]:
    """Start or grow each fault's episode (stamped with its sensor's binding when it
    starts); return the sensors whose episodes changed. A fault of a sensor the buffer does
    not know is dropped: the source only names configured sensors."""
    rows: list[tuple[Any, ...]] = []
    for f in faults:
        bound = bindings.get(f.sensor_id)
        if bound is None:
            continue
        detail = f.detail[:MAX_DETAIL] if f.detail else None
        first, last = ts_text(f.first_ts), ts_text(f.last_ts)
        rows.append((f.episode, f.sensor_id, *bound, f.kind, detail, first, last, f.count, now))
    c.executemany(
        "INSERT INTO faults (episode, sensor_id, run_id, capture_session_id, kind, detail,"
        " first_ts, last_ts, count, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (episode) DO UPDATE SET last_ts = MAX(last_ts, excluded.last_ts),"
        " count = count + excluded.count, updated = excluded.updated",
        rows,
    )
    return {r[1] for r in rows}


def unsent(c: sqlite3.Connection, sensor_id: str) -> list[dict[str, Any]]:
    """The sensor's episodes the cloud has not seen as they are now, oldest first."""
    cur = c.execute(
        "SELECT episode, run_id, capture_session_id, kind, detail, first_ts, last_ts, count"
        " FROM faults WHERE sensor_id = ? AND sent_count < count AND state = 'ok'"
        " ORDER BY id LIMIT ?",
        (sensor_id, SEND_AHEAD),
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


def mark_sent(c: sqlite3.Connection, episode: str, count: int, now: float) -> None:
    """The cloud has the episode up to ``count`` faults (more may have come since)."""
    c.execute(
        "UPDATE faults SET sent_count = MAX(sent_count, ?), last_error = NULL, updated = ?"
        " WHERE episode = ?",
        (count, now, episode),
    )


def mark_retry(c: sqlite3.Connection, episode: str, error: str) -> None:
    c.execute("UPDATE faults SET last_error = ? WHERE episode = ?", (error[:1000], episode))


def mark_dead(c: sqlite3.Connection, episode: str, reason: str, now: float) -> None:
    """The cloud refused the episode for good (a 4xx): kept, not sent again, and listed
    with the dead letters."""
    row = c.execute(
        "UPDATE faults SET state = ?, last_error = ? WHERE episode = ?"
        " RETURNING sensor_id, kind, first_ts, last_ts, count",
        (DEAD, reason[:1000], episode),
    ).fetchone()
    if row is None:
        return
    payload = f"episode={episode} kind={row[1]} first={row[2]} last={row[3]} count={row[4]}"
    c.execute(
        "INSERT INTO dead_letter (at, kind, sensor_id, payload, reason)"
        " VALUES (?, 'fault', ?, ?, ?)",
        (now, row[0], payload, reason[:1000]),
    )


def episode_of(payload: str) -> str:
    """The episode id in a dead letter's payload (as :func:`mark_dead` writes it)."""
    return payload.split(" ", 1)[0].removeprefix("episode=")


def retry(c: sqlite3.Connection, episode: str, *, rebind: bool) -> int:
    """Send a refused episode again (same id: the cloud stores nothing twice); with
    ``rebind`` under its sensor's current run and capture session. 1 if it was refused."""
    if rebind:
        c.execute(
            "UPDATE faults SET (run_id, capture_session_id) = (SELECT s.run_id,"
            " s.capture_session_id FROM sensors s WHERE s.sensor_id = faults.sensor_id)"
            " WHERE episode = ? AND state = ?",
            (episode, DEAD),
        )
    return int(
        c.execute(
            "UPDATE faults SET state = ?, last_error = NULL WHERE episode = ? AND state = ?",
            (OK, episode, DEAD),
        ).rowcount
    )


def prune(c: sqlite3.Connection, cutoff: float) -> int:
    """Delete the episodes the cloud has whole, last changed at or before ``cutoff``."""
    return int(
        c.execute(
            "DELETE FROM faults WHERE sent_count >= count AND updated <= ?", (cutoff,)
        ).rowcount
    )


def has_unsent(c: sqlite3.Connection, sensor_id: str) -> bool:
    """Whether the sensor has an episode to send (one probe of the ``faults_unsent`` index)."""
    return (
        c.execute(
            "SELECT 1 FROM faults WHERE sensor_id = ? AND sent_count < count AND state = 'ok'"
            " LIMIT 1",
            (sensor_id,),
        ).fetchone()
        is not None
    )


def waiting_sensors(c: sqlite3.Connection) -> set[str]:
    """The sensors with episodes to send (what a daemon that starts must send first)."""
    return {
        r[0]
        for r in c.execute(
            "SELECT DISTINCT sensor_id FROM faults WHERE sent_count < count AND state = 'ok'"
        )
    }
