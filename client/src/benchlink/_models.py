"""What the server keeps, as objects: experiments, runs, capture sessions, sensors.

Each object knows its client, so ``exp.runs.create()``, ``run.sessions``, ``run.set_status()``
and ``session.stop()`` read as the lab does. Fields are the server's, times tz-aware UTC.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from benchlink import _times
from benchlink._pages import Pages

if TYPE_CHECKING:
    from benchlink._client import Client
    from benchlink._runs import ExportFormat, RunData

RunStatus = Literal["draft", "running", "succeeded", "failed", "cancelled"]
StopStatus = Literal["succeeded", "failed", "cancelled"]

#: Anything that names an object: the object itself, its id, or the id as text.
Ref = Any


def ref(value: Ref) -> str:
    """The id of an object, a UUID or id text."""
    ident = getattr(value, "id", value)
    return str(uuid.UUID(str(ident)))


def sensor_ref(client: Client, sensor: Ref) -> str:
    """A sensor's id; given by name (or id text), looked up (a name not found: 404)."""
    return client.sensors.get(sensor).id if isinstance(sensor, str) else ref(sensor)


@dataclass
class Project:
    id: str
    name: str
    description: str | None
    owner_user_id: str
    created_at: datetime | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Project:
        return cls(
            d["id"],
            d["name"],
            d.get("description"),
            d["owner_user_id"],
            _times.parse(d["created_at"]),
        )


@dataclass
class Deleted:
    """A run or an experiment deleted with its data: restorable (``restore()``) until
    ``purge_after``, then purged by the server."""

    kind: Literal["run", "experiment"]
    id: str
    name: str | None
    experiment_id: str
    deleted_at: datetime | None
    purge_after: datetime | None
    _client: Client = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, client: Client, d: dict[str, Any]) -> Deleted:
        return cls(
            d["kind"],
            d["id"],
            d.get("name"),
            d["experiment_id"],
            _times.parse(d.get("deleted_at")),
            _times.parse(d.get("purge_after")),
            client,
        )

    def restore(self) -> Run | Experiment:
        """Bring it back with its data (an experiment with the runs deleted with it)."""
        if self.kind == "run":
            return self._client.runs.restore(self.id)
        return self._client.experiments.restore(self.id)


def delete(client: Client, kind: Literal["run", "experiment"], ident: str) -> Deleted:
    """``DELETE`` of a run or an experiment (owner role), the same whether it is retried or
    not: the server forgets nothing on a DELETE, and a retry after an answer that was lost
    (or a second call) finds it deleted, a 404; the record of the deletion is then read from
    the deleted list instead, so a call that deleted it never reports it missing."""
    from benchlink._exceptions import NotFound

    path = f"/api/v1/{kind}s/{ident}"
    try:
        return Deleted.from_json(client, client.http.request("DELETE", path))
    except NotFound:
        for d in client.deleted():
            if d.kind == kind and d.id == ident:
                return d
        raise


@dataclass
class Experiment:
    id: str
    project_id: str
    name: str
    description: str | None
    tags: list[str]
    status: str
    archived_at: datetime | None
    created_at: datetime | None
    _client: Client = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, client: Client, d: dict[str, Any]) -> Experiment:
        return cls(
            d["id"],
            d["project_id"],
            d["name"],
            d.get("description"),
            list(d.get("tags") or []),
            d["status"],
            _times.parse(d.get("archived_at")),
            _times.parse(d.get("created_at")),
            client,
        )

    @property
    def runs(self) -> ExperimentRuns:
        """The experiment's runs: iterate them (newest first) or ``create()`` one."""
        return ExperimentRuns(self._client, self.id)

    def archive(self) -> Experiment:
        return self._replace(self._client.http.request("POST", f"{self._path}/archive"))

    def unarchive(self) -> Experiment:
        return self._replace(self._client.http.request("POST", f"{self._path}/unarchive"))

    def delete(self) -> Deleted:
        """Delete the experiment with all its runs and their data (owner role): gone from
        lists and reads at once, restorable until the answer's ``purge_after``."""
        return delete(self._client, "experiment", self.id)

    def restore(self) -> Experiment:
        """Bring the deleted experiment back, with the runs deleted with it."""
        return self._replace(self._client.http.request("POST", f"{self._path}/restore"))

    def update(
        self, *, name: str | None = None, description: str | None = None, tags: Any = None
    ) -> Experiment:
        body = _given(name=name, description=description, tags=None if tags is None else list(tags))
        return self._replace(self._client.http.request("PATCH", self._path, json=body))

    @property
    def _path(self) -> str:
        return f"/api/v1/experiments/{self.id}"

    def _replace(self, d: dict[str, Any]) -> Experiment:
        self.__dict__.update(vars(Experiment.from_json(self._client, d)))
        return self


class ExperimentRuns:
    def __init__(self, client: Client, experiment_id: str) -> None:
        self._client, self._experiment_id = client, experiment_id

    def create(
        self,
        name: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        tags: Any = (),
        status: Literal["draft", "running"] = "running",
    ) -> Run:
        body: dict[str, Any] = {"params": params or {}, "tags": list(tags), "status": status}
        if name is not None:
            body["name"] = name
        path = f"/api/v1/experiments/{self._experiment_id}/runs"
        return Run.from_json(self._client, self._client.http.request("POST", path, json=body))

    def list(self, *, status: RunStatus | None = None) -> Pages[Run]:
        path = f"/api/v1/experiments/{self._experiment_id}/runs"
        return Pages(
            self._client.http,
            path,
            lambda d: Run.from_json(self._client, d),
            {"status": status},
        )

    def __iter__(self) -> Any:
        return iter(self.list())


@dataclass
class Run:
    id: str
    experiment_id: str
    project_id: str
    name: str | None
    params: dict[str, Any]
    tags: list[str]
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    created_at: datetime | None
    _client: Client = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, client: Client, d: dict[str, Any]) -> Run:
        return cls(
            d["id"],
            d["experiment_id"],
            d["project_id"],
            d.get("name"),
            dict(d.get("params") or {}),
            list(d.get("tags") or []),
            d["status"],
            _times.parse(d.get("started_at")),
            _times.parse(d.get("ended_at")),
            _times.parse(d.get("created_at")),
            client,
        )

    @property
    def sessions(self) -> RunSessions:
        """The run's capture sessions: iterate them (by ordinal) or ``create()`` one."""
        return RunSessions(self._client, self.id)

    def set_status(self, status: RunStatus) -> Run:
        return self.update(status=status)

    def update(
        self,
        *,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        tags: Any = None,
        status: RunStatus | None = None,
    ) -> Run:
        body = _given(
            name=name, params=params, tags=None if tags is None else list(tags), status=status
        )
        d = self._client.http.request("PATCH", f"/api/v1/runs/{self.id}", json=body)
        self.__dict__.update(vars(Run.from_json(self._client, d)))
        return self

    def delete(self) -> Deleted:
        """Delete the run with its data (owner role): gone from lists and reads at once,
        restorable until the answer's ``purge_after``. A run still capturing is refused
        (:class:`~benchlink.Conflict`): stop its session first."""
        return delete(self._client, "run", self.id)

    def restore(self) -> Run:
        """Bring the deleted run back with its data (one deleted with its experiment comes
        back with the experiment: :class:`~benchlink.Conflict` here)."""
        d = self._client.http.request("POST", f"/api/v1/runs/{self.id}/restore")
        self.__dict__.update(vars(Run.from_json(self._client, d)))
        return self

    def refresh(self) -> Run:
        d = self._client.http.request("GET", f"/api/v1/runs/{self.id}")
        self.__dict__.update(vars(Run.from_json(self._client, d)))
        return self

    def events(self, *, kind: str | None = None) -> Pages[dict[str, Any]]:
        """The run's journal, newest first, as the server's JSON objects."""
        return Pages(self._client.http, f"/api/v1/runs/{self.id}/events", dict, {"kind": kind})

    @property
    def data(self) -> RunData:
        from benchlink._runs import RunData

        return RunData(self._client, self.id)

    # The data of a run, as frames (benchlink._runs holds how).
    def telemetry(self, **kw: Any) -> Any:
        """Readings as a DataFrame: see :meth:`benchlink.RunData.telemetry`."""
        return self.data.telemetry(**kw)

    def metrics(self, name: str | None = None, **kw: Any) -> Any:
        """Metric points as a DataFrame: see :meth:`benchlink.RunData.metrics`."""
        return self.data.metrics(name, **kw)

    def series(self, sensor: Ref, **kw: Any) -> Any:
        """A chart-sized frame of one sensor: see :meth:`benchlink.RunData.series`."""
        return self.data.series(sensor, **kw)

    def export(self, path: str | Path, format: ExportFormat = "parquet", **kw: Any) -> Path:
        """The readings streamed to a file: see :meth:`benchlink.RunData.export`."""
        return self.data.export(path, format, **kw)

    def export_metrics(self, path: str | Path, format: ExportFormat = "parquet", **kw: Any) -> Path:
        """Metric points streamed to a file: see :meth:`benchlink.RunData.export_metrics`."""
        return self.data.export_metrics(path, format, **kw)

    def log_metrics(
        self, values: dict[str, float], step: int, *, unit: str | None = None, timestamp: Any = None
    ) -> None:
        """Queue metric points (sent in the background, in batches; flushed on exit)."""
        self._client.metrics_logger.log(self.id, values, step, unit=unit, timestamp=timestamp)

    def flush(self) -> None:
        """Send the logged points now; what the server cannot take stays queued. Raises the
        first refusal (:class:`APIError`) of a batch since the last flush."""
        self._client.metrics_logger.flush()


class RunSessions:
    def __init__(self, client: Client, run_id: str) -> None:
        self._client, self._run_id = client, run_id

    @property
    def _path(self) -> str:
        return f"/api/v1/runs/{self._run_id}/capture-sessions"

    def create(
        self,
        ordinal_number: int | None = None,
        *,
        status: Literal["draft", "running"] = "running",
        notes: str | None = None,
        started_at: Any = None,
    ) -> CaptureSession:
        """A new capture session (running unless ``draft``); its ordinal is the next one
        unless given. ``started_at``: when capture began, for data recorded before now."""
        if ordinal_number is None:
            ordinal_number = 1 + max((s.ordinal_number for s in self), default=0)
        body: dict[str, Any] = {"ordinal_number": ordinal_number, "status": status}
        body |= _given(
            notes=notes, started_at=None if started_at is None else _times.wire(started_at)
        )
        d = self._client.http.request("POST", self._path, json=body)
        return CaptureSession.from_json(self._client, d)

    def get(self, session_id: Ref) -> CaptureSession:
        d = self._client.http.request("GET", f"{self._path}/{ref(session_id)}")
        return CaptureSession.from_json(self._client, d)

    def list(self, *, status: str | None = None) -> Pages[CaptureSession]:
        return Pages(
            self._client.http,
            self._path,
            lambda d: CaptureSession.from_json(self._client, d),
            {"status": status},
        )

    def __iter__(self) -> Any:
        return iter(self.list())


@dataclass
class CaptureSession:
    id: str
    run_id: str
    project_id: str
    ordinal_number: int
    status: str
    notes: str | None
    started_at: datetime | None
    stopped_at: datetime | None
    _client: Client = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, client: Client, d: dict[str, Any]) -> CaptureSession:
        return cls(
            d["id"],
            d["run_id"],
            d["project_id"],
            d["ordinal_number"],
            d["status"],
            d.get("notes"),
            _times.parse(d.get("started_at")),
            _times.parse(d.get("stopped_at")),
            client,
        )

    @property
    def _path(self) -> str:
        return f"/api/v1/runs/{self.run_id}/capture-sessions/{self.id}"

    def start(self) -> CaptureSession:
        """Start a draft session."""
        return self._replace(self._client.http.request("POST", f"{self._path}/start"))

    def stop(self, status: StopStatus = "succeeded", *, stopped_at: Any = None) -> CaptureSession:
        body: dict[str, Any] = {"status": status}
        if stopped_at is not None:
            body["stopped_at"] = _times.wire(stopped_at)
        return self._replace(self._client.http.request("POST", f"{self._path}/stop", json=body))

    def telemetry(self, **kw: Any) -> Any:
        """The session's readings as a frame: :meth:`benchlink.RunData.telemetry` of its run
        with ``session=`` this one."""
        from benchlink._runs import RunData

        return RunData(self._client, self.run_id).telemetry(session=self.id, **kw)

    def _replace(self, d: dict[str, Any]) -> CaptureSession:
        self.__dict__.update(vars(CaptureSession.from_json(self._client, d)))
        return self


@dataclass
class Profile:
    """A conversion profile version, with the units it converts from and to."""

    version: str
    kind: str
    payload: dict[str, Any]
    input_unit: str
    display_unit: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Profile:
        return cls(d["version"], d["kind"], d["payload"], d["input_unit"], d["display_unit"])


@dataclass
class Sensor:
    id: str
    project_id: str
    name: str
    type: str
    input_unit: str
    display_unit: str
    token_preview: str | None
    token_status: str
    conversion_profile: Profile
    _client: Client = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, client: Client, d: dict[str, Any]) -> Sensor:
        return cls(
            d["id"],
            d["project_id"],
            d["name"],
            d["type"],
            d["input_unit"],
            d["display_unit"],
            d.get("token_preview"),
            d["token_status"],
            Profile.from_json(d["conversion_profile"]),
            client,
        )

    def profiles(self) -> Pages[Profile]:
        """Every profile version, in the order they were set (the current one last)."""
        path = f"/api/v1/sensors/{self.id}/conversion-profiles"
        return Pages(self._client.http, path, Profile.from_json, limit=500)


@dataclass(frozen=True)
class NewSensor:
    """A registered sensor and its token. The token is shown this once: the server keeps only
    its hash, so store it now (e.g. in the edge's config)."""

    sensor: Sensor
    token: str = field(repr=False)


@dataclass(frozen=True)
class RunStatusResult:
    run_id: str
    ok: bool
    status: str | None
    error: dict[str, Any] | None


@dataclass(frozen=True)
class BatchStatus:
    results: list[RunStatusResult]
    succeeded: int
    failed: int


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
