"""The local SQLite queue of metric points the server does not have yet.

A point is committed here before ``log_metrics`` returns (with ``offline_dir``), so it
survives the process being killed. It is sent in a batch whose Idempotency-Key is written
onto its rows *before* the batch is sent: if the process dies after the server stored the
batch but before the rows were deleted, the next process sends the same rows with the same
key, and the server answers from its record instead of storing them twice.

WAL with ``synchronous=NORMAL``: a commit survives the process dying (kill -9), though not
the machine losing power between a commit and the next checkpoint.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE = "benchlink-outbox.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,      -- the cloud and identity that will send it (keys are per caller)
    run_id TEXT NOT NULL,
    point TEXT NOT NULL,      -- the point's JSON, as the server takes it
    batch_key TEXT            -- the Idempotency-Key of the batch it was put in, once it was
);
CREATE INDEX IF NOT EXISTS points_batch ON points (scope, batch_key, id);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    run_id TEXT NOT NULL,
    point TEXT NOT NULL,
    problem TEXT NOT NULL     -- what the server said (a 4xx: sending again would not help)
);
"""


@dataclass(frozen=True)
class Batch:
    key: str
    run_id: str
    ids: list[int]
    points: list[dict[str, Any]]


class Outbox:
    """One SQLite file in ``directory``; several threads and processes may share it."""

    def __init__(self, directory: str | Path) -> None:
        path = Path(directory).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / FILE
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, scope: str, run_id: str, points: list[dict[str, Any]], key: str | None) -> None:
        """Queue points (committed when this returns); ``key``: a batch already sent once
        under that key, whose answer never came."""
        rows = [(scope, run_id, json.dumps(p), key) for p in points]
        with self._lock:
            self._db.executemany(
                "INSERT INTO points (scope, run_id, point, batch_key) VALUES (?, ?, ?, ?)", rows
            )

    def next_batch(self, scope: str, limit: int) -> Batch | None:
        """A batch to send: one already keyed (sent before, answer unknown) first, else up to
        ``limit`` of the oldest points of one run, keyed now (committed before sending)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                batch = self._keyed(scope) or self._new_batch(scope, limit)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return batch

    def _keyed(self, scope: str) -> Batch | None:
        row = self._db.execute(
            "SELECT batch_key FROM points WHERE scope = ? AND batch_key IS NOT NULL "
            "ORDER BY id LIMIT 1",
            (scope,),
        ).fetchone()
        return None if row is None else self._load(scope, row[0])

    def _new_batch(self, scope: str, limit: int) -> Batch | None:
        first = self._db.execute(
            "SELECT run_id FROM points WHERE scope = ? AND batch_key IS NULL ORDER BY id LIMIT 1",
            (scope,),
        ).fetchone()
        if first is None:
            return None
        key = f"benchlink-metrics-{uuid.uuid4()}"
        self._db.execute(
            "UPDATE points SET batch_key = ? WHERE id IN (SELECT id FROM points WHERE scope = ? "
            "AND run_id = ? AND batch_key IS NULL ORDER BY id LIMIT ?)",
            (key, scope, first[0], limit),
        )
        return self._load(scope, key)

    def _load(self, scope: str, key: str) -> Batch:
        rows = self._db.execute(
            "SELECT id, run_id, point FROM points WHERE scope = ? AND batch_key = ? ORDER BY id",
            (scope, key),
        ).fetchall()
        return Batch(key, rows[0][1], [r[0] for r in rows], [json.loads(r[2]) for r in rows])

    def sent(self, batch: Batch) -> None:
        with self._lock:
            self._db.execute("DELETE FROM points WHERE batch_key = ?", (batch.key,))

    def reject(self, scope: str, batch: Batch, problem: str) -> None:
        """Set a refused batch aside (kept for a person to read; never sent again)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO rejected (scope, run_id, point, problem) VALUES (?, ?, ?, ?)",
                [(scope, batch.run_id, json.dumps(p), problem) for p in batch.points],
            )
            self._db.execute("DELETE FROM points WHERE batch_key = ?", (batch.key,))
            self._db.execute("COMMIT")

    def pending(self, scope: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM points WHERE scope = ?", (scope,))
            return int(row.fetchone()[0])

    def rejected(self, scope: str) -> list[tuple[str, dict[str, Any], str]]:
        """(run id, point, the server's problem) of every point set aside."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, point, problem FROM rejected WHERE scope = ? ORDER BY id", (scope,)
            ).fetchall()
        return [(r[0], json.loads(r[1]), r[2]) for r in rows]
