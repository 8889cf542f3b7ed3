"""The :class:`Buffer`: one SQLite connection (WAL), its thread, and its transactions.

Every public method is synchronous and runs one transaction, which it opens and closes here
(the modules beside this one hold the SQL and run inside it). The daemon calls them on one
dedicated thread (:meth:`Buffer.call`) so the event loop never blocks on an fsync; the CLI
calls them directly, from its own process, which WAL allows next to a running daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from common.edge_rules import EdgeRules
from edge.buffer import alarms, batches, faults, operator, reports, sensors, sequence
from edge.buffer.records import INFLIGHT, PENDING, Batch, BufferFull, Write, WriteResult
from edge.buffer.schema import migrate
from edge.buffer.writes import commit_writes

log = logging.getLogger("benchlink.edge.alarms")

P = ParamSpec("P")
T = TypeVar("T")

#: the WAL file is truncated to this after a checkpoint (it counts against the budget)
WAL_LIMIT_BYTES = 64 * 1024 * 1024
#: bytes kept free on the buffer's filesystem by default (``buffer.min_free_bytes``): room for
#: the WAL (up to WAL_LIMIT_BYTES), a group commit, sync's bookkeeping and the deletion of
#: synced rows, so that the buffer can still drain when capture has stopped for a full disk
MIN_FREE_BYTES = 100_000_000
#: how long a measure of the disk that left room is trusted (see Buffer._disk_surely_ok)
DISK_CHECK_S = 1.0
#: dead letters kept at most by default (kinds other than dead batches; see rotate_dead_letters)
MAX_DEAD_LETTERS = 10_000


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the filesystem refusing to grow a file (SQLITE_FULL, ENOSPC)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def connect(path: Path) -> sqlite3.Connection:
    """The buffer's connection, its file made readable by us only (it holds sensor tokens),
    migrated to this code's scheme (:class:`edge.buffer.schema.NewerScheme` if it is newer)."""
    old_umask = os.umask(0o077)  # the file, its WAL and its SHM are created private
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL, not NORMAL: in WAL mode NORMAL skips the fsync of the WAL on commit, so a
            # power cut can lose the last commits -- which are exactly the readings we already
            # acknowledged to a device. Group commit keeps the cost at one fsync per batch.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            migrate(conn, path)
        except BaseException:
            conn.close()
            raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return conn


class Buffer:
    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int = 2_000_000_000,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        #: the last measure of the disk: (monotonic time, used_bytes then, disk_room then)
        self._disk_seen: tuple[float, int, int] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path)
        self._executor: ThreadPoolExecutor | None = None
        self._edge_id: str | None = None
        #: sensors with device faults the cloud has not seen: their sync sends those before
        #: any later batch (see :mod:`edge.buffer.faults`); kept up to date by the commits
        self.fault_sensors: set[str] = faults.waiting_sensors(self.conn)
        #: the alarm rules cached for each sensor, evaluated at each commit
        self.alarms = alarms.Evaluator()
        self.alarms.load(self.conn)

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
            # SQLite may already have rolled back (SQLITE_FULL does): a ROLLBACK then would
            # fail and hide the error that matters
            if self.conn.in_transaction:
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

    def disk_room(self) -> int:
        """Bytes the buffer can still write without the filesystem refusing: free space (for
        an unprivileged process) plus the database's own free pages, which it reuses before
        growing the file (so pruning synced rows makes room although the file keeps its
        size). One statvfs and two pragmas: called once per group commit, not per reading."""
        st = os.statvfs(self.path.parent)
        page = self.conn.execute("PRAGMA page_size").fetchone()[0]
        free_pages = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(st.f_bavail * st.f_frsize) + int(free_pages) * int(page)

    def full(self, used: int | None = None) -> BufferFull | None:
        """Why new readings would be refused now (budget spent, or the disk down to its
        reserve), before any pruning; None when there is room."""
        used = self.used_bytes() if used is None else used
        if used >= self.max_bytes:
            return BufferFull(used, self.max_bytes)
        room = self.disk_room()
        self._disk_seen = (time.monotonic(), used, room)
        if room < self.min_free_bytes:
            return BufferFull(used, self.max_bytes, room=room, reserve=self.min_free_bytes)
        return None

    def edge_id(self) -> str:
        """The id made when the buffer was created (see :func:`edge.buffer.schema.edge_id`);
        also the epoch of its sequence numbers (see :mod:`edge.buffer.sequence`)."""
        if self._edge_id is None:
            row = self.conn.execute("SELECT value FROM edge WHERE key = 'edge_id'").fetchone()
            self._edge_id = str(row[0])
        return self._edge_id

    # -- sensors and bindings --------------------------------------------------------------------

    def upsert_sensor(
        self, sensor_id: str, token: str, source: str, run_id: str, session_id: str
    ) -> None:
        """Register a configured sensor (see :func:`edge.buffer.sensors.upsert`)."""
        with self.tx() as c:
            sensors.upsert(c, sensor_id, token, source, (run_id, session_id), time.time())

    def bind(self, sensor_id: str, run_id: str, session_id: str) -> None:
        """Move a sensor's next readings to another run/session; the running daemon stamps
        every commit with the binding it reads inside that commit's transaction."""
        with self.tx() as c:
            sensors.bind(c, sensor_id, (run_id, session_id), time.time())

    def sensors(self) -> list[dict[str, Any]]:
        return reports.sensors(self.conn)

    def set_token(self, sensor_id: str, token: str) -> bool:
        """Replace a sensor's token (rotated in the config); the next batch sent uses it.
        False when it was already that one, or the sensor is not in the buffer."""
        with self.tx() as c:
            return sensors.set_token(c, sensor_id, token)

    def token(self, sensor_id: str) -> str:
        return sensors.token(self.conn, sensor_id)

    # -- the group commit ------------------------------------------------------------------------

    def commit(self, writes: Sequence[Write]) -> list[WriteResult | BufferFull]:
        """Commit many writes in one transaction (one fsync) and say what became of each."""
        full = self._room()
        try:
            with self.tx() as c:
                now = time.time()
                results = commit_writes(c, writes, full, now, self.fault_sensors)
                lines = self.alarms.after_writes(c, writes, results, now)
        except BaseException:
            self.alarms.dirty = True  # its state went back with the transaction
            raise
        for level, line in lines:
            log.log(level, "%s", line)
        return results

    def _room(self) -> BufferFull | None:
        """None when the budget and the disk have room, after pruning synced rows if they
        had none. A filesystem that fills before the budget is a budget reached: the reserve
        (``min_free_bytes``) stays free for the WAL, sync and these very deletions."""
        used = self.used_bytes()
        if used < self.max_bytes and self._disk_surely_ok(used):
            return None
        if self.full(used) is None:
            return None
        self.prune(retention_s=0)  # synced rows go first, whatever their age
        # and the WAL gives its disk back (a reader in the way just makes this partial)
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return self.full()

    def _disk_surely_ok(self, used: int) -> bool:
        """Whether the last measure of the disk still holds without measuring again: it left
        room above the reserve, it is recent, and this buffer has grown by less than half
        that margin since. Keeps the group commit's hot path at what the budget check costs
        already; space taken meanwhile by another process is caught at the next measure, or
        by the commit failing with SQLITE_FULL (refused like a full buffer, see the writer)."""
        if self._disk_seen is None:
            return False
        at, used_then, room_then = self._disk_seen
        margin = room_then - self.min_free_bytes
        return (
            margin > 0 and used - used_then < margin // 2 and time.monotonic() - at < DISK_CHECK_S
        )

    # -- alarm rules (see :mod:`edge.buffer.alarms`) -------------------------------------------

    def set_rules(self, sensor_id: str, rules: EdgeRules) -> int:
        """Cache the sensor's rules as pulled from the cloud; the number of them."""
        try:
            with self.tx() as c:
                return self.alarms.replace(c, sensor_id, rules, time.time())
        except BaseException:
            self.alarms.dirty = True
            raise

    def keep_rules_of(self, sensor_ids: Iterable[str]) -> list[str]:
        """Drop the cached rules of every sensor not in ``sensor_ids``; the ones dropped."""
        try:
            with self.tx() as c:
                return self.alarms.forget(c, set(sensor_ids), time.time())
        except BaseException:
            self.alarms.dirty = True
            raise

    def stale_tick(self) -> int:
        """Raise the stale rules' alarms that are due by this PC's clock; how many."""
        if not self.alarms.has_stale():
            return 0  # no transaction (and no fsync) for nothing
        try:
            with self.tx() as c:
                lines = self.alarms.stale_tick(c, time.time())
        except BaseException:
            self.alarms.dirty = True
            raise
        for level, line in lines:
            log.log(level, "%s", line)
        return len(lines)

    def alarm_report(self) -> dict[str, Any]:
        with self.snapshot() as c:
            return alarms.report(c)

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
        before its body would pass :data:`~edge.buffer.batches.MAX_BATCH_BYTES` (big
        ``meta``), so that it never meets the cloud's 413. With ``ahead``, cut only until the
        sensor has that many batches waiting to be sent: after an outage the sync loop seals a
        little before each send instead of the whole backlog at once (one transaction of
        minutes' worth of readings held every other step on the buffer's thread)."""
        with self.tx() as c:
            return batches.seal(c, sensor_id, batch_size, time.time(), older_than, ahead)

    def split_batch(self, batch_id: str, refused: dict[int, str], reason: str) -> str | None:
        """The cloud refused some readings of the batch (422 naming ``readings.N``), so it
        stored none of them: the refused readings go to a dead batch of their own, the others
        stay in the queue at the batch's place, under a NEW id (the old key has met the cloud
        with another body). Return the new id, or None when every reading was refused (the
        whole batch is dead then)."""
        with self.tx() as c:
            return batches.split(c, batch_id, refused, reason, time.time())

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
            return batches.body(c, batch_id, self.edge_id())

    def mark_inflight(self, batch_id: str) -> None:
        with self.tx() as c:
            batches.mark_inflight(c, batch_id, time.time())

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
            batches.mark_synced(c, batch_id, accepted, late, now)
            if then_inflight is not None:
                batches.mark_inflight(c, then_inflight, now)

    def mark_retry(self, batch_id: str, error: str) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE batches SET state = ?, last_error = ? WHERE id = ?",
                (PENDING, error, batch_id),
            )

    def mark_dead(self, batch_id: str, reason: str) -> None:
        with self.tx() as c:
            batches.mark_dead(c, batch_id, reason, time.time())

    # -- device faults (see edge.buffer.faults) -------------------------------------------------

    def unsent_faults(self, sensor_id: str) -> list[dict[str, Any]]:
        """The sensor's fault episodes to send, oldest first; with none left, the sensor
        leaves :attr:`fault_sensors` (on the buffer's thread, like the commits that add it)."""
        with self.snapshot() as c:
            todo = faults.unsent(c, sensor_id)
        if not todo:
            self.fault_sensors.discard(sensor_id)
        return todo

    def mark_fault_sent(self, episode: str, count: int) -> None:
        with self.tx() as c:
            faults.mark_sent(c, episode, count, time.time())

    def mark_fault_retry(self, episode: str, error: str) -> None:
        with self.tx() as c:
            faults.mark_retry(c, episode, error)

    def mark_fault_dead(self, episode: str, reason: str) -> None:
        with self.tx() as c:
            faults.mark_dead(c, episode, reason, time.time())

    # -- operator actions ------------------------------------------------------------------------

    def retry_dead(
        self,
        ids: Sequence[int] | None = None,
        *,
        sensor_id: str | None = None,
        rebind: bool = False,
    ) -> operator.Retried:
        """Put dead-lettered batches and device-fault episodes back in the queue.

        Without ``rebind``: same id, same readings (after e.g. a rotated token). With
        ``rebind``: the readings move to their sensor's *current* run / capture session (see
        ``bind``) and the batch gets a new id -- nothing was stored under the old key (a
        definitive 4xx), and a key reused with another body is refused by the cloud. An
        episode keeps its id either way (the cloud keeps nothing of a refused one)."""
        with self.tx() as c:
            retried = operator.retry_dead(c, ids, sensor_id, rebind, time.time())
            if retried.episodes:
                self.fault_sensors |= faults.waiting_sensors(c)
            return retried

    def recheck_faults(self, sensor_id: str) -> bool:
        """Whether the sensor has fault episodes to send that this process did not know of
        (queued again by ``dead-letter retry`` from another process); they are then sent."""
        if sensor_id in self.fault_sensors:
            return True
        waiting = faults.has_unsent(self.conn, sensor_id)
        if waiting:
            self.fault_sensors.add(sensor_id)
        return waiting

    def requeue_range(self, since: str, until: str, sensor_id: str | None = None) -> int:
        """Mark the synced batches that overlap [since, until] for sending again."""
        with self.tx() as c:
            return operator.requeue_range(c, since, until, sensor_id)

    def prune(self, retention_s: float) -> int:
        """Delete synced batches (and their readings) older than the retention period, and
        the fault episodes the cloud has whole."""
        with self.tx() as c:
            faults.prune(c, time.time() - retention_s)
            return operator.prune(c, time.time() - retention_s)

    def rotate_dead_letters(self, keep: int = MAX_DEAD_LETTERS) -> int:
        """See :func:`edge.buffer.operator.rotate_dead_letters`."""
        with self.tx() as c:
            return operator.rotate_dead_letters(c, keep)

    # -- reports ---------------------------------------------------------------------------------

    def gauges(self) -> tuple[int, int]:
        """(used bytes, unsynced readings), from indexes only: cheap on any buffer size."""
        with self.snapshot() as c:
            return self.used_bytes(), reports.unsynced(c)

    def status(self, rate_window_s: float = 60.0) -> dict[str, Any]:
        with self.snapshot() as c:
            return {
                "buffer": str(self.path),
                "edge_id": self.edge_id(),
                "used_bytes": self.used_bytes(),
                "max_bytes": self.max_bytes,
                "disk_room_bytes": self.disk_room(),
                "min_free_bytes": self.min_free_bytes,
                "full": None if (full := self.full()) is None else full.cause,
                "dead_letters": reports.open_dead_letters(c),
                "sensors": reports.per_sensor(c, rate_window_s),
            }

    def sequence_report(self) -> dict[str, dict[str, Any]]:
        """Each sensor's sequence numbers: captured, waiting, dead-lettered (see
        :mod:`edge.buffer.sequence`), by sensor id."""
        with self.snapshot() as c:
            return sequence.report(c, self.edge_id())

    def unsent_batches(self) -> int:
        return reports.unsent_batches(self.conn)

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return reports.dead_letters(self.conn, limit)
