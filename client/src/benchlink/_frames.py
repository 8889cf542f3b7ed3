"""Columns built page by page in compact arrays, then one frame: pandas, Arrow or polars.

A reading costs about 50 bytes here (an 8-byte time, two doubles, a flag and 4-byte codes for
its sensor, session, profile version and units) instead of a dict of a dozen Python
objects, and a page's JSON is dropped as soon as it is copied in: the memory a frame of N
readings needs is about the frame itself.
"""

from __future__ import annotations

import importlib
from array import array
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

Frame = Literal["pandas", "arrow", "polars"]
FRAMES = ("pandas", "arrow", "polars")
_EXTRA = {"pandas": "pandas", "pyarrow": "arrow", "polars": "polars"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def need(module: str) -> Any:
    """Import an optional dependency, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRA.get(module, module)
        raise ImportError(f"this needs {module}: pip install 'benchlink-client[{extra}]'") from None


def micros(text: str) -> int:
    """Microseconds since 1970 of an RFC 3339 time (exact: no float on the way)."""
    delta = datetime.fromisoformat(text) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Codes:
    """Small integer codes for repeated values (sensor ids, sessions, profile versions)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}

    def code(self, value: Any) -> int:
        found = self._index.get(value)
        if found is None:
            found = self._index[value] = len(self.values)
            self.values.append(value)
        return found


class Columns:
    """Named columns of one kind each: ``time`` (µs since 1970, UTC), ``float``, ``int``,
    ``bool`` and ``code`` (an index into ``labels[name]``)."""

    def __init__(self, kinds: dict[str, str]) -> None:
        typecode = {"time": "q", "float": "d", "int": "q", "bool": "b", "code": "i"}
        self.kinds = kinds
        self.data: dict[str, array[Any]] = {n: array(typecode[k]) for n, k in kinds.items()}
        self.labels: dict[str, Sequence[Any]] = {}

    def __len__(self) -> int:
        first = next(iter(self.data.values()))
        return len(first)

    def to_frame(self, frame: Frame, index: str | None = None) -> Any:
        if frame == "arrow":
            return self.to_arrow()
        if frame == "polars":
            return need("polars").from_arrow(self.to_arrow())
        if frame == "pandas":
            return self.to_pandas(index)
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, not {frame!r}")

    def to_pandas(self, index: str | None) -> Any:
        pd = need("pandas")
        np = need("numpy")
        cols: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            raw = self.data[name]
            dtype = {"time": "int64", "float": "float64", "int": "int64", "bool": "int8"}
            if kind == "code":
                codes = np.frombuffer(raw, dtype="int32") if len(raw) else np.zeros(0, "int32")
                cats = pd.Index(list(self.labels.get(name, [])), dtype="object")
                cols[name] = pd.Categorical.from_codes(codes, categories=cats)
                continue
            values = np.frombuffer(raw, dtype=dtype[kind]) if len(raw) else np.zeros(0, dtype[kind])
            if kind == "time":
                cols[name] = pd.to_datetime(values, unit="us", utc=True)
            elif kind == "bool":
                cols[name] = values.astype(bool)
            else:
                cols[name] = values
        df = pd.DataFrame(cols)
        return df.set_index(index) if index else df

    def to_arrow(self) -> Any:
        pa = need("pyarrow")
        arrays, names = [], []
        for name, kind in self.kinds.items():
            raw, n = self.data[name], len(self.data[name])
            buf = pa.py_buffer(raw.tobytes())
            if kind == "code":
                idx = pa.Array.from_buffers(pa.int32(), n, [None, buf])
                cats = pa.array([str(v) for v in self.labels.get(name, [])], pa.string())
                arrays.append(pa.DictionaryArray.from_arrays(idx, cats))
            else:
                typ = {
                    "time": pa.timestamp("us", tz="UTC"),
                    "float": pa.float64(),
                    "int": pa.int64(),
                    "bool": pa.int8(),
                }[kind]
                arr = pa.Array.from_buffers(typ, n, [None, buf])
                arrays.append(arr.cast(pa.bool_()) if kind == "bool" else arr)
            names.append(name)
        return pa.Table.from_arrays(arrays, names=names)
