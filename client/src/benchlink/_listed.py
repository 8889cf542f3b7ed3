"""A run's readings and metrics from the paged JSON lists, where pyarrow is not installed to
read the exports: 10,000 readings a request, each page copied into compact columns (see
:mod:`benchlink._frames`) and dropped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from benchlink._export import ExportProgress
from benchlink._frames import Codes, Columns, Frame, micros

if TYPE_CHECKING:
    from benchlink._client import Client
    from benchlink._export import Progress

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


def _pages(
    client: Client, params: dict[str, Any], size: int, progress: Progress | None
) -> Iterator[list[dict[str, Any]]]:
    """The list's pages, following its cursors; ``progress`` after each."""
    cursor: str | None = None
    received = readings = 0
    while True:
        body, size_bytes = client.http.get_sized(
            "/api/v1/telemetry", params={**params, "limit": size, "cursor": cursor}
        )
        received += size_bytes
        readings += len(body["items"])
        cursor = body.get("next_cursor")
        if progress is not None:
            progress(ExportProgress(received, readings, None, done=not cursor))
        yield body["items"]
        if not cursor:
            return


def reading_batches(
    client: Client,
    params: dict[str, Any],
    profile_version: str | None,
    frame: Frame,
    page_size: int = PAGE,
    progress: Progress | None = None,
) -> Iterator[Any]:
    """The readings as one frame per page of ``page_size``."""
    units = _Units(client)
    for items in _pages(client, params, page_size, progress):
        cols = _ReadingColumns(units)
        for item in items:
            cols.add(item, profile_version)
        yield cols.to_frame(frame, index="timestamp")


def telemetry(
    client: Client,
    params: dict[str, Any],
    profile_version: str | None,
    frame: Frame,
    progress: Progress | None = None,
) -> Any:
    """All the readings as one frame (see :meth:`benchlink.RunData.telemetry`)."""
    cols = _ReadingColumns(_Units(client))
    for items in _pages(client, params, PAGE, progress):
        for item in items:
            cols.add(item, profile_version)
    return cols.to_frame(frame, index="timestamp")


def metrics(client: Client, run_id: str, name: str | None, max_points: int | None) -> Any:
    """The run's metric points as columns (see :meth:`benchlink.RunData.metrics`)."""
    cols = Columns(
        {"name": "code", "step": "int", "value": "float", "timestamp": "time", "unit": "code"}
    )
    names, units = Codes(), Codes()
    cols.labels = {"name": names.values, "unit": units.values}
    path = f"/api/v1/runs/{run_id}/metrics"
    cursor: str | None = None
    while True:
        params = {"name": name, "limit": 10_000, "cursor": cursor, "max_points": max_points}
        body = client.http.request("GET", path, params=params)
        for p in body["points"]:
            cols.data["name"].append(names.code(p["name"]))
            cols.data["step"].append(p["step"])
            cols.data["value"].append(p["value"])
            cols.data["timestamp"].append(micros(p["timestamp"]))
            cols.data["unit"].append(units.code(p.get("unit") or ""))
        cursor = body.get("next_cursor")
        if not cursor:
            return cols
