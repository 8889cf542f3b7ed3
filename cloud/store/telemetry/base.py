"""The telemetry store's interface, and the rows it writes: services call
:class:`TelemetryStore` and never ask which database is behind it.

Two implementations, :mod:`~cloud.store.telemetry.postgres` and
:mod:`~cloud.store.telemetry.sqlite`, chosen once per connection by
:func:`cloud.store.telemetry.telemetry_store`. What both databases run alike (the lookups
of stored values, a session's sensors) is written here once.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from cloud import utctime
from cloud.db import models

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

T = models.TelemetryReading

#: The columns of a reading row, in table order.
COLUMNS = (
    "project_id",
    "sensor_id",
    "run_id",
    "capture_session_id",
    "batch_id",
    "ts",
    "raw_value",
    "value",
    "profile_version",
    "late",
    "meta",
    "seq",
)
#: The unique index behind one reading per timestamp and sensor (migration 0006).
ONE_PER_TIMESTAMP_INDEX = "ux_telemetry_sensor_ts"

#: One reading as the live stream delivers it: (timestamp ISO 8601 UTC, raw_value, value,
#: late).
LiveRow = tuple[str, float, float, bool]
#: A chart bucket: index, sum, min, max, count (count > 0).
Bucket = tuple[int, float, float, float, int]
#: One summary row: level, cell, count, sum, min, max.
Cell = tuple[int, int, int, float, float, float]


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A batch's readings in columns (one per field that varies), and what they share."""

    batch_id: int
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    profile_version: str
    late: bool
    timestamps: list[datetime]
    #: The timestamps in microseconds since the Unix epoch.
    stamps_us: list[int]
    raw_values: list[float]
    values: list[float]
    metas: list[dict[str, Any] | None]
    #: the edge's sequence number of each reading; None for a batch sent without
    seqs: list[int] | None = None

    def __len__(self) -> int:
        return len(self.stamps_us)

    def only(self, keep: Sequence[int]) -> StoredBatch:
        """The readings at these indices, in this order."""
        return replace(
            self,
            timestamps=[self.timestamps[k] for k in keep],
            stamps_us=[self.stamps_us[k] for k in keep],
            raw_values=[self.raw_values[k] for k in keep],
            values=[self.values[k] for k in keep],
            metas=[self.metas[k] for k in keep],
            seqs=None if self.seqs is None else [self.seqs[k] for k in keep],
        )

    def rows(self) -> list[dict[str, Any]]:
        """One dict of :data:`COLUMNS` per reading (for a driver's executemany)."""
        shared = {
            "project_id": self.project_id,
            "sensor_id": self.sensor_id,
            "run_id": self.run_id,
            "capture_session_id": self.capture_session_id,
            "batch_id": self.batch_id,
            "profile_version": self.profile_version,
            "late": self.late,
        }
        seqs = self.seqs if self.seqs is not None else [None] * len(self.timestamps)
        return [
            {**shared, "ts": ts, "raw_value": raw, "value": value, "meta": meta, "seq": seq}
            for ts, raw, value, meta, seq in zip(
                self.timestamps, self.raw_values, self.values, self.metas, seqs, strict=True
            )
        ]


@dataclass(frozen=True, slots=True)
class RollupKey:
    """Whose summaries a batch adds to."""

    sensor_id: uuid.UUID
    capture_session_id: uuid.UUID
    run_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Spans:
    """Chart buckets on a grid: ``count`` buckets of ``span`` us from ``start`` us since the
    Unix epoch; the last one holds everything up to ``last`` (the last reading)."""

    start: int
    span: int
    count: int
    last: int
    #: The cells are 1 us (a zoom of a few seconds): few readings, one scan is cheapest.
    fine: bool


@dataclass(frozen=True, slots=True)
class Values:
    """Which value of each reading a chart aggregates: ``value`` over ``source`` (the
    readings, or the readings joined to reprocessed values: :mod:`cloud.services.versioned`)."""

    value: Any
    source: Any


class BatchRef(Protocol):
    """Where a stored batch's readings are (a live batch header has these)."""

    @property
    def batch_id(self) -> int: ...
    @property
    def sensor_id(self) -> uuid.UUID: ...
    @property
    def capture_session_id(self) -> uuid.UUID: ...
    @property
    def first_ts(self) -> datetime: ...
    @property
    def last_ts(self) -> datetime: ...


#: A sensor's readings in a time range, in time order: their timestamps (us since the Unix
#: epoch) and converted values (``values_between``; an alarm's rate window).
Window: TypeAlias = "tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]"


def empty_window() -> Window:
    import numpy as np

    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)


def in_time_order(stamps: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> Window:
    """The readings sorted by timestamp if they are not already (a query's ORDER BY in a
    subquery is kept by the aggregate above it in practice, not by promise)."""
    if len(stamps) > 1 and not bool((stamps[1:] > stamps[:-1]).all()):
        order = stamps.argsort(kind="stable")
        return stamps[order], values[order]
    return stamps, values


_US = timedelta(microseconds=1)


def at(us: int) -> datetime:
    """The instant ``us`` microseconds after the Unix epoch."""
    return utctime.EPOCH + _US * us


class TelemetryStore(ABC):
    """Readings, their batches and summaries in one database, on a request's session."""

    def __init__(self, db: Session) -> None:
        self.db = db
        self.conn: Connection = db.connection()

    # --- writes (the ingest transaction) ------------------------------------------------

    @abstractmethod
    def insert_batch(self, fields: dict[str, Any]) -> int | None:
        """Insert the batch row; its id, or None when its Idempotency-Key is taken."""

    @abstractmethod
    def write(self, rows: StoredBatch) -> bool:
        """Write every reading, or none and answer False when one of their timestamps is
        taken for their sensor (concurrent writers included)."""

    @abstractmethod
    def write_free(self, rows: StoredBatch) -> set[int]:
        """Write the readings whose timestamps are free (waiting for a concurrent writer of
        the same timestamp); the timestamps written, in us since the epoch."""

    @abstractmethod
    def add_rollups(self, key: RollupKey, cells: Sequence[Cell]) -> None:
        """Add a batch's cells to the summaries (sorted: concurrent ingests lock in order)."""

    def stored_raw_values(self, sensor_id: uuid.UUID, stamps: list[datetime]) -> dict[int, float]:
        """The raw value stored for the sensor at each of these timestamps, by us."""
        found: dict[int, float] = {}
        for lo in range(0, len(stamps), 500):
            rows = self.conn.execute(
                select(T.ts, T.raw_value).where(
                    T.sensor_id == sensor_id, T.ts.in_(stamps[lo : lo + 500])
                )
            )
            found.update((utctime.micros(ts), raw) for ts, raw in rows)
        return found

    def values_between(self, sensor_id: uuid.UUID, first_us: int, last_us: int) -> Window:
        """The sensor's stored readings from ``first_us`` to ``last_us`` (both included), in
        time order: their timestamps (us since the epoch) and converted values."""
        import numpy as np  # at the first rate rule's batch, not when the app is built (RSS)

        rows = self.conn.execute(
            select(T.ts, T.value)
            .where(T.sensor_id == sensor_id, T.ts >= at(first_us), T.ts <= at(last_us))
            .order_by(T.ts)
        ).all()
        micros = utctime.micros
        stamps = np.array([micros(ts) for ts, _ in rows], dtype=np.int64)
        return stamps, np.array([value for _, value in rows], dtype=np.float64)

    # --- reads ------------------------------------------------------------------------

    def plan_by_index(self) -> None:  # noqa: B027 (only PostgreSQL's planner needs telling)
        """Plan this transaction's reading queries as ordered index scans."""

    def session_page(self, session_id: uuid.UUID, conds: list[Any], n: int) -> list[Any]:
        """The first ``n`` readings of ``conds`` (a capture session's, no sensor or run) in
        (ts, id) order, merged from each of the session's sensors.

        No index gives a session's readings in time order across sensors (one more would
        slow every ingest), but ix_telemetry_session_sensor_ts gives each sensor's: each
        sensor gives its first ``n`` in order and the database merges them, so a page reads
        at most ``n`` readings per sensor however long the session."""
        sensors = self._session_sensors(session_id)
        if not sensors:
            return []
        if len(sensors) == 1:  # a compound of one member is no compound to PostgreSQL
            one = select(T.__table__).where(*conds, T.sensor_id == sensors[0])
            return list(self.conn.execute(one.order_by(T.ts, T.id).limit(n)))
        return self._merged_page(sensors, conds, n)

    @abstractmethod
    def _merged_page(self, sensors: list[uuid.UUID], conds: list[Any], n: int) -> list[Any]: ...

    def _session_sensors(self, session_id: uuid.UUID) -> list[uuid.UUID]:
        """The sensors with readings in a capture session, one descent of
        ix_telemetry_session_sensor_ts each (a skip scan: the next sensor after the last
        found), instead of reading the session's readings for a DISTINCT."""
        first = select(T.sensor_id).where(T.capture_session_id == session_id)
        found: list[uuid.UUID] = []
        stmt = first.order_by(T.sensor_id).limit(1)
        while (s := self.conn.execute(stmt).scalar()) is not None:
            found.append(s)
            stmt = first.where(T.sensor_id > s).order_by(T.sensor_id).limit(1)
        return found

    @abstractmethod
    def buckets(self, conds: list[Any], spans: Spans, values: Values | None = None) -> list[Bucket]:
        """Sum, min, max and count of the values of ``conds`` per non-empty bucket, in order
        (``values``: which value of each reading; default its first one)."""

    @abstractmethod
    def batch_rows(self, batches: Sequence[BatchRef]) -> dict[int, list[LiveRow]]:
        """Each batch's readings in stored (= sent) order, as the live stream sends them."""
