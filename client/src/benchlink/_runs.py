"""A run's data as frames: readings (``telemetry``), chart-sized series, metric points; and
its exports written to files.

Readings and metrics come through the cloud's Arrow export, read as it arrives
(:mod:`benchlink._export`): the client holds record batches, never the answer's whole body,
and the frame carries the export's description (run, params, sensors, units). Without
pyarrow they come from the paged JSON lists instead (:mod:`benchlink._listed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from benchlink import _export, _listed, _times
from benchlink._frames import FRAMES, Columns, Frame, micros, need
from benchlink._models import Ref, sensor_ref

if TYPE_CHECKING:
    from benchlink._client import Client
    from benchlink._export import ProgressArg

PAGE = _listed.PAGE
TELEMETRY_EXPORT = "/api/v1/telemetry/export"
ExportFormat = Literal["parquet", "arrow", "csv"]


def _check(frame: Frame) -> None:
    if frame not in FRAMES:  # before anything is fetched
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, not {frame!r}")


class RunData:
    """``run.telemetry()``, ``run.metrics()``, ``run.series()``, ``run.export()`` (also
    reachable as ``run.data``)."""

    def __init__(self, client: Client, run_id: str) -> None:
        self._client, self.run_id = client, run_id

    def _query(
        self, sensor: Ref | None, session: Ref | None, since: Any, until: Any
    ) -> dict[str, Any]:
        from benchlink._models import ref

        return {
            "run_id": self.run_id,
            "sensor_id": None if sensor is None else sensor_ref(self._client, sensor),
            "capture_session_id": None if session is None else ref(session),
            "since": None if since is None else _times.wire(since),
            "until": None if until is None else _times.wire(until),
        }

    def telemetry(
        self,
        *,
        sensor: Ref | None = None,
        session: Ref | None = None,
        since: Any = None,
        until: Any = None,
        profile_version: str | None = None,
        frame: Frame = "pandas",
        progress: ProgressArg = None,
    ) -> Any:
        """The run's readings (of one sensor, session, time window ``[since, until)`` or
        profile version) in time order: a frame indexed by tz-aware UTC ``timestamp`` with
        ``sensor``, ``sensor_id``, ``capture_session_id``, ``raw_value``, ``raw_unit``,
        ``value``, ``unit``, ``profile_version`` and ``late``. ``frame``: ``"pandas"``
        (default), ``"arrow"`` (a pyarrow Table) or ``"polars"``; the last two keep
        ``timestamp`` as a column.

        The readings stream in through the Arrow export, a record batch at a time; the
        export's description (experiment, run and its params, capture sessions, sensors with
        their units and profiles) is ``df.attrs["benchlink"]`` (pandas) or the schema
        metadata ``benchlink`` (Arrow, JSON text). ``progress`` is called after each batch
        with an :class:`~benchlink.ExportProgress` (bytes, readings so far, the total the
        server declared, ``percent``); ``progress=True`` shows it on stderr. Without pyarrow
        installed the readings come from the paged JSON list instead (10,000 a request), and
        the frame has no description."""
        _check(frame)
        params = self._query(sensor, session, since, until)
        if not _export.available():
            return _listed.telemetry(
                self._client, params, profile_version, frame, _export.reporter(progress)
            )
        from benchlink import _tables

        with _export.open_arrow(
            self._client.http, TELEMETRY_EXPORT, params, _export.reporter(progress)
        ) as s:
            schema = _tables.reading_schema(s.schema)
            batches = list(_tables.readings(s.batches(), schema, profile_version))
            about = s.about
        table = _tables.concat(batches, schema)
        del batches  # the table's are the only references: pandas frees them as it goes
        return _tables.frame(table, frame, about, index="timestamp")

    def telemetry_batches(
        self,
        *,
        sensor: Ref | None = None,
        session: Ref | None = None,
        since: Any = None,
        until: Any = None,
        profile_version: str | None = None,
        frame: Frame = "pandas",
        page_size: int = PAGE,
        progress: ProgressArg = None,
    ) -> Iterator[Any]:
        """The readings as one frame per ``page_size`` readings, in time order: any number of
        readings in the memory of one page. Frames as :meth:`telemetry` makes them."""
        _check(frame)
        params = self._query(sensor, session, since, until)
        if not _export.available():
            yield from _listed.reading_batches(
                self._client, params, profile_version, frame, page_size, _export.reporter(progress)
            )
            return
        from benchlink import _tables

        with _export.open_arrow(
            self._client.http, TELEMETRY_EXPORT, params, _export.reporter(progress)
        ) as s:
            schema = _tables.reading_schema(s.schema)
            batches = _tables.readings(s.batches(), schema, profile_version)
            for table in _tables.rebatch(batches, schema, page_size):
                yield _tables.frame(table, frame, s.about, index="timestamp")

    def metrics(
        self,
        name: str | None = None,
        *,
        max_points: int | None = None,
        frame: Frame = "pandas",
        progress: ProgressArg = None,
    ) -> Any:
        """Metric points in step order (of one ``name``, or all with a ``name`` column):
        ``step``, ``value``, UTC ``timestamp``, ``unit``; pandas frames are indexed by
        ``step``. They stream in through the Arrow export, with its description (the run and
        its experiment) as for :meth:`telemetry`. ``max_points`` downsamples each series in
        the database (min and max of equal buckets, first and last point kept): those points
        come from the JSON list, as all do without pyarrow."""
        _check(frame)
        if max_points is not None or not _export.available():
            cols = _listed.metrics(self._client, self.run_id, name, max_points)
            return _metrics_index(cols.to_frame(frame), frame, name)
        from benchlink import _tables

        path = f"/api/v1/runs/{self.run_id}/metrics/export"
        params = {"name": name}
        with _export.open_arrow(self._client.http, path, params, _export.reporter(progress)) as s:
            table = _tables.metrics(s.batches(), s.schema.remove_metadata())
            about = s.about
        return _metrics_index(_tables.frame(table, frame, about), frame, name)

    def export(
        self,
        path: str | Path,
        format: ExportFormat = "parquet",
        *,
        sensor: Ref | None = None,
        session: Ref | None = None,
        since: Any = None,
        until: Any = None,
        progress: ProgressArg = None,
    ) -> Path:
        """Write the run's readings (filtered as :meth:`telemetry` is, but for the profile
        version) to ``path`` as ``parquet``, ``arrow`` (an IPC stream) or ``csv``, streamed
        to disk in constant memory; ``path`` a directory: the server's file name in it.
        ``progress`` (a function, or ``True`` for a line on stderr) is told how far it has got
        (:class:`~benchlink.ExportProgress`: readings so far of the total the server declared,
        ``percent``) as it goes, and once more when done. With pyarrow installed Parquet and
        Arrow files are written here from the export's Arrow stream, so that their readings
        are counted; a CSV's are counted by line. The path written."""
        params = {**self._query(sensor, session, since, until), "format": format}
        return _export.download(
            self._client.http, TELEMETRY_EXPORT, params, Path(path), _export.reporter(progress)
        )

    def export_metrics(
        self,
        path: str | Path,
        format: ExportFormat = "parquet",
        *,
        name: str | None = None,
        progress: ProgressArg = None,
    ) -> Path:
        """Write the run's metric points (or one metric's) to ``path``, as :meth:`export`."""
        api = f"/api/v1/runs/{self.run_id}/metrics/export"
        params = {"format": format, "name": name}
        return _export.download(
            self._client.http, api, params, Path(path), _export.reporter(progress)
        )

    def series(
        self,
        sensor: Ref,
        *,
        session: Ref | None = None,
        since: Any = None,
        until: Any = None,
        max_points: int = 2000,
        frame: Frame = "pandas",
    ) -> Any:
        """One sensor's values sized for a chart: every reading when there are at most
        ``max_points``, else min, max, mean (``value``) and count per time bucket, so peaks
        survive. Indexed by UTC ``timestamp``; ``attrs`` holds ``unit``, ``total`` and
        ``downsampled`` (pandas)."""
        params = {**self._query(sensor, session, since, until), "max_points": max_points}
        body = self._client.http.request("GET", "/api/v1/telemetry/series", params=params)
        cols = Columns(
            {"timestamp": "time", "value": "float", "min": "float", "max": "float", "count": "int"}
        )
        for p in body["points"]:
            cols.data["timestamp"].append(micros(p["timestamp"]))
            for name in ("value", "min", "max", "count"):
                cols.data[name].append(p[name])
        out = cols.to_frame(frame, index="timestamp")
        meta = {
            "unit": body["display_unit"],
            "total": body["total"],
            "downsampled": body["downsampled"],
        }
        return _with_meta(out, frame, meta)


def _metrics_index(out: Any, frame: Frame, name: str | None) -> Any:
    if frame != "pandas":
        return out
    return out.drop(columns="name").set_index("step") if name else out.set_index(["name", "step"])


def _with_meta(out: Any, frame: Frame, meta: dict[str, Any]) -> Any:
    if frame == "pandas":
        out.attrs.update(meta)
    elif frame == "arrow":
        out = out.replace_schema_metadata({k: str(v) for k, v in meta.items()})
    else:
        need("polars")  # polars frames carry no metadata: the unit is in the sensor
    return out
