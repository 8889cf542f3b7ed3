"""Retries that never act twice: a POST keeps its Idempotency-Key across its own retries.

The fault (an answer lost after the server acted) is injected by a transport around the real
one, against the real cloud; the retry policy's logic alone runs on ``httpx.MockTransport``.
"""

from __future__ import annotations

import time

import httpx
import pytest

from benchlink import Client, Conflict, Retry, ServerError, TransportError, ValidationError
from tests.client.conftest import QUICK, new_project
from tests.support.cloud import CloudServer


class LoseAnswers(httpx.BaseTransport):
    """Sends each request for real; the first ``lose`` answers to POSTs on ``path_part`` are
    read and then dropped, as a connection reset after the server acted would."""

    def __init__(self, path_part: str, lose: int = 1) -> None:
        self.real = httpx.HTTPTransport()
        self.path_part, self.lose = path_part, lose
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        if request.method == "POST" and self.path_part in request.url.path:
            self.keys.append(request.headers.get("idempotency-key"))
            if self.lose > 0:
                self.lose -= 1
                response.read()
                response.close()
                raise httpx.ReadError("connection reset after the server answered")
        return response

    def close(self) -> None:
        self.real.close()


def test_a_create_whose_answer_is_lost_acts_once(cloud: CloudServer) -> None:
    lossy = LoseAnswers("/api/v1/experiments")
    owner = new_project(cloud.url)
    client = Client(
        cloud.url,
        user=owner.config.user,
        project=owner.config.project,
        role="owner",
        retry=QUICK,
        transport=lossy,
    )
    with owner, client:
        exp = client.experiments.create("once only")
        stored = list(owner.experiments.list())
    assert [e.id for e in stored] == [exp.id]
    assert len(lossy.keys) == 2 and lossy.keys[0] == lossy.keys[1] and lossy.keys[0]


def test_metrics_whose_answer_is_lost_are_stored_once(cloud: CloudServer) -> None:
    owner = new_project(cloud.url)
    run = owner.experiments.create("e").runs.create()
    lossy = LoseAnswers("/metrics", lose=2)
    cfg = owner.config
    with (
        owner,
        Client(
            cloud.url, user=cfg.user, project=cfg.project, retry=QUICK, transport=lossy
        ) as client,
    ):
        client.runs.get(run.id).log_metrics({"loss": 0.5, "acc": 0.9}, step=1)
        client.metrics_logger.flush()
        points = owner.runs.get(run.id).metrics()
    assert sorted(points["value"]) == [0.5, 0.9]
    assert len(set(lossy.keys)) == 1 and len(lossy.keys) == 3


def _mock(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.MockTransport(handle)


def _client(transport: httpx.BaseTransport, retry: Retry = QUICK) -> Client:
    return Client(
        "http://cloud.invalid",
        user="00000000-0000-0000-0000-000000000001",
        project="00000000-0000-0000-0000-000000000002",
        retry=retry,
        transport=transport,
    )


EXPERIMENT = {
    "id": "00000000-0000-0000-0000-000000000003",
    "project_id": "00000000-0000-0000-0000-000000000002",
    "name": "e",
    "tags": [],
    "status": "active",
    "archived_at": None,
    "created_at": "2026-01-01T00:00:00Z",
}


def test_503_and_429_are_retried_after_retry_after_with_the_same_key() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(503, headers={"Retry-After": "0.3"}, json={"title": "Service Unavailable"}),
        httpx.Response(429, headers={"Retry-After": "0.2"}),
        httpx.Response(409, headers={"Retry-After": "0"}, json={"title": "Conflict"}),
        httpx.Response(201, json=EXPERIMENT),
    ]
    started = time.monotonic()
    with _client(_mock(answers, seen), Retry(attempts=5, backoff=0.01, cap=5)) as client:
        exp = client.experiments.create("e")
    assert exp.name == "e" and time.monotonic() - started >= 0.5
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 4 and len(keys) == 1
    assert seen[0].headers["x-user-id"] == "00000000-0000-0000-0000-000000000001"


def test_final_errors_are_not_retried_and_carry_the_problem() -> None:
    seen: list[httpx.Request] = []
    problem = {
        "type": "https://benchlink.dev/problems/conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "the experiment is archived",
        "errors": [],
    }
    invalid = {
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "invalid input",
        "errors": [{"field": "name", "reason": "must contain a visible character"}],
    }
    answers = [
        httpx.Response(409, json=problem, headers={"Content-Type": "application/problem+json"}),
        httpx.Response(422, json=invalid, headers={"Content-Type": "application/problem+json"}),
    ]
    with _client(_mock(answers, seen)) as client:
        with pytest.raises(Conflict) as conflict:
            client.experiments.create("e")
        with pytest.raises(ValidationError) as refused:
            client.experiments.create(" ")
    assert len(seen) == 2
    assert conflict.value.detail == "the experiment is archived"
    assert conflict.value.type == problem["type"]
    assert refused.value.status == 422
    assert [(e.field, e.reason) for e in refused.value.errors] == [
        ("name", "must contain a visible character")
    ]


def test_retries_give_up_with_the_last_answer_or_the_network_error() -> None:
    seen: list[httpx.Request] = []
    answers = [httpx.Response(503, json={"title": "Service Unavailable"}) for _ in range(4)]
    with _client(_mock(answers, seen)) as client, pytest.raises(ServerError) as down:
        client.runs.get("00000000-0000-0000-0000-000000000009")
    assert down.value.status == 503 and len(seen) == QUICK.attempts

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _client(httpx.MockTransport(refuse)) as client, pytest.raises(TransportError):
        client.experiments.create("e")


def test_backoff_is_jittered_and_capped() -> None:
    policy = Retry(attempts=10, backoff=0.5, cap=4.0)
    waits = [policy.delay(n, None) for n in range(10) for _ in range(20)]
    assert max(waits) <= 4.0 and min(waits) >= 0.25
    assert len({round(w, 6) for w in waits[:20]}) > 1  # random: clients do not come back together
    assert policy.delay(0, 2.5) == 2.5 and policy.delay(0, 60) == 4.0
