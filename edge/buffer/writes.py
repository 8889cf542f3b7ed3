"""The group commit's SQL: many writes in one transaction, one statement per table.

Runs inside the transaction :meth:`edge.buffer.Buffer.commit` opened (one fsync for them all).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from edge.buffer import faults as fault_rows
from edge.buffer.inbox import Inbox
from edge.buffer.records import (
    BufferFull,
    DeadLetter,
    NewFault,
    NewReading,
    Write,
    WriteResult,
    reading_row_values,
    show,
)

#: a reading row as inserted, without its id: sensor, run, session, ts, raw_value, meta,
#: arrived, seq
Row = tuple[str, str, str, str, float, str | None, float, int]


def commit_writes(
    c: sqlite3.Connection,
    writes: Sequence[Write],
    full: BufferFull | None,
    now: float,
    faulted: set[str] | None = None,
) -> list[WriteResult | BufferFull]:
    """Store the writes and say what became of each: all refused with ``full``, or committed
    (readings the cloud would refuse, and those of unknown sensors, dead-lettered), or dropped
    as a delivery's copy (see :mod:`edge.buffer.inbox`). The sensors whose device faults were
    stored are added to ``faulted`` (see :mod:`edge.buffer.faults`)."""
    inbox = Inbox(c)
    bindings = {
        r[0]: (r[1], r[2])
        for r in c.execute("SELECT sensor_id, run_id, capture_session_id FROM sensors")
    }
    seqs = SeqCounter(c)
    # Rows of all writes go in with one statement per table (in write order, so ids keep
    # arrival order): per-write statements cost more than the rows under load.
    rows: list[Row] = []
    dead: list[DeadLetter] = []
    faults: list[NewFault] = []
    results: list[WriteResult | BufferFull] = []
    for w in writes:
        if full is not None:
            results.append(full)
            continue
        if w.delivery is not None and inbox.is_copy(w.delivery):
            results.append(WriteResult(0, 0, duplicate=True))
            continue
        before, dead_before = len(rows), len(dead)
        dead += w.dead
        if w.faults:
            faults += w.faults
        _rows(w.readings, bindings, now, rows, dead, seqs)
        if w.delivery is not None:
            inbox.record(w.delivery, now)
        results.append(WriteResult(len(rows) - before, len(dead) - dead_before))
    first = next_reading_id(c)
    c.executemany(
        "INSERT INTO readings (id, sensor_id, run_id, capture_session_id, ts, raw_value,"
        " meta, arrived, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(first + k, *row) for k, row in enumerate(rows)],
    )
    seqs.store(bindings)
    if faults:
        stored = fault_rows.store(c, faults, bindings, now)
        if faulted is not None:
            faulted |= stored
    insert_dead_letters(c, dead, now)
    inbox.flush()
    return results


def _rows(
    readings: Sequence[NewReading],
    bindings: dict[str, tuple[str, str]],
    now: float,
    rows: list[Row],
    dead: list[DeadLetter],
    seqs: SeqCounter,
) -> None:
    """Each reading as a row stamped with its sensor's binding and its next sequence number,
    or as a dead letter (which takes no number: it was never captured into the buffer)."""
    top = seqs.top
    for r in readings:
        bound = bindings.get(r.sensor_id)
        if bound is None:
            dead.append(DeadLetter("reading", "unknown sensor", sensor_id=r.sensor_id))
            continue
        try:
            ts, raw, meta = reading_row_values(r)
        except ValueError as exc:
            # what the cloud would refuse (422 for the whole batch) stops here
            dead.append(DeadLetter("reading", str(exc), sensor_id=r.sensor_id, payload=show(r)))
            continue
        seq = top[r.sensor_id] = top[r.sensor_id] + 1
        rows.append((r.sensor_id, bound[0], bound[1], ts, raw, meta, now, seq))


class SeqCounter:
    """Each sensor's last sequence number, advanced reading by reading in this commit and
    written back with it (see :mod:`edge.buffer.sequence`): a number is never given twice,
    since the counter and the readings commit together or not at all."""

    __slots__ = ("_c", "before", "top")

    def __init__(self, c: sqlite3.Connection) -> None:
        self._c = c
        self.before = dict(c.execute("SELECT sensor_id, seq FROM sensors").fetchall())
        self.top = dict(self.before)

    def store(self, bindings: dict[str, tuple[str, str]]) -> None:
        moved = [
            (sid, top, self.before[sid]) for sid, top in self.top.items() if top != self.before[sid]
        ]
        if not moved:
            return
        self._c.executemany(
            "UPDATE sensors SET seq = ? WHERE sensor_id = ?", [(top, sid) for sid, top, _ in moved]
        )
        for sid, top, before in moved:
            extend_session(self._c, sid, bindings[sid], before + 1, top)


def extend_session(
    c: sqlite3.Connection, sensor_id: str, binding: tuple[str, str], first: int, last: int
) -> None:
    """Record that the sensor's numbers ``first``..``last`` went to ``binding`` (run, session):
    the sensor's last segment grows when it has that binding, else a new one starts. What the
    heartbeat reports as captured per capture session, long after the readings are pruned."""
    grown = c.execute(
        "UPDATE seq_sessions SET last_seq = ? WHERE sensor_id = ? AND last_seq = ?"
        " AND run_id = ? AND capture_session_id = ?",
        (last, sensor_id, first - 1, *binding),
    )
    if grown.rowcount == 0:
        c.execute(
            "INSERT INTO seq_sessions (sensor_id, run_id, capture_session_id, first_seq,"
            " last_seq) VALUES (?, ?, ?, ?, ?)",
            (sensor_id, *binding, first, last),
        )


def next_reading_id(c: sqlite3.Connection) -> int:
    """Above every reading and every sealed id. SQLite alone would reuse the ids of pruned
    readings once the newest ones are gone, and a new reading numbered at or below its
    sensor's ``sealed_upto`` would count as sealed -- and never be sent."""
    top = c.execute("SELECT MAX(id) FROM readings").fetchone()[0] or 0
    sealed = c.execute("SELECT MAX(sealed_upto) FROM sensors").fetchone()[0] or 0
    return max(int(top), int(sealed)) + 1


def insert_dead_letters(c: sqlite3.Connection, dead: Sequence[DeadLetter], now: float) -> None:
    rows: list[tuple[Any, ...]] = [
        (now, d.kind, d.sensor_id, d.batch_id, d.origin, d.payload, d.reason) for d in dead
    ]
    c.executemany(
        "INSERT INTO dead_letter (at, kind, sensor_id, batch_id, origin, payload, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
