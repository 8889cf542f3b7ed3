"""Reading the cloud's exports as they arrive: Arrow IPC streams into record batches, and any
format into a file.

An export is a streamed answer of unknown length. Its bytes are handed to pyarrow's stream
reader as the reader asks for them (:class:`Body`), so the client holds the record batches it
has decoded and the network chunk in hand, never the whole body; a file is written a chunk at
a time. The server's description of the export (the run, its params, sensors, units) is the
schema's ``benchlink`` metadata, read before the first batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchlink._exceptions import TransportError
from benchlink._http import Http

#: ``progress(bytes_received, readings_so_far)``; readings are ``None`` where the client does
#: not decode what it receives (a download to a file).
Progress = Callable[[int, int | None], None]
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

        self._body = Body(response, path)
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
                self._progress(self._body.received, rows)
            yield batch
        if self._progress is not None:  # the end-of-stream marker, after the last batch
            self._progress(self._body.received, rows)


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
    file name), a network chunk at a time: constant memory whatever its size. The bytes go to
    ``<name>.part`` first and take their name only when the last one has arrived, so a cut
    download never looks like a whole file. The path written."""
    with http.stream(path, params=params) as response:
        target = dest / _filename(response) if dest.is_dir() else dest
        part = target.with_name(target.name + ".part")
        try:
            with part.open("wb") as out:
                received = 0
                for chunk in _chunks(response, path):
                    out.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, None)
            part.replace(target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    return target


def _filename(response: httpx.Response) -> str:
    found = _FILENAME.search(response.headers.get("content-disposition", ""))
    if found is None:
        raise TransportError(f"{response.url}: the answer names no file; give a file path")
    return found.group(1)
