"""Commit positions of telemetry batches: the order a resumed live client follows.

Batch ids come from a sequence when the batch row is inserted, early in the ingest
transaction; concurrent transactions then commit in any order. Clients see batches in commit
order (the order of NOTIFY on PostgreSQL), so "the batches after the one I saw" is a commit
order question that ids cannot answer: a batch with a lower id that commits later would be
skipped by a resume from the batch table, and one with a higher id that committed earlier
delivered twice.

Each batch therefore gets a ``position`` (``telemetry_batch_commits``, migration 0003) as
the last statement of its ingest transaction:

* PostgreSQL: under a transaction-level advisory lock, which is held until the commit has
  finished. The next batch takes the lock, hence its position, only once the previous one is
  committed and visible: positions grow in commit order, and a snapshot that sees a position
  sees every lower one (a rolled-back transaction leaves a hole, never a late arrival). The
  lock, the position and the NOTIFY are one statement, the round trip the NOTIFY already
  took. What the lock serializes is short: this statement's answer and the COMMIT, and
  transactions that NOTIFY are serialized at their commit by PostgreSQL already.
* SQLite: writers are serialized by ``BEGIN IMMEDIATE`` for the whole transaction, so the
  table's own autoincrement is in commit order.

A process that never saw the resume point reads the batches after its position; one that is
merely behind ignores live batches at or before it (``Subscriber.floor``).
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cloud.db.models import TelemetryBatchCommit

#: The advisory lock key ("benchlnk" in ASCII): one lock per database for every ingest.
LOCK_KEY = 0x62656E63686C6E6B

#: Lock, position and NOTIFY in one statement. The CTE is materialized so the lock is taken
#: before the INSERT evaluates ``nextval`` (a position drawn before waiting for the lock
#: could commit after a higher one). The payload is ``:head`` (the header's JSON up to the
#: position) completed with the position.
RECORD_AND_NOTIFY = text(
    "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(:lock)),"
    " recorded AS (INSERT INTO telemetry_batch_commits (batch_id)"
    " SELECT :batch_id FROM locked RETURNING position)"
    " SELECT position, pg_notify(:channel, :head || position || '}') FROM recorded"
)

RECORD = text(
    "INSERT INTO telemetry_batch_commits (batch_id) VALUES (:batch_id) RETURNING position"
)


def record_and_notify(db: Session, batch_id: int, channel: str, head: str) -> int:
    """PostgreSQL: the batch's position, and the NOTIFY ``head + position + '}'``."""
    position, _ = db.execute(
        RECORD_AND_NOTIFY,
        {"lock": LOCK_KEY, "batch_id": batch_id, "channel": channel, "head": head},
    ).one()
    return int(position)


def record(db: Session, batch_id: int) -> int:
    """SQLite: the batch's position (writers are serialized, the table's order is commit
    order)."""
    return int(db.execute(RECORD, {"batch_id": batch_id}).scalar_one())


def newest(db: Session) -> int:
    """The newest commit position (0 before the first batch). Read before a history, it is
    where the live stream picks up without a gap: every batch at or below it is committed and
    visible to the reads after it (a batch committing meanwhile may be in both: an overlap,
    never a hole)."""
    return int(db.scalar(select(func.max(TelemetryBatchCommit.position))) or 0)
