"""Parquet and Arrow IPC stream writers that yield their bytes as they go.

An export is a generator of record batches (from a server-side cursor); these turn it into a
generator of byte chunks for a streaming response. Parquet is written a row group at a time
with :class:`pyarrow.parquet.ParquetWriter`; the Arrow IPC *stream* format (not the file
format) needs no footer and no seeking, so a reader can start before the end arrives. Memory
stays at one row group whatever the export's size.

pyarrow is imported at the first export, not with this module: the app imports this module
when it is built, and pyarrow in every API process was a large part of its memory.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pyarrow as pa

ExportFormat = Literal["csv", "parquet", "arrow"]

#: Readings per Parquet row group: large enough for good compression and fast scans, small
#: enough that one group's columns and their encoding stay a few MB in the API (200k rows
#: made the API's RSS grow by 80 MB during an export).
ROW_GROUP_ROWS = 64_000
#: The schema metadata key of an export's JSON description (the run, its sensors...).
METADATA_KEY = "benchlink"
#: The key pandas (2.1 and later) reads into ``DataFrame.attrs`` when it opens a Parquet file.
PANDAS_ATTRS_KEY = "PANDAS_ATTRS"


@dataclass(frozen=True)
class Format:
    media_type: str
    extension: str


#: Media types: IANA's registrations for Parquet and the Arrow IPC stream.
FORMATS: dict[str, Format] = {
    "csv": Format("text/csv; charset=utf-8", "csv"),
    "parquet": Format("application/vnd.apache.parquet", "parquet"),
    "arrow": Format("application/vnd.apache.arrow.stream", "arrows"),
}


class Drain:
    """A write-only file that keeps what was written until it is taken: the sink pyarrow
    writes into, emptied after every write so that nothing accumulates."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def with_description(schema: pa.Schema, description: Mapping[str, Any]) -> pa.Schema:
    """``schema`` carrying ``description`` as JSON in its metadata, under
    :data:`METADATA_KEY` for every reader and under pandas' attrs key, so that
    ``pandas.read_parquet(...).attrs`` has it too."""
    text = json.dumps(description, default=str, sort_keys=True)
    attrs = json.dumps({METADATA_KEY: description}, default=str, sort_keys=True)
    return schema.with_metadata({METADATA_KEY: text, PANDAS_ATTRS_KEY: attrs})


def give_memory_back() -> None:
    """Make Arrow allocate from the C library, which returns large freed blocks to the
    system, instead of mimalloc, which keeps them: an export allocates and frees a row group
    at a time, and with mimalloc the API's RSS grew by a third more during one and stayed
    there. Called by each export (it only sets a pointer), not when the module is imported."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def parquet_chunks(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Generator[bytes]:
    """A Parquet file of ``batches``, a row group (:data:`ROW_GROUP_ROWS`) at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    give_memory_back()
    sink = Drain()
    with pq.ParquetWriter(sink, schema, compression="snappy") as writer:
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
                pending, rows = [], 0
                yield sink.take()
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
    yield sink.take()  # the last group and the footer (with the metadata)


def arrow_chunks(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Generator[bytes]:
    """An Arrow IPC stream of ``batches``: the schema first, then each batch as it comes.
    Uncompressed, so that every Arrow reader (including the browsers' arrow-js) opens it."""
    import pyarrow as pa

    give_memory_back()
    sink = Drain()
    with pa.ipc.new_stream(sink, schema) as writer:
        yield sink.take()  # the schema: a reader learns the columns before the first rows
        for batch in batches:
            writer.write_batch(batch)
            yield sink.take()
    yield sink.take()  # the end-of-stream marker


def chunks(
    fmt: ExportFormat, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> Generator[bytes]:
    if fmt == "parquet":
        return parquet_chunks(schema, batches)
    if fmt == "arrow":
        return arrow_chunks(schema, batches)
    raise ValueError(f"not a columnar format: {fmt}")
