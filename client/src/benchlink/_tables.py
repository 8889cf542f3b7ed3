"""Record batches of an export made into the client's frames: the columns the tutorial
documents (``unit`` for the export's ``value_unit``), the export's description on the frame.

Imported only once pyarrow is known to be there (:func:`benchlink._export.available`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from benchlink._frames import Frame, need

#: (export column, frame column) of a reading, in the frame's order. The export's ``run_id``
#: is left out: a run's frame is of one run (the description names it).
READINGS = (
    ("timestamp", "timestamp"),
    ("sensor", "sensor"),
    ("sensor_id", "sensor_id"),
    ("capture_session_id", "capture_session_id"),
    ("raw_value", "raw_value"),
    ("raw_unit", "raw_unit"),
    ("value", "value"),
    ("value_unit", "unit"),
    ("profile_version", "profile_version"),
    ("late", "late"),
)


def reading_schema(export: pa.Schema) -> pa.Schema:
    return pa.schema([export.field(src).with_name(dst) for src, dst in READINGS])


def readings(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, profile_version: str | None
) -> Iterator[pa.RecordBatch]:
    """The export's batches as the frame's columns; of one profile version if given (the
    export has no such filter: it is applied here, a batch at a time)."""
    for given in batches:
        batch = given
        if profile_version is not None:
            versions = given.column("profile_version").dictionary_decode()
            batch = given.filter(pc.equal(versions, profile_version))
        columns = [batch.column(src) for src, _ in READINGS]
        yield pa.RecordBatch.from_arrays(columns, schema=schema)


def concat(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    """One table of the batches (no copy: the table holds them)."""
    return pa.Table.from_batches(batches, schema)


def rebatch(batches: Iterable[pa.RecordBatch], schema: pa.Schema, size: int) -> Iterator[pa.Table]:
    """Tables of ``size`` rows (the last one shorter) from batches of any size."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= size:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending, schema)


def metrics(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    """The metric points with ``name`` and ``unit`` as dictionaries (as the readings' codes
    are), a unit not given being empty text, as in the JSON list."""
    table = pa.Table.from_batches(list(batches), schema)
    for column, fill in (("name", None), ("unit", "")):
        values = table.column(column).combine_chunks()
        if fill is not None:
            values = pc.fill_null(values, fill)
        i = table.schema.get_field_index(column)
        table = table.set_column(i, column, pc.dictionary_encode(values))
    return table


def frame(table: pa.Table, kind: Frame, about: dict[str, Any], index: Any = None) -> Any:
    """``table`` as ``kind`` with the export's description ``about``: pandas in
    ``attrs["benchlink"]``, Arrow in the schema metadata ``benchlink`` (JSON, as in the
    export's file); polars frames carry no metadata."""
    if kind == "arrow":
        return table.replace_schema_metadata({"benchlink": json.dumps(about)})
    if kind == "polars":
        return need("polars").from_arrow(table)
    need("pandas")
    # self_destruct: each column's Arrow memory is let go once converted, so the peak is
    # about one copy of the readings, not two.
    df = table.to_pandas(self_destruct=True, split_blocks=True)
    if index is not None:
        df = df.set_index(index)
    df.attrs["benchlink"] = about
    return df
