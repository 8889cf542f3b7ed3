"""Reading the cloud's exports as they arrive: Arrow IPC streams into record batches, and any
format into a file.

An export is a streamed answer of unknown length in bytes. Its bytes are handed to pyarrow's
stream reader as the reader asks for them (:class:`Body`), so the client holds the record
batches it has decoded and the network chunk in hand, never the whole body; a file is written
a chunk at a time. The server's description of the export (the run, its params, sensors,
units) is the schema's ``benchlink`` metadata, read before the first batch.

Progress is counted in rows: the server declares how many the export holds (its
``Benchlink-Rows`` header) and the client counts those it has received. A Parquet file
cannot be counted as it arrives (its row counts are in its footer), so with pyarrow installed
a Parquet download reads the Arrow stream of the same export and writes the Parquet file
here, with the same schema and description; without pyarrow the server's Parquet file is
written as it arrives and its progress knows only the bytes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchlink._exceptions import TransportError
from benchlink._http import Http

#: The answer's header with the rows the export holds.
ROWS_HEADER = "benchlink-rows"
#: Rows per Parquet row group written by a download, as the server writes them.
ROW_GROUP_ROWS = 64_000


@dataclass(frozen=True)
class ExportProgress:
    """How far a read of an export has got: ``bytes`` received, ``rows`` (readings or metric
    points) received so far (``None`` when they cannot be counted: a Parquet download without
    pyarrow), ``total`` rows the server declared (``None`` for the paged JSON lists) and
    ``done`` once the last byte has arrived."""

    bytes: int
    rows: int | None
    total: int | None
    done: bool = False

    @property
    def fraction(self) -> float | None:
        """The share received, 0 to 1 (1 once done); ``None`` when it cannot be known."""
        if self.done:
            return 1.0
        if self.rows is None or self.total is None:
            return None
        # A session still recording can add readings after the server counted them.
        return 1.0 if self.total == 0 else min(1.0, self.rows / self.total)

    @property
    def percent(self) -> float | None:
        f = self.fraction
        return None if f is None else 100 * f

    def __str__(self) -> str:
        size = f"{self.bytes / 1e6:.1f} MB"
        if self.rows is None:
            return f"{'done, ' if self.done else ''}{size}"
        of = "" if self.total is None else f" of {self.total:,}"
        pct = "" if self.percent is None else f"{self.percent:3.0f}% "
        return f"{pct}({self.rows:,}{of} rows, {size})"


#: ``progress(ExportProgress)``, or ``True`` for a line on stderr that updates itself.
Progress = Callable[[ExportProgress], None]
ProgressArg = Progress | bool | None


def reporter(progress: ProgressArg) -> Progress | None:
    """The callback ``progress=`` asks for: its own, the stderr line for ``True``, or none."""
    if progress is True:
        return _print_progress
    if progress is False or progress is None:
        return None
    return progress


def _print_progress(p: ExportProgress) -> None:
    sys.stderr.write(f"\rexport {p}" + ("\n" if p.done else ""))
    sys.stderr.flush()


def declared_rows(response: httpx.Response) -> int | None:
    """The rows the server says the export holds, if it says."""
    value = response.headers.get(ROWS_HEADER)
    return int(value) if value is not None and value.isdigit() else None


#: The schema metadata key of the export's description.
METADATA_KEY = b"benchlink"
_FILENAME = re.compile(r'filename="([^"/\\]+)"')


def available() -> bool:
    """Whether exports can be decoded here: they need pyarrow (the ``arrow`` extra)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


class Body:
    """The answer's body as the read-only file pyarrow reads from: ``read(n)`` takes network
    chunks until it has ``n`` bytes (pyarrow wants whole messages, not short reads)."""

    def __init__(self, response: httpx.Response, path: str) -> None:
        self._chunks = _chunks(response, path)
        self._held = bytearray()
        self.received = 0
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._held) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self.received += len(chunk)
            self._held += chunk
        cut = len(self._held) if size < 0 else min(size, len(self._held))
        out = bytes(self._held[:cut])
        del self._held[:cut]
        return out

    def close(self) -> None:
        self.closed = True


def _chunks(response: httpx.Response, path: str) -> Iterator[bytes]:
    """The body's chunks; a connection lost midway is one :class:`TransportError` (an export
    cannot resume where it stopped: read it again)."""
    received = 0
    try:
        for chunk in response.iter_bytes():
            received += len(chunk)
            yield chunk
    except httpx.TransportError as exc:
        raise TransportError(
            f"GET {path}: the export stopped after {received} bytes ({exc!r}); read it again"
        ) from exc


class Batches:
    """An Arrow IPC stream export being read: ``about`` (its description) at once, then
    ``batches()`` one record batch at a time."""

    def __init__(self, response: httpx.Response, path: str, progress: Progress | None) -> None:
        import pyarrow as pa

        self.response = response
        self._body = Body(response, path)
        self.total = declared_rows(response)
        self._reader = pa.ipc.open_stream(pa.PythonFile(self._body, mode="r"))
        self._progress = progress
        self.schema = self._reader.schema
        meta = self.schema.metadata or {}
        self.about: dict[str, Any] = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}

    def batches(self) -> Iterator[Any]:
        rows = 0
        for batch in self._reader:
            rows += batch.num_rows
            if self._progress is not None:
                self._progress(ExportProgress(self._body.received, rows, self.total))
            yield batch
        if self._progress is not None:  # the end-of-stream marker, after the last batch
            self._progress(ExportProgress(self._body.received, rows, self.total, done=True))


@contextmanager
def open_arrow(
    http: Http, path: str, params: Mapping[str, Any], progress: Progress | None = None
) -> Iterator[Batches]:
    """The export at ``path`` as an Arrow stream, read as it arrives."""
    with http.stream(path, params={**params, "format": "arrow"}) as response:
        yield Batches(response, path, progress)


def download(
    http: Http,
    path: str,
    params: Mapping[str, Any],
    dest: Path,
    progress: Progress | None = None,
) -> Path:
    """Write the export at ``path`` to ``dest`` (a file, or a directory to take the server's
    file name), as it arrives: constant memory whatever its size. The bytes go to
    ``<name>.part`` first and take their name only when the last one has arrived, so a cut
    download never looks like a whole file. Parquet with pyarrow installed is written from
    the Arrow stream (see the module's docstring). The path written."""
    if params.get("format") in ("parquet", "arrow") and available():
        return _from_arrow(http, path, params, dest, progress)
    counts_lines = params.get("format", "csv") == "csv"
    with http.stream(path, params=params) as response:
        total = declared_rows(response)
        target = dest / _filename(response) if dest.is_dir() else dest
        with _part(target) as out:
            received = lines = 0
            for chunk in _chunks(response, path):
                out.write(chunk)
                received += len(chunk)
                if progress is not None:
                    # CSV: a line a row after the header (a cell holding a line break would
                    # count twice: the share is capped); Parquet's rows are not visible in
                    # its bytes.
                    lines += chunk.count(b"\n")
                    rows = max(0, lines - 1) if counts_lines else None
                    progress(ExportProgress(received, rows, total))
        if progress is not None:
            rows = max(0, lines - 1) if counts_lines else None
            progress(ExportProgress(received, rows, total, done=True))
    return target


@contextmanager
def _part(target: Path) -> Iterator[Any]:
    """``target`` written as ``<name>.part``, renamed when whole, removed when not."""
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as out:
            yield out
        part.replace(target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _from_arrow(
    http: Http, path: str, params: Mapping[str, Any], dest: Path, progress: Progress | None
) -> Path:
    """The export read as its Arrow stream and written here, as an Arrow stream again or as
    Parquet (snappy, row groups of :data:`ROW_GROUP_ROWS`, the schema and its ``benchlink``
    description, as the server writes them), a row group in memory at a time, so that
    progress counts rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fmt = params["format"]
    with open_arrow(http, path, params, progress) as stream:
        if dest.is_dir():
            extension = "parquet" if fmt == "parquet" else "arrows"
            dest = dest / _filename_as(stream.response, extension)
        schema = stream.schema
        with _part(dest) as out:
            if fmt == "arrow":
                with pa.ipc.new_stream(out, schema) as writer:
                    for batch in stream.batches():
                        writer.write_batch(batch)
                return dest
            with pq.ParquetWriter(out, schema, compression="snappy") as w:
                pending: list[Any] = []
                rows = 0
                for batch in stream.batches():
                    pending.append(batch)
                    rows += batch.num_rows
                    if rows >= ROW_GROUP_ROWS:
                        w.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
                        pending, rows = [], 0
                if pending:
                    w.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
    return dest


def _filename(response: httpx.Response) -> str:
    found = _FILENAME.search(response.headers.get("content-disposition", ""))
    if found is None:
        raise TransportError(f"{response.url}: the answer names no file; give a file path")
    return found.group(1)


def _filename_as(response: httpx.Response, extension: str) -> str:
    """The server's file name with ``extension`` in place of its own."""
    return _filename(response).rsplit(".", 1)[0] + "." + extension
