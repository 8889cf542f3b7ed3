"""Schemathesis over every operation of the OpenAPI document, against a real server, with
every check on (response schemas and status codes as documented, no 5xx, auth not ignored,
bad input refused, ...). Requests carry an owner's identity headers and a sensor token; path
ids are those of a real project for half the cases (else every id is an unknown 404).

A few hundred cases in ``make test``, thousands in ``make reliability``.
"""

from __future__ import annotations

import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import ignored_auth, positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from cloud.app import create_app
from cloud.settings import Settings
from tests.reliability.access_world import World, build_world, close_clients
from tests.reliability.conftest import Figures, scale
from tests.support.cloud import CloudServer

EXAMPLES = int(scale(3, 40))
#: path parameters filled from the real project (name in the document -> key of its ids)
REAL_IDS = {
    "project_id": "project_id",
    "sensor_id": "sensor_id",
    "experiment_id": "experiment_id",
    "run_id": "run_id",
    "session_id": "session_id",
}
TEST = "schemathesis, every operation, all checks"


class Api:
    def __init__(self, server: CloudServer, world: World) -> None:
        self.server, self.world = server, world
        self.statuses: Counter[str] = Counter()
        self.operations: set[str] = set()
        self.requests = 0


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        server = CloudServer(f"sqlite:///{Path(tmp) / 'cloud.db'}", log_path=Path(tmp) / "log")
        with server:
            try:
                yield Api(server, build_world(server.url))
            finally:
                close_clients()


@pytest.fixture(scope="module")
def served(api: Api) -> Any:
    """The document the server serves (the one clients read), as schemathesis loads it, with
    the credentials of the document's security schemes (which negative cases leave out)."""
    ids = api.world.ids
    keys = {
        "UserId": api.world.owner,
        "ProjectId": ids["project_id"],
        "ProjectRole": "owner",
    }
    auth: dict[str, Any] = {name: {"api_key": value} for name, value in keys.items()}
    auth["SensorToken"] = {"bearer": ids["token"]}
    config = SchemathesisConfig.from_dict({"auth": {"openapi": auth}})
    return schemathesis.openapi.from_url(api.server.url + "/openapi.json", config=config)


def _operations() -> list[Any]:
    """(operation, mode) for every operation of the document, known at collection (the app's
    own document, no server needed). Negative cases only where there is something to make
    invalid. The SSE stream is left out: it never ends, and a case's call reads the whole body
    (the access matrix subscribes to it, and its parameters are checked in tests/cloud)."""
    app = create_app(Settings(database_url="sqlite:///:memory:"))
    doc = schemathesis.openapi.from_dict(app.openapi())
    out = []
    for result in doc.get_all_operations():
        op = result.ok()
        if op.path.endswith("/stream/sse"):
            continue
        out.append(pytest.param(op.label, GenerationMode.POSITIVE, id=f"{op.label} valid"))
        raw = op.definition.raw
        if raw.get("parameters") or raw.get("requestBody") or raw.get("security"):
            out.append(pytest.param(op.label, GenerationMode.NEGATIVE, id=f"{op.label} invalid"))
    return out


@pytest.mark.parametrize(("label", "mode"), _operations())
def test_every_operation_conforms_to_the_document(
    label: str, mode: GenerationMode, api: Api, served: Any, figures: Figures
) -> None:
    operation = served.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )
    def check(case: schemathesis.Case) -> None:
        call(case, mode, api)

    try:
        check()
    finally:
        record(figures, api)


def call(case: schemathesis.Case, mode: GenerationMode, api: Api) -> None:
    path_params = case.path_parameters or {}
    # Half the valid cases address the real project's objects (stable per case, for
    # shrinking); an invalid case keeps its ids, which may be what makes it invalid.
    if (
        mode == GenerationMode.POSITIVE
        and zlib.crc32(repr(sorted(path_params.items())).encode()) % 2
    ):
        for name in path_params:
            if name in REAL_IDS:
                path_params[name] = api.world.ids[REAL_IDS[name]]
    response = case.call_and_validate(base_url=api.server.url, timeout=60, excluded_checks=EXCLUDED)
    api.statuses[str(response.status_code)] += 1
    api.requests += 1
    api.operations.add(f"{case.method} {case.path}")
    if mode == GenerationMode.POSITIVE and response.status_code not in ACCEPTED:
        refused_for_a_field(response, api)


#: Two checks whose premise the API does not share, each replaced by a stricter rule here:
#: ``positive_data_acceptance`` (see :func:`refused_for_a_field`) and ``ignored_auth``, which
#: wants a malformed credential to be 401: a malformed identity header is bad input, 422
#: naming the header (``negative_data_rejection`` checks it is refused), while a missing one
#: is 401 (the access matrix checks every route for that).
EXCLUDED = [positive_data_acceptance, ignored_auth]

#: Answers to valid input that are not a refusal of the input itself: done, not yours (401,
#: 403, 404: ids are random), or in conflict with what is stored (409).
ACCEPTED = {200, 201, 202, 401, 403, 404, 409}


def refused_for_a_field(response: Any, api: Api) -> None:
    """schemathesis' ``positive_data_acceptance`` check, minus what a JSON schema cannot say.

    The document cannot express every rule: units pint knows, names with a visible
    character, no NUL, cursors this list returned, at least one of several filters, no start
    in the future. Input valid by the document but refused must therefore be a 422
    problem+json naming the field and the reason -- never a bare 400, never a 5xx."""
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    assert response.status_code == 422, f"{where}: {response.text[:500]}"
    assert response.headers["content-type"][0].startswith("application/problem+json"), where
    errors = response.json()["errors"]
    assert errors and all(e["field"] and e["reason"] for e in errors), f"{where}: {errors}"
    api.statuses["422 (a rule the document cannot express)"] += 1


def record(figures: Figures, api: Api) -> None:
    """One record for the whole module, brought up to date by every operation."""
    values = {
        "requests": api.requests,
        "operations": len(api.operations),
        "http_5xx": sum(n for s, n in api.statuses.items() if s.startswith("5")),
        "refused_valid_input": api.statuses["422 (a rule the document cannot express)"],
        "statuses": dict(sorted(api.statuses.items())),
    }
    for r in figures.records:
        if r["test"] == TEST:
            r.update(values)
            return
    figures.record("bad_input", TEST, **values)
