"""Every endpoint against its own OpenAPI document, with inputs schemathesis generates.

Valid and invalid bodies, query strings, path ids and headers, sent with a project member's
identity headers and a sensor's token: no 5xx, every answer's status, content type, headers and
body as the document declares, invalid input refused with a 4xx. The slice in ``make test``
tries a few examples per operation and mode; ``make reliability`` many more.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from jsonschema_rs import Draft202012Validator
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from tests.cloud.conftest import Api, Identity, database_url, make_client
from tests.reliability.conftest import LONG, Figures

__all__ = ["database_url"]  # the fixture: both databases

EXAMPLES = 40 if LONG else 4
#: A stream answers for as long as the client listens: tests/live holds it.
EXCLUDED = {"/api/v1/telemetry/stream/sse"}
#: "Valid data accepted" cannot hold for what a schema cannot say: a list's cursor is any string
#: to the document, but only one the list returned is a cursor (422 otherwise), and an id is
#: any UUID, but only one that exists is found. Every other check runs.
EXCLUDED_CHECKS = [positive_data_acceptance]


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    with make_client(database_url) as client:
        yield Api(client)


def _operations(api: Api) -> list[APIOperation]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.c.app)
    ops = [result.ok() for result in schema.get_all_operations()]
    return [op for op in ops if op.path not in EXCLUDED]


def _call(case: Case, identity: Mapping[str, str], token: str, components: Any) -> Any:
    """Send ``case`` as the project's owner and check the answer.

    A case whose headers were made invalid keeps them: adding the real identity back would turn
    a request that must be refused into a valid one. A case made invalid only in its query
    string is excused from "invalid data is refused" when what reached the server is valid
    after all: a query string carries text, so a generated ``0`` or ``false`` arrives as the
    text "0" or "false", which a text parameter takes (schemathesis#3962, #4600).
    """
    headers = {"Authorization": f"Bearer {token}"}
    if not case.meta or not case.meta.is_negative_at(ParameterLocation.HEADER):
        headers.update(identity)
    response = case.call(headers=headers)
    excluded = list(EXCLUDED_CHECKS)
    if _query_arrived_valid(case, str(response.request.url), components):
        excluded.append(negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded, headers=headers)
    return response


def _query_arrived_valid(case: Case, url: str, components: Any) -> bool:
    """Whether the query string as sent (text) is valid for the operation's parameters, with
    every other component generated valid."""
    meta = case.meta
    if meta is None or any(
        info.mode.is_negative
        for where, info in meta.components.items()
        if where is not ParameterLocation.QUERY
    ):
        return False
    if not meta.is_negative_at(ParameterLocation.QUERY):
        return False
    sent = parse_qs(urlsplit(url).query, keep_blank_values=True)
    declared = {p.name: p.definition.get("schema", {}) for p in case.operation.query}
    required = {p.name for p in case.operation.query if p.is_required}
    if not required <= sent.keys() or not sent.keys() <= declared.keys():
        return False
    return all(_text_fits(declared[name], values, components) for name, values in sent.items())


def _text_fits(schema: dict[str, Any], values: list[str], components: Any) -> bool:
    branches = schema.get("anyOf", [schema])
    for branch in branches:
        if branch.get("type") == "array":
            items = branch.get("items", {})
            if all(_scalar_fits(items, v, components) for v in values):
                return True
        elif len(values) == 1 and _scalar_fits(branch, values[0], components):
            return True
    return False


def _scalar_fits(schema: dict[str, Any], text: str, components: Any) -> bool:
    validator = Draft202012Validator({**schema, "components": components})
    return any(validator.is_valid(v) for v in _readings_of(text))


def _readings_of(text: str) -> list[Any]:
    """The values FastAPI's lax parsing may read from one query-string text."""
    out: list[Any] = [text]
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            out.append(kind(text))
    lowered = text.lower()
    if lowered in {"true", "1", "yes", "on"}:
        out.append(True)
    if lowered in {"false", "0", "no", "off"}:
        out.append(False)
    return out


def test_every_operation_keeps_its_documented_contract(
    api: Api, figures: Figures, seed_note: str
) -> None:
    owner: Identity = api.project("schemathesis")
    ids = api.stack(owner)
    statuses: Counter[str] = Counter()
    components = api.c.app.openapi()["components"]
    operations = _operations(api)
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                # The slice in `make test` tries the same inputs every run (a CI run is not a
                # lottery); the long form draws new ones every run.
                derandomize=not LONG,
            )
            def check(case: Case) -> None:
                response = _call(case, owner.headers(), ids["token"], components)
                statuses[f"{response.status_code // 100}xx"] += 1

            try:
                check()
            except Unsatisfiable:
                # Nothing in the operation can be made invalid (no parameter, no body).
                assert mode is GenerationMode.NEGATIVE, op.label
    assert statuses["5xx"] == 0
    figures.record(
        "bad input",
        "schemathesis, every operation",
        operations=len(operations),
        requests=sum(statuses.values()),
        answers=dict(statuses),
        note=seed_note,
    )
