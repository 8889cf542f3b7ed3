"""The durable SQLite buffer (sqlite-utils, WAL): sensors, readings, sealed batches, dead letters.

Every method here is synchronous and runs one transaction. The daemon calls them on one
dedicated thread (:meth:`Buffer.call`) so the event loop never blocks on an fsync; the CLI
calls them directly, from its own process, which WAL allows next to a running daemon.

Life of a reading: committed by :meth:`commit` -> cut into a batch by :meth:`seal` (one
transaction gives up to ``batch_size`` readings of one sensor+run+session, in arrival order, a
stable uuid) -> the batch goes ``pending`` -> ``inflight`` -> ``synced`` or ``dead``. A sealed
batch is never re-cut: after a crash the same id with the same readings is sent again and the
cloud's idempotency drops the copy.

Which readings a batch holds -- two kinds, so that sealing never rewrites readings:

* **ranged** (every batch :meth:`seal` cuts): the sensor's readings with ``id`` in
  ``[first_id, last_id]`` whose ``batch_id`` is NULL. A sensor's readings up to
  ``sensors.sealed_upto`` are sealed, the ones above it are not. Sealing is then one INSERT
  and one UPDATE of the sensor, whatever the batch size; it used to set ``batch_id`` on each
  of a thousand readings, which cost more of the edge's CPU than anything else while draining
  a backlog (12 ms a batch, more than sending it).
* **explicit**: the readings whose ``batch_id`` is the batch's id -- the readings of a batch
  that the cloud refused one by one (:meth:`split_batch`), and every batch of a buffer written
  before ranged batches (a reading with a ``batch_id`` never belongs to a ranged batch).

Reading ids only grow, even after synced readings are pruned (:meth:`commit` numbers them
itself), so a new reading is never taken for one below ``sealed_upto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import sqlite_utils

from common.reading import meta_text
from common.wire import MAX_TELEMETRY_BODY_BYTES

P = ParamSpec("P")
T = TypeVar("T")

#: batch states
PENDING, INFLIGHT, SYNCED, DEAD = "pending", "inflight", "synced", "dead"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sensors (
    sensor_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    capture_session_id TEXT NOT NULL,
    config_run_id TEXT,
    config_session_id TEXT,
    bound_at REAL,
    sealed_upto INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    sensor_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    capture_session_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    raw_value REAL NOT NULL,
    meta TEXT,
    arrived REAL NOT NULL,
    batch_id TEXT
);
CREATE INDEX IF NOT EXISTS readings_sensor ON readings (sensor_id, id);
CREATE INDEX IF NOT EXISTS readings_explicit ON readings (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS readings_arrived ON readings (sensor_id, arrived);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sensor_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    capture_session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_ts TEXT NOT NULL,
    last_ts TEXT NOT NULL,
    sealed_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt_at REAL,
    synced_at REAL,
    accepted INTEGER,
    late INTEGER,
    ranged INTEGER NOT NULL DEFAULT 0,
    first_id INTEGER,
    last_id INTEGER
);
CREATE INDEX IF NOT EXISTS batches_queue ON batches (sensor_id, state, seq);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    sensor_id TEXT,
    batch_id TEXT,
    origin TEXT,
    payload TEXT,
    reason TEXT NOT NULL,
    retried_at REAL
);
CREATE TABLE IF NOT EXISTS edge (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mqtt_unacked (
    mid INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    conn TEXT NOT NULL,
    at REAL NOT NULL
);
"""

#: a sealed batch's body stays below this (the cloud answers 413 above MAX_TELEMETRY_BODY_BYTES)
MAX_BATCH_BYTES = MAX_TELEMETRY_BODY_BYTES // 2
#: estimated JSON bytes of the batch envelope and of one reading without its meta
BATCH_OVERHEAD_BYTES, READING_OVERHEAD_BYTES = 200, 120

#: the WAL file is truncated to this after a checkpoint (it counts against the budget)
WAL_LIMIT_BYTES = 64 * 1024 * 1024
#: dead letters kept at most by default (kinds other than dead batches; see rotate_dead_letters)
MAX_DEAD_LETTERS = 10_000

#: The buffer's scheme, in ``PRAGMA user_version`` (0: before ranged batches). A version of
#: the daemon refuses a file of a later scheme. (The versions before ranged batches do not
#: look: going back to one of them would seal the readings of ranged batches again.)
SCHEME = 2

#: The table of the first version, keyed by packet id for ever (see :meth:`Buffer._migrate`).
OLD_INBOX = "mqtt_inbox"


class BufferFull(Exception):
    """The disk budget (``buffer.max_bytes``) is reached; new readings are refused."""

    def __init__(self, used: int, limit: int) -> None:
        self.used, self.limit = used, limit
        super().__init__(f"buffer full: {used} of {limit} bytes used by unsynced data")


def ts_text(ts: datetime) -> str:
    """UTC, fixed width, so that text order is time order (``replay --since`` compares text).

    ValueError for a naive timestamp or one that leaves the datetime range once in UTC
    (``9999-12-31T23:59:59-14:00``). The year is zero-padded by hand: ``strftime("%Y")``
    writes year 999 as ``999`` on glibc, which is neither RFC 3339 nor sortable."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("naive timestamp")
    try:
        u = ts.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range once converted to UTC") from None
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}+00:00"
    )


def reading_row_values(r: NewReading) -> tuple[str, float, str | None]:
    """(ts, raw_value, meta) as stored, or ValueError naming why the reading cannot be sent."""
    if not isinstance(r.raw_value, int | float) or not math.isfinite(r.raw_value):
        raise ValueError(f"raw_value: not a finite number: {r.raw_value!r}"[:200])
    return ts_text(r.timestamp), float(r.raw_value), meta_text(r.meta)


@dataclass(frozen=True)
class NewReading:
    sensor_id: str
    timestamp: datetime
    raw_value: float
    meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeadLetter:
    kind: str  # mqtt_payload | serial | batch
    reason: str
    sensor_id: str | None = None
    origin: str | None = None  # topic or port
    payload: str | None = None
    batch_id: str | None = None


@dataclass
class Write:
    """One unit a source hands to the writer; acked (future resolved) after the commit."""

    readings: list[NewReading] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: MQTT (packet id, digest of topic+payload), recorded in the same transaction while the
    #: message is committed but not yet acknowledged, to drop its redelivered copy
    inbox: tuple[int, str] | None = None
    #: the broker flagged the message DUP: it may be one we committed but could not ack
    redelivered: bool = False
    #: the MQTT connection that delivered it (rows of older connections go stale, see below)
    conn: str = ""
    #: the first message of its connection without DUP: the broker re-sends the unacked
    #: messages of a persistent session first, so inbox rows of earlier connections that no
    #: DUP copy matched so far belong to messages whose PUBACK did reach the broker -- stale
    fresh: bool = False
    #: which source wrote it; a source whose write was refused (buffer full) gets nothing
    #: more committed until it re-submits the refused write (see :class:`edge.writer.Writer`)
    source: str = ""


@dataclass(frozen=True)
class WriteResult:
    committed: int  # readings
    dead: int
    duplicate: bool = False  # an MQTT redelivery of a message already committed


def _readings(first_id: int, last_id: int, count: int) -> str:
    """The readings table for a scan of one sensor's ids ``first_id`` .. ``last_id``: where
    they are mostly that sensor's, reading the table's own id order is cheaper (about half
    the CPU) than a lookup from the (sensor_id, id) index per reading; where other sensors'
    readings lie between, the index is."""
    return "readings NOT INDEXED" if last_id - first_id < 2 * count else "readings"


class _Members(NamedTuple):
    """Which readings a batch holds: ``f"... FROM {table} WHERE {where}"`` with ``params``."""

    table: str
    where: str
    params: tuple[Any, ...]


class _Group(NamedTuple):
    """The readings :meth:`Buffer.seal` cuts into its next batch."""

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


@dataclass(frozen=True)
class Batch:
    seq: int
    id: str
    sensor_id: str
    run_id: str
    capture_session_id: str
    state: str
    count: int
    attempts: int


def show(r: NewReading) -> str:
    """A reading as text for the dead-letter table (never raises: ``str`` of an integer over
    4,300 digits does)."""
    try:
        text = f"timestamp={r.timestamp!r} raw_value={r.raw_value!r} meta={r.meta!r}"
    except ValueError:
        text = f"timestamp={r.timestamp!r} (value or meta cannot be printed)"
    return text[:4096]


def message_digest(topic: str, payload: bytes) -> str:
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


class Buffer:
    def __init__(self, path: Path | str, *, max_bytes: int = 2_000_000_000) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The buffer holds sensor tokens: create it (and its WAL/SHM) readable by us only.
        old_umask = os.umask(0o077)
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL, not NORMAL: in WAL mode NORMAL skips the fsync of the WAL on commit, so a
            # power cut can lose the last commits -- which are exactly the readings we already
            # acknowledged to a device. Group commit keeps the cost at one fsync per batch.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            written = conn.execute("PRAGMA user_version").fetchone()[0]
            if written > SCHEME:
                conn.close()
                raise RuntimeError(
                    f"{self.path} was written by a newer benchlink-edge (buffer scheme"
                    f" {written}; this one knows up to {SCHEME}): run that version, or move"
                    " the file away -- reading it as an older scheme could send readings twice"
                )
            conn.executescript(SCHEMA)
            # The buffer's own id, made once: what names this edge (its default MQTT client
            # id) for as long as its buffer lives.
            conn.execute(
                "INSERT OR IGNORE INTO edge (key, value) VALUES ('edge_id', ?)",
                (str(uuid.uuid4()),),
            )
            self._migrate(conn)
            self._migrate_ranged(conn)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self.conn = conn
        self._executor: ThreadPoolExecutor | None = None

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """The first version kept every (packet id, digest) for a week, so a new message that
        reused a packet id with an old message's payload was dropped as its copy. Keep only the
        rows of its last few seconds (the only ones that can be committed but unacked); they
        are purged after the next connection's re-deliveries like any stale row."""
        conn.execute("BEGIN IMMEDIATE")
        old = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (OLD_INBOX,)
        ).fetchone()
        if old is None:
            conn.execute("COMMIT")
            return
        conn.execute(
            f"INSERT OR REPLACE INTO mqtt_unacked SELECT mid, digest, '', at FROM {OLD_INBOX}"
            f" WHERE at >= (SELECT MAX(at) - 5 FROM {OLD_INBOX})"
        )
        conn.execute(f"DROP TABLE {OLD_INBOX}")
        conn.execute("COMMIT")

    @staticmethod
    def _migrate_ranged(conn: sqlite3.Connection) -> None:
        """A buffer written before ranged batches: its batches stay explicit (their readings
        carry the batch id), each sensor's ``sealed_upto`` is its last sealed reading (sealing
        always took a sensor's oldest unsealed readings, so every reading above it is
        unsealed), and the indexes of the old scheme give way to the new ones."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(sensors)")}
            if "sealed_upto" not in columns:
                conn.execute(
                    "ALTER TABLE sensors ADD COLUMN sealed_upto INTEGER NOT NULL DEFAULT 0"
                )
                conn.execute(
                    "UPDATE sensors SET sealed_upto = COALESCE((SELECT MAX(id) FROM readings r"
                    " WHERE r.sensor_id = sensors.sensor_id AND r.batch_id IS NOT NULL), 0)"
                )
            columns = {r[1] for r in conn.execute("PRAGMA table_info(batches)")}
            if "ranged" not in columns:
                conn.execute("ALTER TABLE batches ADD COLUMN ranged INTEGER NOT NULL DEFAULT 0")
                conn.execute("ALTER TABLE batches ADD COLUMN first_id INTEGER")
                conn.execute("ALTER TABLE batches ADD COLUMN last_id INTEGER")
            conn.execute("DROP INDEX IF EXISTS readings_unsealed")
            conn.execute("DROP INDEX IF EXISTS readings_batch")
            conn.execute(f"PRAGMA user_version = {SCHEME}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- plumbing -------------------------------------------------------------------------------

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the buffer's own thread (one at a time, never on the event loop)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="buffer")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.conn.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that must agree: one read transaction (WAL keeps it a snapshot while
        the daemon or the CLI writes). A batch's body read in pieces could straddle a split
        of that batch by the other process, and go out under the old key with the new
        readings -- which are then sent again under the new one."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    def used_bytes(self) -> int:
        """Bytes of live pages (freed pages are reused, so they do not count) plus the WAL
        file, which is disk the buffer holds too (truncated to ``journal_size_limit`` after
        a checkpoint)."""
        c = self.conn
        page = c.execute("PRAGMA page_size").fetchone()[0]
        total = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal = 0
        return int((total - free) * page) + wal

    def edge_id(self) -> str:
        """The id made when the buffer was created (see :data:`SCHEMA`'s ``edge`` table)."""
        row = self.conn.execute("SELECT value FROM edge WHERE key = 'edge_id'").fetchone()
        return str(row[0])

    # -- sensors and bindings --------------------------------------------------------------------

    def upsert_sensor(
        self, sensor_id: str, token: str, source: str, run_id: str, session_id: str
    ) -> None:
        """Register a configured sensor. The config's binding wins only when it changed in the
        config since it was last applied; otherwise a runtime ``bind`` survives a restart."""
        with self.tx() as c:
            row = c.execute(
                "SELECT config_run_id, config_session_id FROM sensors WHERE sensor_id = ?",
                (sensor_id,),
            ).fetchone()
            if row is None:
                # (readings without their sensor's row exist only in a file edited by hand;
                # the ones of them already in a batch stay out of the next one all the same)
                c.execute(
                    "INSERT INTO sensors (sensor_id, token, source, run_id, capture_session_id,"
                    " config_run_id, config_session_id, bound_at, sealed_upto)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, COALESCE((SELECT MAX(id) FROM readings"
                    " WHERE sensor_id = ? AND batch_id IS NOT NULL), 0))",
                    (
                        sensor_id,
                        token,
                        source,
                        run_id,
                        session_id,
                        run_id,
                        session_id,
                        time.time(),
                        sensor_id,
                    ),
                )
            elif tuple(row) != (run_id, session_id):
                c.execute(
                    "UPDATE sensors SET token = ?, source = ?, run_id = ?, capture_session_id = ?,"
                    " config_run_id = ?, config_session_id = ?, bound_at = ? WHERE sensor_id = ?",
                    (token, source, run_id, session_id, run_id, session_id, time.time(), sensor_id),
                )
            else:
                c.execute(
                    "UPDATE sensors SET token = ?, source = ? WHERE sensor_id = ?",
                    (token, source, sensor_id),
                )

    def bind(self, sensor_id: str, run_id: str, session_id: str) -> None:
        """Move a sensor's next readings to another run/session; the running daemon stamps
        every commit with the binding it reads inside that commit's transaction."""
        with self.tx() as c:
            cur = c.execute(
                "UPDATE sensors SET run_id = ?, capture_session_id = ?, bound_at = ?"
                " WHERE sensor_id = ?",
                (run_id, session_id, time.time(), sensor_id),
            )
            if cur.rowcount == 0:
                raise KeyError(f"unknown sensor {sensor_id}")

    def sensors(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM sensors ORDER BY sensor_id"))

    def set_token(self, sensor_id: str, token: str) -> bool:
        """Replace a sensor's token (rotated in the config); the next batch sent uses it.
        False when it was already that one, or the sensor is not in the buffer."""
        with self.tx() as c:
            cur = c.execute(
                "UPDATE sensors SET token = ? WHERE sensor_id = ? AND token != ?",
                (token, sensor_id, token),
            )
            return cur.rowcount > 0

    def token(self, sensor_id: str) -> str:
        row = self.conn.execute(
            "SELECT token FROM sensors WHERE sensor_id = ?", (sensor_id,)
        ).fetchone()
        if row is None:
            raise KeyError(sensor_id)
        return str(row[0])

    # -- the group commit ------------------------------------------------------------------------

    def commit(
        self, writes: Sequence[Write], acked: Sequence[tuple[int, str]] = ()
    ) -> list[WriteResult | BufferFull]:
        """Commit many writes in one transaction (one fsync) and say what became of each.

        ``acked``: MQTT (packet id, digest) pairs acknowledged to the broker since the last
        commit; their inbox rows are deleted first, so that a later message that reuses the
        packet id with the same payload is never taken for a copy."""
        results: list[WriteResult | BufferFull] = []
        full: BufferFull | None = None
        used = self.used_bytes()
        if used >= self.max_bytes:
            self.prune(retention_s=0)  # synced rows go first, whatever their age
            # and the WAL gives its disk back (a reader in the way just makes this partial)
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            used = self.used_bytes()
            if used >= self.max_bytes:
                full = BufferFull(used, self.max_bytes)
        now = time.time()
        with self.tx() as c:
            if acked:
                c.executemany("DELETE FROM mqtt_unacked WHERE mid = ? AND digest = ?", acked)
            bindings = {
                r[0]: (r[1], r[2])
                for r in c.execute("SELECT sensor_id, run_id, capture_session_id FROM sensors")
            }
            # Rows of all writes go in with one statement per table (in write order, so ids
            # keep arrival order): per-write statements cost more than the rows under load.
            rows: list[tuple[Any, ...]] = []
            dead: list[DeadLetter] = []
            inbox: list[tuple[int, str, str, float]] = []
            for w in writes:
                if full is not None:
                    results.append(full)
                    continue
                if w.fresh:
                    self._remember(c, inbox)
                    c.execute("DELETE FROM mqtt_unacked WHERE conn != ?", (w.conn,))
                if w.inbox is not None and w.redelivered:
                    # the copy may follow its original within this very group
                    self._remember(c, inbox)
                    if self._seen(c, *w.inbox):
                        results.append(WriteResult(0, 0, duplicate=True))
                        continue
                before, dead_before = len(rows), len(dead)
                dead += w.dead
                for r in w.readings:
                    bound = bindings.get(r.sensor_id)
                    if bound is None:
                        dead.append(DeadLetter("reading", "unknown sensor", sensor_id=r.sensor_id))
                        continue
                    try:
                        ts, raw, meta = reading_row_values(r)
                    except ValueError as exc:
                        # what the cloud would refuse (422 for the whole batch) stops here
                        dead.append(
                            DeadLetter("reading", str(exc), sensor_id=r.sensor_id, payload=show(r))
                        )
                        continue
                    rows.append((r.sensor_id, bound[0], bound[1], ts, raw, meta, now))
                if w.inbox is not None:
                    inbox.append((*w.inbox, w.conn, now))
                results.append(WriteResult(len(rows) - before, len(dead) - dead_before))
            first = self._next_reading_id(c)
            c.executemany(
                "INSERT INTO readings (id, sensor_id, run_id, capture_session_id, ts, raw_value,"
                " meta, arrived) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(first + k, *row) for k, row in enumerate(rows)],
            )
            self._dead_letters(c, dead, now)
            self._remember(c, inbox)
        return results

    @staticmethod
    def _next_reading_id(c: sqlite3.Connection) -> int:
        """Above every reading and every sealed id. SQLite alone would reuse the ids of pruned
        readings once the newest ones are gone, and a new reading numbered at or below its
        sensor's ``sealed_upto`` would count as sealed -- and never be sent."""
        top = c.execute("SELECT MAX(id) FROM readings").fetchone()[0] or 0
        sealed = c.execute("SELECT MAX(sealed_upto) FROM sensors").fetchone()[0] or 0
        return max(int(top), int(sealed)) + 1

    @staticmethod
    def _remember(c: sqlite3.Connection, inbox: list[tuple[int, str, str, float]]) -> None:
        """Record MQTT (mid, digest, conn) rows queued so far, then forget them."""
        if inbox:
            c.executemany("INSERT OR REPLACE INTO mqtt_unacked VALUES (?, ?, ?, ?)", inbox)
            inbox.clear()

    @staticmethod
    def _seen(c: sqlite3.Connection, mid: int, digest: str) -> bool:
        """A committed, not yet acknowledged message with this packet id and content."""
        row = c.execute("SELECT digest FROM mqtt_unacked WHERE mid = ?", (mid,)).fetchone()
        return row is not None and row[0] == digest

    @staticmethod
    def _dead_letters(c: sqlite3.Connection, dead: Sequence[DeadLetter], now: float) -> None:
        c.executemany(
            "INSERT INTO dead_letter (at, kind, sensor_id, batch_id, origin, payload, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(now, d.kind, d.sensor_id, d.batch_id, d.origin, d.payload, d.reason) for d in dead],
        )

    # -- sealing and the send queue --------------------------------------------------------------

    def seal(
        self,
        sensor_id: str,
        batch_size: int,
        *,
        older_than: float | None = None,
        ahead: int | None = None,
    ) -> int:
        """Cut the sensor's unsealed readings into batches; return how many were made.

        With ``older_than`` (unix time), a last partial batch is only cut when its oldest
        reading arrived before then, so a busy sensor fills its batches. A batch is also cut
        before its body would pass :data:`MAX_BATCH_BYTES` (big ``meta``), so that it never
        meets the cloud's 413. With ``ahead``, cut only until the sensor has that many batches
        waiting to be sent: after an outage the sync loop seals a little before each send
        instead of the whole backlog at once (one transaction of minutes' worth of readings
        held every other step on the buffer's thread, and sending waited for it)."""
        made = 0
        with self.tx() as c:
            if ahead is not None:
                waiting = c.execute(
                    "SELECT COUNT(*) FROM batches WHERE sensor_id = ? AND state IN (?, ?)",
                    (sensor_id, PENDING, INFLIGHT),
                ).fetchone()[0]
                ahead -= int(waiting)
            row = c.execute(
                "SELECT sealed_upto FROM sensors WHERE sensor_id = ?", (sensor_id,)
            ).fetchone()
            if row is None:
                return 0
            upto = int(row[0])
            # One batch at a time, not the whole backlog: after a long outage there may be
            # millions of unsealed readings, and holding them all in memory is what an edge
            # box cannot afford. A group is the longest run of the oldest unsealed readings
            # with one run+session, up to ``batch_size`` readings and MAX_BATCH_BYTES.
            now = time.time()
            while ahead is None or made < ahead:
                group = self._next_group(c, sensor_id, upto, batch_size)
                if group is None:
                    break
                if group.last and older_than is not None and group.arrived > older_than:
                    break
                c.execute(
                    "INSERT INTO batches (id, sensor_id, run_id, capture_session_id, state,"
                    " count, first_ts, last_ts, sealed_at, ranged, first_id, last_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (
                        str(uuid.uuid4()),
                        sensor_id,
                        group.run_id,
                        group.session_id,
                        PENDING,
                        group.n_readings,
                        group.first_ts,
                        group.last_ts,
                        now,
                        group.first_id,
                        group.last_id,
                    ),
                )
                upto = group.last_id
                made += 1
                if group.last:
                    break
            if made:
                c.execute(
                    "UPDATE sensors SET sealed_upto = ? WHERE sensor_id = ?", (upto, sensor_id)
                )
        return made

    @staticmethod
    def _next_group(
        c: sqlite3.Connection, sensor_id: str, upto: int, batch_size: int
    ) -> _Group | None:
        """The next batch to cut from the sensor's readings above ``upto``, or None."""
        head = c.execute(
            "SELECT id, run_id, capture_session_id, arrived FROM readings"
            " WHERE sensor_id = ? AND id > ? ORDER BY id LIMIT 1",
            (sensor_id, upto),
        ).fetchone()
        if head is None:
            return None
        first_id, run_id, session_id, arrived = head
        # The usual case in two aggregates, without a row in Python: the next ``batch_size``
        # readings (from the index alone) share the first one's run+session and fit
        # MAX_BATCH_BYTES.
        n, last_id = c.execute(
            "SELECT COUNT(*), MAX(id) FROM (SELECT id FROM readings"
            " WHERE sensor_id = ? AND id > ? ORDER BY id LIMIT ?)",
            (sensor_id, upto, batch_size),
        ).fetchone()
        first_ts, last_ts, meta_bytes, others = c.execute(
            "SELECT MIN(ts), MAX(ts), COALESCE(SUM(length(meta)), 0),"
            " COALESCE(SUM(run_id != ? OR capture_session_id != ?), 0)"
            f" FROM {_readings(first_id, last_id, n)}"
            " WHERE sensor_id = ? AND id BETWEEN ? AND ?",
            (run_id, session_id, sensor_id, first_id, last_id),
        ).fetchone()
        size = BATCH_OVERHEAD_BYTES + n * READING_OVERHEAD_BYTES + meta_bytes
        if others == 0 and size <= MAX_BATCH_BYTES:
            return _Group(
                run_id,
                session_id,
                first_id,
                last_id,
                n,
                first_ts,
                last_ts,
                arrived,
                last=n < batch_size,
            )
        # A change of binding or a big meta inside: find the cut row by row.
        rows = c.execute(
            "SELECT id, run_id, capture_session_id, ts, COALESCE(length(meta), 0)"
            " FROM readings WHERE sensor_id = ? AND id > ? ORDER BY id LIMIT ?",
            (sensor_id, upto, batch_size),
        ).fetchall()
        g = rows
        size = BATCH_OVERHEAD_BYTES
        for j, r in enumerate(rows):
            size += READING_OVERHEAD_BYTES + r[4]
            if (r[1], r[2]) != (run_id, session_id) or (j and size > MAX_BATCH_BYTES):
                g = rows[:j]
                break
        ts = [r[3] for r in g]
        return _Group(
            run_id,
            session_id,
            first_id,
            g[-1][0],
            len(g),
            min(ts),
            max(ts),
            arrived,
            last=len(g) == len(rows) and len(rows) < batch_size,
        )

    @staticmethod
    def _new_batch(
        c: sqlite3.Connection,
        sensor_id: str,
        key: tuple[str, str],
        rows: Sequence[tuple[int, str]],
        state: str,
        now: float,
        error: str | None = None,
    ) -> str:
        """An explicit batch of the readings ``rows`` ((id, ts), in order) under a new uuid."""
        batch_id = str(uuid.uuid4())
        ts = sorted(r[1] for r in rows)
        c.execute(
            "INSERT INTO batches (id, sensor_id, run_id, capture_session_id, state,"
            " count, first_ts, last_ts, sealed_at, last_error, ranged, first_id, last_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (
                batch_id,
                sensor_id,
                key[0],
                key[1],
                state,
                len(rows),
                ts[0],
                ts[-1],
                now,
                error,
                rows[0][0],
                rows[-1][0],
            ),
        )
        c.executemany(
            "UPDATE readings SET batch_id = ? WHERE id = ?", [(batch_id, r[0]) for r in rows]
        )
        return batch_id

    @classmethod
    def _batch_readings(
        cls, c: sqlite3.Connection, batch_id: str, columns: str
    ) -> tuple[tuple[str, str, str], list[tuple[Any, ...]]]:
        """The batch's (sensor_id, run_id, capture_session_id) and ``columns`` of each of its
        readings, in order; KeyError for an unknown batch."""
        b = c.execute(
            "SELECT sensor_id, run_id, capture_session_id FROM batches WHERE id = ?", (batch_id,)
        ).fetchone()
        members = cls._members(c, batch_id)
        if b is None or members is None:
            raise KeyError(batch_id)
        rows = c.execute(
            f"SELECT {columns} FROM {members.table} WHERE {members.where} ORDER BY id",
            members.params,
        ).fetchall()
        return b, rows

    @staticmethod
    def _members(c: sqlite3.Connection, batch_id: str) -> _Members | None:
        """The readings of a batch (see the module's doc); None for an unknown batch."""
        b = c.execute(
            "SELECT ranged, sensor_id, first_id, last_id, count FROM batches WHERE id = ?",
            (batch_id,),
        ).fetchone()
        if b is None:
            return None
        if b[0]:
            return _Members(
                _readings(b[2], b[3], b[4]),
                "sensor_id = ? AND id BETWEEN ? AND ? AND batch_id IS NULL",
                (b[1], b[2], b[3]),
            )
        return _Members("readings", "batch_id = ?", (batch_id,))

    def split_batch(self, batch_id: str, refused: dict[int, str], reason: str) -> str | None:
        """The cloud refused some readings of the batch (422 naming ``readings.N``), so it
        stored none of them: the refused readings go to a dead batch of their own, the others
        stay in the queue at the batch's place, under a NEW id (the old key has met the cloud
        with another body). Return the new id, or None when every reading was refused (the
        whole batch is dead then)."""
        now = time.time()
        with self.tx() as c:
            b, rows = self._batch_readings(c, batch_id, "id, ts, raw_value")
            bad = [r for i, r in enumerate(rows) if i in refused]
            good = [r for i, r in enumerate(rows) if i not in refused]
            if not bad or not good:
                self._mark_dead(c, batch_id, reason, now)
                return None
            why = "; ".join(f"readings.{i}: {refused[i]}" for i in sorted(refused) if i < len(rows))
            dead_id = self._new_batch(
                c, b[0], (b[1], b[2]), [(r[0], r[1]) for r in bad], DEAD, now, why[:1000]
            )
            payload = json.dumps([{"timestamp": r[1], "raw_value": r[2]} for r in bad])
            letter = DeadLetter(
                "batch",
                f"{len(bad)} of {len(rows)} readings refused: {why}"[:2000],
                sensor_id=b[0],
                batch_id=dead_id,
                payload=payload[:4096],
            )
            self._dead_letters(c, [letter], now)
            new_id = str(uuid.uuid4())
            ts = sorted(r[1] for r in good)
            c.execute(
                "UPDATE batches SET id = ?, state = ?, count = ?, first_ts = ?, last_ts = ?,"
                " last_error = ? WHERE id = ?",
                (new_id, PENDING, len(good), ts[0], ts[-1], why[:1000], batch_id),
            )
            # (the refused readings carry the dead batch's id now, so a ranged batch leaves them
            # out by itself; an explicit one takes its readings along to the new id)
            c.execute("UPDATE readings SET batch_id = ? WHERE batch_id = ?", (new_id, batch_id))
        return new_id

    def next_batch(self, sensor_id: str, after: int | None = None) -> Batch | None:
        """The oldest batch of this sensor still to send (pending or left inflight by a crash);
        with ``after``, the oldest one queued behind the batch of that ``seq``."""
        row = self.conn.execute(
            "SELECT seq, id, sensor_id, run_id, capture_session_id, state, count, attempts"
            " FROM batches WHERE sensor_id = ? AND state IN (?, ?) AND seq > ?"
            " ORDER BY seq LIMIT 1",
            (sensor_id, PENDING, INFLIGHT, -1 if after is None else after),
        ).fetchone()
        return None if row is None else Batch(*row)

    def batch_body(self, batch_id: str) -> dict[str, Any]:
        """The JSON body of a sealed batch; the same bytes every time it is sent."""
        with self.snapshot() as c:
            b, rows = self._batch_readings(c, batch_id, "ts, raw_value, meta")
        # one comprehension: a loop appending to a list cost half as much again, on the
        # buffer's thread, for every batch sent
        readings = [
            {"timestamp": ts, "raw_value": raw}
            if meta is None
            else {"timestamp": ts, "raw_value": raw, "meta": json.loads(meta)}
            for ts, raw, meta in rows
        ]
        return {"sensor_id": b[0], "run_id": b[1], "capture_session_id": b[2], "readings": readings}

    def mark_inflight(self, batch_id: str) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE batches SET state = ?, attempts = attempts + 1, last_attempt_at = ?"
                " WHERE id = ?",
                (INFLIGHT, time.time(), batch_id),
            )

    def mark_synced(
        self,
        batch_id: str,
        accepted: int | None,
        late: int | None,
        *,
        then_inflight: str | None = None,
    ) -> None:
        """The cloud took the batch; ``then_inflight``: the next batch, already on its way, is
        marked in the same transaction (one fsync instead of two per batch while draining)."""
        with self.tx() as c:
            now = time.time()
            c.execute(
                "UPDATE batches SET state = ?, synced_at = ?, accepted = ?, late = ?,"
                " last_error = NULL WHERE id = ?",
                (SYNCED, now, accepted, late, batch_id),
            )
            if then_inflight is not None:
                c.execute(
                    "UPDATE batches SET state = ?, attempts = attempts + 1, last_attempt_at = ?"
                    " WHERE id = ?",
                    (INFLIGHT, now, then_inflight),
                )

    def mark_retry(self, batch_id: str, error: str) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE batches SET state = ?, last_error = ? WHERE id = ?",
                (PENDING, error, batch_id),
            )

    def mark_dead(self, batch_id: str, reason: str) -> None:
        with self.tx() as c:
            self._mark_dead(c, batch_id, reason, time.time())

    def _mark_dead(self, c: sqlite3.Connection, batch_id: str, reason: str, now: float) -> None:
        row = c.execute("SELECT sensor_id FROM batches WHERE id = ?", (batch_id,)).fetchone()
        c.execute(
            "UPDATE batches SET state = ?, last_error = ? WHERE id = ?", (DEAD, reason, batch_id)
        )
        letter = DeadLetter("batch", reason, sensor_id=row[0] if row else None, batch_id=batch_id)
        self._dead_letters(c, [letter], now)

    # -- operator actions ------------------------------------------------------------------------

    def retry_dead(
        self,
        ids: Sequence[int] | None = None,
        *,
        sensor_id: str | None = None,
        rebind: bool = False,
    ) -> int:
        """Put dead-lettered batches back in the queue.

        Without ``rebind``: same id, same readings (after e.g. a rotated token). With
        ``rebind``: the readings move to their sensor's *current* run / capture session (see
        ``bind``) and the batch gets a new id -- nothing was stored under the old key (a
        definitive 4xx), and a key reused with another body is refused by the cloud."""
        with self.tx() as c:
            where = "kind = 'batch' AND retried_at IS NULL"
            params: list[Any] = []
            if ids:
                where += f" AND id IN ({','.join('?' * len(ids))})"
                params += list(ids)
            if sensor_id is not None:
                where += " AND sensor_id = ?"
                params.append(sensor_id)
            rows = c.execute(f"SELECT id, batch_id FROM dead_letter WHERE {where}", params)
            picked = rows.fetchall()
            now = time.time()
            for dl_id, batch_id in picked:
                if rebind:
                    self._rebind_batch(c, batch_id)
                else:
                    c.execute(
                        "UPDATE batches SET state = ?, attempts = 0 WHERE id = ? AND state = ?",
                        (PENDING, batch_id, DEAD),
                    )
                c.execute("UPDATE dead_letter SET retried_at = ? WHERE id = ?", (now, dl_id))
        return len(picked)

    @staticmethod
    def _rebind_batch(c: sqlite3.Connection, batch_id: str) -> None:
        row = c.execute(
            "SELECT s.run_id, s.capture_session_id FROM batches b JOIN sensors s"
            " ON s.sensor_id = b.sensor_id WHERE b.id = ? AND b.state = ?",
            (batch_id, DEAD),
        ).fetchone()
        members = Buffer._members(c, batch_id)
        if row is None or members is None:
            return
        new_id = str(uuid.uuid4())
        c.execute(
            f"UPDATE {members.table} SET run_id = ?, capture_session_id = ? WHERE {members.where}",
            (row[0], row[1], *members.params),
        )
        c.execute("UPDATE readings SET batch_id = ? WHERE batch_id = ?", (new_id, batch_id))
        c.execute(
            "UPDATE batches SET id = ?, run_id = ?, capture_session_id = ?, state = ?,"
            " attempts = 0, last_error = NULL WHERE id = ?",
            (new_id, row[0], row[1], PENDING, batch_id),
        )

    def requeue_range(self, since: str, until: str, sensor_id: str | None = None) -> int:
        """Mark the synced batches that overlap [since, until] for sending again."""
        sql = "UPDATE batches SET state = ?, attempts = 0 WHERE state = ? AND first_ts <= ?"
        sql += " AND last_ts >= ?"
        params: list[Any] = [PENDING, SYNCED, until, since]
        if sensor_id is not None:
            sql += " AND sensor_id = ?"
            params.append(sensor_id)
        with self.tx() as c:
            return c.execute(sql, params).rowcount

    def prune(self, retention_s: float) -> int:
        """Delete synced batches (and their readings) older than the retention period."""
        cutoff = time.time() - retention_s
        with self.tx() as c:
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM batches WHERE state = ? AND synced_at <= ?", (SYNCED, cutoff)
                )
            ]
            for batch_id in ids:
                members = self._members(c, batch_id)
                if members is not None:
                    c.execute(f"DELETE FROM {members.table} WHERE {members.where}", members.params)
            c.executemany("DELETE FROM batches WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    def rotate_dead_letters(self, keep: int = MAX_DEAD_LETTERS) -> int:
        """Delete the oldest dead letters beyond ``keep``; return how many went.

        Only records that hold no unsynced reading go: rejected MQTT payloads and serial or
        reading records (copies kept for inspection; the message was acked as dead), and
        records of batches already retried. A dead *batch* keeps its record and its readings
        until an operator retries it -- unsynced data is never dropped by a rotation."""
        with self.tx() as c:
            return c.execute(
                "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter"
                " WHERE kind != 'batch' OR retried_at IS NOT NULL ORDER BY id DESC"
                " LIMIT -1 OFFSET ?)",
                (keep,),
            ).rowcount

    def gauges(self) -> tuple[int, int]:
        """(used bytes, unsynced readings), from indexes only: cheap on any buffer size."""
        with self.snapshot() as c:
            return self._gauges(c)

    def _gauges(self, c: sqlite3.Connection) -> tuple[int, int]:
        in_batches = c.execute(
            "SELECT COALESCE(SUM(count), 0) FROM batches WHERE state IN (?, ?)",
            (PENDING, INFLIGHT),
        ).fetchone()[0]
        # CROSS JOIN fixes the order (sensors outside): each sensor's unsealed readings are
        # then one range of readings_sensor, where the planner would scan every reading.
        unsealed = c.execute(
            "SELECT COUNT(*) FROM sensors s CROSS JOIN readings r"
            " ON r.sensor_id = s.sensor_id AND r.id > s.sealed_upto"
        ).fetchone()[0]
        return self.used_bytes(), int(in_batches) + int(unsealed)

    # -- reports ---------------------------------------------------------------------------------

    def status(self, rate_window_s: float = 60.0) -> dict[str, Any]:
        with self.snapshot() as c:
            return self._status(c, rate_window_s)

    def _status(self, c: sqlite3.Connection, rate_window_s: float) -> dict[str, Any]:
        since = time.time() - rate_window_s
        per_sensor: dict[str, dict[str, Any]] = {}
        for s in self.sensors():
            sid = s["sensor_id"]
            counts = dict(
                c.execute(
                    "SELECT state, COALESCE(SUM(count), 0) FROM batches WHERE sensor_id = ?"
                    " GROUP BY state",
                    (sid,),
                ).fetchall()
            )
            unsealed = c.execute(
                "SELECT COUNT(*) FROM readings WHERE sensor_id = ? AND id > ?",
                (sid, s["sealed_upto"]),
            ).fetchone()[0]
            recent = c.execute(
                "SELECT COUNT(*) FROM readings WHERE sensor_id = ? AND arrived >= ?", (sid, since)
            ).fetchone()[0]
            err = c.execute(
                "SELECT last_error FROM batches WHERE sensor_id = ? AND last_error IS NOT NULL"
                " ORDER BY last_attempt_at DESC LIMIT 1",
                (sid,),
            ).fetchone()
            per_sensor[sid] = {
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
        dead_letters = c.execute(
            "SELECT COUNT(*) FROM dead_letter WHERE retried_at IS NULL"
        ).fetchone()[0]
        return {
            "buffer": str(self.path),
            "edge_id": self.edge_id(),
            "used_bytes": self.used_bytes(),
            "max_bytes": self.max_bytes,
            "dead_letters": int(dead_letters),
            "sensors": per_sensor,
        }

    def unsent_batches(self) -> int:
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM batches WHERE state IN (?, ?)", (PENDING, INFLIGHT)
            ).fetchone()[0]
        )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT id, at, kind, sensor_id, batch_id, origin, payload, reason, retried_at"
                " FROM dead_letter ORDER BY id DESC LIMIT ?",
                [limit],
            )
        )
