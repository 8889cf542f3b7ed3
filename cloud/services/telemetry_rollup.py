"""Per-sensor summaries of telemetry at fixed time resolutions, kept at ingest, so that a
chart of millions of readings reads thousands of rows instead (migration 0004).

A *cell* is a span ``[cell * width, (cell + 1) * width)`` of microseconds since the Unix epoch
at one of :data:`WIDTHS_US` (10 ms up to an hour; each width divides the next). For every
(sensor, level, cell, capture session) :class:`models.TelemetryRollup` holds the count, sum,
min and max of the readings stored there.

A batch is summarised from its *floor* level up, the finest level at which it is dense (on
average at least :data:`MIN_PER_CELL` readings per cell across its span): finer levels would
hold about one row per reading and buy a chart nothing. A batch too sparse for any level (a
slow sensor's batch of a reading or two, say) is summarised from :data:`SPARSE_FLOOR` (1 min)
up, where its sensor's batches share cells: a month of such batches still charts from the
summaries. Its ``rollup_level`` says which: levels ``>= rollup_level`` include it; batches
stored before migration 0004 have :data:`NOT_ROLLED` (none). A chart at level L therefore
reads L's cells plus, one by one, the readings of the few batches with ``rollup_level > L``
(:mod:`cloud.services.telemetry_query`).

The telemetry store adds them to what is there (an upsert), in the ingest transaction, so a
rolled-back ingest leaves nothing behind and a re-sent batch (idempotent replay) adds nothing.
Readings are never updated or deleted, so the summaries never go stale.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from cloud.store.telemetry.base import Cell

__all__ = ["Cell", "add_to", "floor_level", "summarise"]

#: Cell widths in microseconds, level 0 first: 10 ms, 100 ms, 1 s, 10 s, 1 min, 10 min, 1 h.
WIDTHS_US = (10_000, 100_000, 1_000_000, 10_000_000, 60_000_000, 600_000_000, 3_600_000_000)
#: ``rollup_level`` of a batch that is in no summary (stored before migration 0004).
NOT_ROLLED = len(WIDTHS_US)
#: Where a batch dense at no level is summarised from: 1 min.
SPARSE_FLOOR = 4
#: A batch is summarised at a level when it holds at least this many readings per cell of
#: its span there: below that the summary is nearly as large as the readings.
MIN_PER_CELL = 4


def floor_level(stamps_us: Sequence[int]) -> int:
    """The finest level at which these readings are dense, else :data:`SPARSE_FLOOR`."""
    n = len(stamps_us)
    lo, hi = min(stamps_us), max(stamps_us)
    for level, width in enumerate(WIDTHS_US[:SPARSE_FLOOR]):
        if n >= MIN_PER_CELL * (hi // width - lo // width + 1):
            return level
    return SPARSE_FLOOR


def add_to(
    cells: dict[int, list[Any]], key: int, n: int, total: float, lo: float, hi: float
) -> None:
    """Add ``n`` readings of this sum, min and max to ``cells[key]`` ([count, sum, min, max])."""
    agg = cells.get(key)
    if agg is None:
        cells[key] = [n, total, lo, hi]
        return
    agg[0] += n
    agg[1] += total
    # Per reading on ingest (summarise): a compare costs less than a call of min()/max().
    if lo < agg[2]:  # noqa: PLR1730
        agg[2] = lo
    if hi > agg[3]:  # noqa: PLR1730
        agg[3] = hi


def summarise(stamps_us: list[int], values: Sequence[float]) -> tuple[int, list[Cell]]:
    """The batch's floor level and its cells at that level and every coarser one, sorted by
    (level, cell): concurrent ingests then lock shared rows in one order."""
    level = floor_level(stamps_us)
    width = WIDTHS_US[level]
    finest: dict[int, list[Any]] = {}
    if sorted(stamps_us) == stamps_us:  # timsort: one C pass over a sorted list
        # The usual batch is in time order: each cell is a slice, summed in C.
        i, n = 0, len(stamps_us)
        while i < n:
            cell = stamps_us[i] // width
            j = bisect_left(stamps_us, (cell + 1) * width, i, n)
            part = values[i:j]
            finest[cell] = [j - i, sum(part), min(part), max(part)]
            i = j
    else:
        for u, v in zip(stamps_us, values, strict=True):
            add_to(finest, u // width, 1, v, v, v)
    out: list[Cell] = [(level, c, *a) for c, a in sorted(finest.items())]
    below = finest
    for coarser in range(level + 1, len(WIDTHS_US)):
        ratio = WIDTHS_US[coarser] // WIDTHS_US[coarser - 1]
        up: dict[int, list[Any]] = {}
        for c, (n_, s, lo, hi) in below.items():
            add_to(up, c // ratio, n_, s, lo, hi)
        out.extend((coarser, c, *a) for c, a in sorted(up.items()))
        below = up
    return level, out
