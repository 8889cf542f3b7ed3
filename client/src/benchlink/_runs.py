"""A run's data as frames: readings (``telemetry``), chart-sized series, metric points.

Readings come from the telemetry list, 10,000 a page, each page copied into compact columns
and dropped (see :mod:`benchlink._frames`); ``telemetry_batches`` yields a frame per page for
runs larger than memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from benchlink import _times
from benchlink._frames import Codes, Columns, Frame, micros, need
from benchlink._models import Ref

if TYPE_CHECKING:
    from benchlink._client import Client

PAGE = 10_000
READING_COLUMNS = {
    "timestamp": "time",
    "sensor": "code",
    "sensor_id": "code",
    "capture_session_id": "code",
    "raw_value": "float",
    "raw_unit": "code",
    "value": "float",
    "unit": "code",
    "profile_version": "code",
    "late": "bool",
}


class _Units:
    """Each sensor's name and each of its profile versions' units, fetched once per sensor."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._sensors: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {}

    def of(self, sensor_id: str, version: str) -> tuple[str, str, str]:
        """(sensor name, raw unit, unit) of a reading converted by ``version``."""
        known = self._sensors.get(sensor_id)
        if known is None or version not in known[1]:
            known = self._sensors[sensor_id] = self._fetch(sensor_id)
        raw_unit, unit = known[1].get(version, ("", ""))
        return known[0], raw_unit, unit

    def _fetch(self, sensor_id: str) -> tuple[str, dict[str, tuple[str, str]]]:
        sensor = self._client.sensors.get(sensor_id)
        versions = {p.version: (p.input_unit, p.display_unit) for p in sensor.profiles()}
        return sensor.name, versions


class _ReadingColumns(Columns):
    def __init__(self, units: _Units) -> None:
        super().__init__(READING_COLUMNS)
        self._units = units
        self._codes = {n: Codes() for n, k in READING_COLUMNS.items() if k == "code"}
        self.labels = {n: c.values for n, c in self._codes.items()}

    def add(self, item: dict[str, Any], profile_version: str | None) -> None:
        version = item["profile_version"]
        if profile_version is not None and version != profile_version:
            return
        sensor_id = item["sensor_id"]
        name, raw_unit, unit = self._units.of(sensor_id, version)
        d, c = self.data, self._codes
        d["timestamp"].append(micros(item["timestamp"]))
        d["raw_value"].append(item["raw_value"])
        d["value"].append(item["value"])
        d["late"].append(1 if item["late"] else 0)
        for col, value in (
            ("sensor", name),
            ("sensor_id", sensor_id),
            ("capture_session_id", item["capture_session_id"]),
            ("raw_unit", raw_unit),
            ("unit", unit),
            ("profile_version", version),
        ):
            d[col].append(c[col].code(value))


class RunData:
    """``run.telemetry()``, ``run.metrics()``, ``run.series()`` (also reachable as
    ``run.data``)."""

    def __init__(self, client: Client, run_id: str) -> None:
        self._client, self.run_id = client, run_id

    def _query(
        self, sensor: Ref | None, session: Ref | None, since: Any, until: Any
    ) -> dict[str, Any]:
        from benchlink._models import ref

        return {
            "run_id": self.run_id,
            "sensor_id": None if sensor is None else self._client._sensor_id(sensor),
            "capture_session_id": None if session is None else ref(session),
            "since": None if since is None else _times.wire(since),
            "until": None if until is None else _times.wire(until),
        }

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
    ) -> Iterator[Any]:
        """The readings as one frame per page, in time order: any number of readings in the
        memory of one page."""
        units = _Units(self._client)
        params = self._query(sensor, session, since, until)
        for items in self._pages(params, page_size):
            cols = _ReadingColumns(units)
            for item in items:
                cols.add(item, profile_version)
            yield cols.to_frame(frame, index="timestamp")

    def telemetry(
        self,
        *,
        sensor: Ref | None = None,
        session: Ref | None = None,
        since: Any = None,
        until: Any = None,
        profile_version: str | None = None,
        frame: Frame = "pandas",
    ) -> Any:
        """The run's readings (of one sensor, session, time window ``[since, until)`` or
        profile version) in time order: a frame indexed by tz-aware UTC ``timestamp`` with
        ``sensor``, ``sensor_id``, ``capture_session_id``, ``raw_value``, ``raw_unit``,
        ``value``, ``unit``, ``profile_version`` and ``late``. ``frame``: ``"pandas"``
        (default), ``"arrow"`` (a pyarrow Table) or ``"polars"``; the last two keep
        ``timestamp`` as a column."""
        cols = _ReadingColumns(_Units(self._client))
        for items in self._pages(self._query(sensor, session, since, until), PAGE):
            for item in items:
                cols.add(item, profile_version)
        return cols.to_frame(frame, index="timestamp")

    def _pages(self, params: dict[str, Any], size: int) -> Iterator[list[dict[str, Any]]]:
        from benchlink._pages import Pages

        return Pages(self._client.http, "/api/v1/telemetry", dict, params, limit=size).pages()

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

    def metrics(
        self, name: str | None = None, *, max_points: int | None = None, frame: Frame = "pandas"
    ) -> Any:
        """Metric points in step order (of one ``name``, or all with a ``name`` column):
        ``step``, ``value``, UTC ``timestamp``, ``unit``; pandas frames are indexed by
        ``step``. ``max_points`` downsamples each series in the database (min and max of
        equal buckets, first and last point kept)."""
        cols = Columns(
            {"name": "code", "step": "int", "value": "float", "timestamp": "time", "unit": "code"}
        )
        names, units = Codes(), Codes()
        cols.labels = {"name": names.values, "unit": units.values}
        path = f"/api/v1/runs/{self.run_id}/metrics"
        cursor: str | None = None
        while True:
            params = {"name": name, "limit": 10_000, "cursor": cursor, "max_points": max_points}
            body = self._client.http.request("GET", path, params=params)
            for p in body["points"]:
                cols.data["name"].append(names.code(p["name"]))
                cols.data["step"].append(p["step"])
                cols.data["value"].append(p["value"])
                cols.data["timestamp"].append(micros(p["timestamp"]))
                cols.data["unit"].append(units.code(p.get("unit") or ""))
            cursor = body.get("next_cursor")
            if not cursor:
                break
        out = cols.to_frame(frame)
        if frame == "pandas":
            out = (
                out.drop(columns="name").set_index("step")
                if name
                else out.set_index(["name", "step"])
            )
        return out


def _with_meta(out: Any, frame: Frame, meta: dict[str, Any]) -> Any:
    if frame == "pandas":
        out.attrs.update(meta)
    elif frame == "arrow":
        out = out.replace_schema_metadata({k: str(v) for k, v in meta.items()})
    else:
        need("polars")  # polars frames carry no metadata: the unit is in the sensor
    return out
