"""Sealing readings into batches, and the batches' life in the send queue.

Every function runs inside a transaction its caller (:class:`edge.buffer.Buffer`) opened.

Life of a reading: committed -> cut into a batch by :func:`seal` (one transaction gives up to
``batch_size`` readings of one sensor+run+session, in arrival order, a stable uuid) -> the
batch goes ``pending`` -> ``inflight`` -> ``synced`` or ``dead``. A sealed batch is never
re-cut: after a crash the same id with the same readings is sent again and the cloud's
idempotency drops the copy.

Which readings a batch holds -- two kinds, so that sealing never rewrites readings:

* **ranged** (every batch :func:`seal` cuts): the sensor's readings with ``id`` in
  ``[first_id, last_id]`` whose ``batch_id`` is NULL. A sensor's readings up to
  ``sensors.sealed_upto`` are sealed, the ones above it are not. Sealing is then one INSERT
  and one UPDATE of the sensor, whatever the batch size (setting ``batch_id`` on each of a
  thousand readings cost more of the edge's CPU than anything else while draining a backlog).
* **explicit**: the readings whose ``batch_id`` is the batch's id -- the readings of a batch
  that the cloud refused one by one (:func:`split`), and every batch of a buffer written
  before ranged batches (a reading with a ``batch_id`` never belongs to a ranged batch).

Reading ids only grow, even after synced readings are pruned (see
:func:`edge.buffer.writes.next_reading_id`), so a new reading is never taken for one below
``sealed_upto``.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from common.reading import to_ranges
from common.wire import MAX_TELEMETRY_BODY_BYTES
from edge.buffer.records import DEAD, INFLIGHT, PENDING, SYNCED, DeadLetter
from edge.buffer.writes import insert_dead_letters

#: a sealed batch's body stays below this (the cloud answers 413 above MAX_TELEMETRY_BODY_BYTES)
MAX_BATCH_BYTES = MAX_TELEMETRY_BODY_BYTES // 2
#: estimated JSON bytes of the batch envelope and of one reading without its meta
BATCH_OVERHEAD_BYTES, READING_OVERHEAD_BYTES = 200, 120


def readings_table(first_id: int, last_id: int, count: int) -> str:
    """The readings table for a scan of one sensor's ids ``first_id`` .. ``last_id``: where
    they are mostly that sensor's, reading the table's own id order is cheaper (about half
    the CPU) than a lookup from the (sensor_id, id) index per reading; where other sensors'
    readings lie between, the index is."""
    return "readings NOT INDEXED" if last_id - first_id < 2 * count else "readings"


class Members(NamedTuple):
    """Which readings a batch holds: ``f"... FROM {table} WHERE {where}"`` with ``params``."""

    table: str
    where: str
    params: tuple[Any, ...]


class Group(NamedTuple):
    """The readings :func:`seal` cuts into its next batch."""

    run_id: str
    session_id: str
    first_id: int
    last_id: int
    n_readings: int
    first_ts: str
    last_ts: str
    #: when the first of them arrived
    arrived: float
    #: nothing follows them yet (a partial batch)
    last: bool
    #: their sequence numbers, exactly ``seq_first``..``seq_last``; None for pre-sequence
    #: readings (a batch never mixes those with numbered ones)
    seq_first: int | None = None
    seq_last: int | None = None


# -- sealing -------------------------------------------------------------------------------------


def seal(
    c: sqlite3.Connection,
    sensor_id: str,
    batch_size: int,
    now: float,
    older_than: float | None,
    ahead: int | None,
) -> int:
    """Cut the sensor's unsealed readings into batches; return how many were made (see
    :meth:`edge.buffer.Buffer.seal`). One batch at a time, not the whole backlog: after a long
    outage there may be millions of unsealed readings, and holding them all in memory is what
    an edge box cannot afford."""
    row = c.execute("SELECT sealed_upto FROM sensors WHERE sensor_id = ?", (sensor_id,)).fetchone()
    if row is None:
        return 0
    if ahead is not None:
        ahead -= waiting(c, sensor_id)
    upto, made = int(row[0]), 0
    while ahead is None or made < ahead:
        group = next_group(c, sensor_id, upto, batch_size)
        if group is None or (group.last and older_than is not None and group.arrived > older_than):
            break
        _insert_ranged(c, sensor_id, group, now)
        upto = group.last_id
        made += 1
        if group.last:
            break
    if made:
        c.execute("UPDATE sensors SET sealed_upto = ? WHERE sensor_id = ?", (upto, sensor_id))
    return made


def waiting(c: sqlite3.Connection, sensor_id: str) -> int:
    """The sensor's batches still to send."""
    return int(
        c.execute(
            "SELECT COUNT(*) FROM batches WHERE sensor_id = ? AND state IN (?, ?)",
            (sensor_id, PENDING, INFLIGHT),
        ).fetchone()[0]
    )


def _insert_ranged(c: sqlite3.Connection, sensor_id: str, g: Group, now: float) -> None:
    c.execute(
        "INSERT INTO batches (id, sensor_id, run_id, capture_session_id, state, count,"
        " first_ts, last_ts, sealed_at, ranged, first_id, last_id, seq_first, seq_last)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
        (
            str(uuid.uuid4()),
            sensor_id,
            g.run_id,
            g.session_id,
            PENDING,
            g.n_readings,
            g.first_ts,
            g.last_ts,
            now,
            g.first_id,
            g.last_id,
            g.seq_first,
            g.seq_last,
        ),
    )


def next_group(c: sqlite3.Connection, sensor_id: str, upto: int, batch_size: int) -> Group | None:
    """The next batch to cut from the sensor's readings above ``upto``, or None: the longest
    run of the oldest unsealed readings with one run+session, up to ``batch_size`` readings
    and :data:`MAX_BATCH_BYTES`."""
    head = c.execute(
        "SELECT id, run_id, capture_session_id, arrived FROM readings"
        " WHERE sensor_id = ? AND id > ? ORDER BY id LIMIT 1",
        (sensor_id, upto),
    ).fetchone()
    if head is None:
        return None
    return _whole_group(c, sensor_id, upto, batch_size, head) or _cut_group(
        c, sensor_id, upto, batch_size, head
    )


def _whole_group(
    c: sqlite3.Connection, sensor_id: str, upto: int, batch_size: int, head: tuple[Any, ...]
) -> Group | None:
    """The usual case in two aggregates, without a row in Python: the next ``batch_size``
    readings (from the index alone) share the first one's run+session and fit
    MAX_BATCH_BYTES. None when they do not."""
    first_id, run_id, session_id, arrived = head
    n, last_id = c.execute(
        "SELECT COUNT(*), MAX(id) FROM (SELECT id FROM readings"
        " WHERE sensor_id = ? AND id > ? ORDER BY id LIMIT ?)",
        (sensor_id, upto, batch_size),
    ).fetchone()
    first_ts, last_ts, meta_bytes, others, numbered, seq_first, seq_last = c.execute(
        "SELECT MIN(ts), MAX(ts), COALESCE(SUM(length(meta)), 0),"
        " COALESCE(SUM(run_id != ? OR capture_session_id != ?), 0), COUNT(seq), MIN(seq),"
        " MAX(seq)"
        f" FROM {readings_table(first_id, last_id, n)}"
        " WHERE sensor_id = ? AND id BETWEEN ? AND ?",
        (run_id, session_id, sensor_id, first_id, last_id),
    ).fetchone()
    size = BATCH_OVERHEAD_BYTES + n * READING_OVERHEAD_BYTES + meta_bytes
    if others or size > MAX_BATCH_BYTES or 0 < numbered < n:
        return None
    last = n < batch_size
    # A sensor's numbers grow with its reading ids, one at a time, so n numbered readings
    # spanning n numbers are exactly that range (no per-reading look needed).
    seqs = (seq_first, seq_last) if numbered == n == seq_last - seq_first + 1 else (None, None)
    return Group(run_id, session_id, first_id, last_id, n, first_ts, last_ts, arrived, last, *seqs)


def _cut_group(
    c: sqlite3.Connection, sensor_id: str, upto: int, batch_size: int, head: tuple[Any, ...]
) -> Group:
    """A change of binding, a big meta, or the first numbered reading after pre-sequence ones
    inside: find the cut row by row."""
    first_id, run_id, session_id, arrived = head
    rows = c.execute(
        "SELECT id, run_id, capture_session_id, ts, COALESCE(length(meta), 0), seq"
        " FROM readings WHERE sensor_id = ? AND id > ? ORDER BY id LIMIT ?",
        (sensor_id, upto, batch_size),
    ).fetchall()
    g = rows
    size = BATCH_OVERHEAD_BYTES
    numbered = rows[0][5] is not None
    for j, r in enumerate(rows):
        size += READING_OVERHEAD_BYTES + r[4]
        if (
            (r[1], r[2]) != (run_id, session_id)
            or (r[5] is not None) != numbered
            or (j and size > MAX_BATCH_BYTES)
        ):
            g = rows[:j]
            break
    ts = [r[3] for r in g]
    last = len(g) == len(rows) and len(rows) < batch_size
    first_seq, last_seq = g[0][5], g[-1][5]
    seqs = (
        (first_seq, last_seq) if numbered and last_seq - first_seq + 1 == len(g) else (None, None)
    )
    return Group(
        run_id, session_id, first_id, g[-1][0], len(g), min(ts), max(ts), arrived, last, *seqs
    )


# -- which readings a batch holds ----------------------------------------------------------------


def members(c: sqlite3.Connection, batch_id: str) -> Members | None:
    """The readings of a batch (see the module's doc); None for an unknown batch."""
    b = c.execute(
        "SELECT ranged, sensor_id, first_id, last_id, count FROM batches WHERE id = ?",
        (batch_id,),
    ).fetchone()
    if b is None:
        return None
    if b[0]:
        return Members(
            readings_table(b[2], b[3], b[4]),
            "sensor_id = ? AND id BETWEEN ? AND ? AND batch_id IS NULL",
            (b[1], b[2], b[3]),
        )
    return Members("readings", "batch_id = ?", (batch_id,))


def batch_readings(
    c: sqlite3.Connection, batch_id: str, columns: str
) -> tuple[tuple[str, str, str], list[tuple[Any, ...]]]:
    """The batch's (sensor_id, run_id, capture_session_id) and ``columns`` of each of its
    readings, in order; KeyError for an unknown batch."""
    b = c.execute(
        "SELECT sensor_id, run_id, capture_session_id FROM batches WHERE id = ?", (batch_id,)
    ).fetchone()
    found = members(c, batch_id)
    if b is None or found is None:
        raise KeyError(batch_id)
    rows = c.execute(
        f"SELECT {columns} FROM {found.table} WHERE {found.where} ORDER BY id", found.params
    ).fetchall()
    return b, rows


def body(c: sqlite3.Connection, batch_id: str, epoch: str | None = None) -> dict[str, Any]:
    """The JSON body of a sealed batch; the same bytes every time it is sent. With ``epoch``
    (the buffer's id) it carries its readings' sequence numbers as ranges (``seq``)."""
    ranges = seq_ranges(c, batch_id) if epoch is not None else None
    b, rows = batch_readings(c, batch_id, "ts, raw_value, meta")
    # one comprehension: a loop appending to a list cost half as much again, on the
    # buffer's thread, for every batch sent
    readings = [
        {"timestamp": ts, "raw_value": raw}
        if meta is None
        else {"timestamp": ts, "raw_value": raw, "meta": json.loads(meta)}
        for ts, raw, meta in rows
    ]
    out: dict[str, Any] = {
        "sensor_id": b[0],
        "run_id": b[1],
        "capture_session_id": b[2],
        "readings": readings,
    }
    if ranges:
        out["seq"] = {"epoch": epoch, "ranges": ranges}
    return out


def seq_ranges(c: sqlite3.Connection, batch_id: str) -> list[list[int]] | None:
    """The batch's sequence numbers as ascending ``[first, last]`` ranges, in the order of its
    readings; None when its readings are pre-sequence (see
    :func:`edge.buffer.schema.sequence_numbers`). The common case from the batch row alone:
    a batch whose ``count`` readings span ``count`` numbers is exactly that range."""
    row = c.execute(
        "SELECT seq_first, seq_last, count FROM batches WHERE id = ?", (batch_id,)
    ).fetchone()
    if row is None:
        raise KeyError(batch_id)
    first, last, count = row
    if first is not None and last - first + 1 == count:
        return [[first, last]]
    _, seqs = batch_readings(c, batch_id, "seq")  # split, explicit: rare
    if not seqs or any(s[0] is None for s in seqs):
        return None
    return to_ranges(s[0] for s in seqs)


# -- what the cloud answered ---------------------------------------------------------------------


def mark_inflight(c: sqlite3.Connection, batch_id: str, now: float) -> None:
    c.execute(
        "UPDATE batches SET state = ?, attempts = attempts + 1, last_attempt_at = ? WHERE id = ?",
        (INFLIGHT, now, batch_id),
    )


def mark_synced(
    c: sqlite3.Connection, batch_id: str, accepted: int | None, late: int | None, now: float
) -> None:
    c.execute(
        "UPDATE batches SET state = ?, synced_at = ?, accepted = ?, late = ?,"
        " last_error = NULL WHERE id = ?",
        (SYNCED, now, accepted, late, batch_id),
    )


def mark_dead(c: sqlite3.Connection, batch_id: str, reason: str, now: float) -> None:
    row = c.execute("SELECT sensor_id FROM batches WHERE id = ?", (batch_id,)).fetchone()
    c.execute("UPDATE batches SET state = ?, last_error = ? WHERE id = ?", (DEAD, reason, batch_id))
    letter = DeadLetter("batch", reason, sensor_id=row[0] if row else None, batch_id=batch_id)
    insert_dead_letters(c, [letter], now)


def split(
    c: sqlite3.Connection, batch_id: str, refused: dict[int, str], reason: str, now: float
) -> str | None:
    """See :meth:`edge.buffer.Buffer.split_batch`."""
    b, rows = batch_readings(c, batch_id, "id, ts, raw_value")
    bad = [r for i, r in enumerate(rows) if i in refused]
    good = [r for i, r in enumerate(rows) if i not in refused]
    if not bad or not good:
        mark_dead(c, batch_id, reason, now)
        return None
    why = "; ".join(f"readings.{i}: {refused[i]}" for i in sorted(refused) if i < len(rows))
    dead_id = new_explicit(c, b, [(r[0], r[1]) for r in bad], DEAD, now, why[:1000])
    payload = json.dumps([{"timestamp": r[1], "raw_value": r[2]} for r in bad])
    letter = DeadLetter(
        "batch",
        f"{len(bad)} of {len(rows)} readings refused: {why}"[:2000],
        sensor_id=b[0],
        batch_id=dead_id,
        payload=payload[:4096],
    )
    insert_dead_letters(c, [letter], now)
    new_id = str(uuid.uuid4())
    ts = sorted(r[1] for r in good)
    c.execute(
        "UPDATE batches SET id = ?, state = ?, count = ?, first_ts = ?, last_ts = ?,"
        " last_error = ? WHERE id = ?",
        (new_id, PENDING, len(good), ts[0], ts[-1], why[:1000], batch_id),
    )
    # (the refused readings carry the dead batch's id now, so a ranged batch leaves them out
    # by itself; an explicit one takes its readings along to the new id)
    c.execute("UPDATE readings SET batch_id = ? WHERE batch_id = ?", (new_id, batch_id))
    return new_id


def new_explicit(
    c: sqlite3.Connection,
    key: tuple[str, str, str],
    rows: Sequence[tuple[int, str]],
    state: str,
    now: float,
    error: str | None = None,
) -> str:
    """An explicit batch of the readings ``rows`` ((id, ts), in order) of ``key`` (sensor, run,
    session) under a new uuid."""
    batch_id = str(uuid.uuid4())
    ts = sorted(r[1] for r in rows)
    c.execute(
        "INSERT INTO batches (id, sensor_id, run_id, capture_session_id, state,"
        " count, first_ts, last_ts, sealed_at, last_error, ranged, first_id, last_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (batch_id, *key, state, len(rows), ts[0], ts[-1], now, error, rows[0][0], rows[-1][0]),
    )
    c.executemany("UPDATE readings SET batch_id = ? WHERE id = ?", [(batch_id, r[0]) for r in rows])
    return batch_id
