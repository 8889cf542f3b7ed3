"""The client's entry points per resource: ``client.experiments``, ``client.runs``,
``client.sensors``, ``client.projects``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from benchlink._exceptions import NotFound, TokenLost
from benchlink._models import (
    BatchStatus,
    Deleted,
    Experiment,
    NewSensor,
    Project,
    Ref,
    Run,
    RunStatus,
    RunStatusResult,
    Sensor,
    delete,
    ref,
)
from benchlink._pages import Pages

if TYPE_CHECKING:
    from benchlink._client import Client


class Projects:
    """Projects of the client's user (creating one needs no project or role)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, *, description: str | None = None) -> Project:
        body = {"name": name, **({"description": description} if description else {})}
        return Project.from_json(self._client.http.request("POST", "/api/v1/projects", json=body))

    def list(self, *, name: str | None = None) -> Pages[Project]:
        return Pages(self._client.http, "/api/v1/projects", Project.from_json, {"name": name})


class Experiments:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, name: str, *, description: str | None = None, tags: Iterable[str] = ()
    ) -> Experiment:
        body: dict[str, Any] = {"name": name, "tags": list(tags)}
        if description is not None:
            body["description"] = description
        d = self._client.http.request("POST", "/api/v1/experiments", json=body)
        return Experiment.from_json(self._client, d)

    def get(self, experiment_id: Ref) -> Experiment:
        d = self._client.http.request("GET", f"/api/v1/experiments/{ref(experiment_id)}")
        return Experiment.from_json(self._client, d)

    def delete(self, experiment_id: Ref) -> Deleted:
        """Delete an experiment with its runs and their data (see :meth:`Experiment.delete`)."""
        return delete(self._client, "experiment", ref(experiment_id))

    def restore(self, experiment_id: Ref) -> Experiment:
        """Bring a deleted experiment back, with the runs deleted with it."""
        path = f"/api/v1/experiments/{ref(experiment_id)}/restore"
        return Experiment.from_json(self._client, self._client.http.request("POST", path))

    def list(
        self,
        *,
        tags: Iterable[str] = (),
        status: Literal["active", "archived"] | None = None,
        q: str | None = None,
        include_archived: bool = False,
    ) -> Pages[Experiment]:
        """Newest first; every tag must match; archived ones only when asked for."""
        params = {"tag": list(tags), "status": status, "q": q, "include_archived": include_archived}
        return Pages(
            self._client.http,
            "/api/v1/experiments",
            lambda d: Experiment.from_json(self._client, d),
            params,
        )


class Runs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, run_id: Ref) -> Run:
        return Run.from_json(
            self._client, self._client.http.request("GET", f"/api/v1/runs/{ref(run_id)}")
        )

    def delete(self, run_id: Ref) -> Deleted:
        """Delete a run with its data (see :meth:`Run.delete`)."""
        return delete(self._client, "run", ref(run_id))

    def restore(self, run_id: Ref) -> Run:
        """Bring a deleted run back with its data."""
        d = self._client.http.request("POST", f"/api/v1/runs/{ref(run_id)}/restore")
        return Run.from_json(self._client, d)

    def batch_status(self, runs: Iterable[Ref], status: RunStatus) -> BatchStatus:
        """Move many runs to one status; each run succeeds or fails on its own (a run already
        in a final state is refused with the reason, the others change)."""
        body = {"run_ids": [ref(r) for r in runs], "status": status}
        d = self._client.http.request("POST", "/api/v1/runs:batch-status", json=body)
        results = [
            RunStatusResult(r["run_id"], r["ok"], r.get("status"), r.get("error"))
            for r in d["results"]
        ]
        return BatchStatus(results, d["succeeded"], d["failed"])


class Sensors:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        name: str,
        *,
        type: str,
        input_unit: str,
        display_unit: str,
        profile: dict[str, Any],
    ) -> NewSensor:
        """Register a sensor with its conversion profile (``{"kind": "linear", "payload":
        {"a": 1.23, "b": 0.2}}``; ``version`` defaults to ``v1``). The answer's ``token`` is
        the only copy there will ever be."""
        body = {
            "name": name,
            "type": type,
            "input_unit": input_unit,
            "display_unit": display_unit,
            "conversion_profile": {"version": "v1", **profile},
        }
        d = self._client.http.request("POST", "/api/v1/sensors", json=body)
        if d.get("token") is None:
            # The server answered from its record of this key: it never keeps the token.
            raise TokenLost(d["sensor"]["id"])
        return NewSensor(Sensor.from_json(self._client, d["sensor"]), d["token"])

    def rotate_token(self, sensor: Ref) -> NewSensor:
        """A new token for the sensor (owner role); the old one stops working at once."""
        d = self._client.http.request("POST", f"/api/v1/sensors/{ref(sensor)}/rotate-token")
        if d.get("token") is None:
            raise TokenLost(d["sensor"]["id"])
        return NewSensor(Sensor.from_json(self._client, d["sensor"]), d["token"])

    def get(self, sensor: Ref) -> Sensor:
        """A sensor by its id, or by its name."""
        try:
            ident = ref(sensor)
        except ValueError:
            return self.by_name(str(sensor))
        d = self._client.http.request("GET", f"/api/v1/sensors/{ident}")
        return Sensor.from_json(self._client, d)

    def by_name(self, name: str) -> Sensor:
        found = self.list(name=name).first()
        if found is None:
            raise NotFound(404, "Not Found", f"no sensor named {name!r} in this project")
        return found

    def list(
        self,
        *,
        name: str | None = None,
        type: str | None = None,
        token_status: Literal["active", "revoked"] | None = None,
    ) -> Pages[Sensor]:
        params = {"name": name, "type": type, "token_status": token_status}
        return Pages(
            self._client.http,
            "/api/v1/sensors",
            lambda d: Sensor.from_json(self._client, d),
            params,
        )
