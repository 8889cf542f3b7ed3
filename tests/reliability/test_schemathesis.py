"""Every endpoint against its own OpenAPI document, with inputs schemathesis generates.

Valid and invalid bodies, query strings, path ids and headers, sent with a project member's
identity headers and a sensor's token: no 5xx, every answer's status, content type, headers and
body as the document declares, invalid input refused with a 4xx. The slice in ``make test``
tries a few examples per operation and mode; ``make reliability`` many more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import positive_data_acceptance

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


def test_every_operation_keeps_its_documented_contract(
    api: Api, figures: Figures, seed_note: str
) -> None:
    owner: Identity = api.project("schemathesis")
    ids = api.stack(owner)
    headers = {**owner.headers(), "Authorization": f"Bearer {ids['token']}"}
    statuses: Counter[str] = Counter()
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
                response = case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)
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
