"""The OpenAPI document says how to call the API (identity headers, the sensors' Bearer token,
Idempotency-Key, problem+json errors) and every reference in it resolves; /docs and /redoc
load nothing from outside the service."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.cloud.conftest import make_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("openapi") / "cloud.db"
    with make_client(f"sqlite:///{db}", create_schema=True) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only references inside the document"
    node: Any = spec
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method, path, op


def test_every_ref_resolves(spec: dict[str, Any]) -> None:
    """The telemetry body pointed at #/$defs/Reading, which no tool could resolve."""
    found = set(refs(spec))
    assert "#/components/schemas/Reading" in found
    for ref in found:
        resolve(spec, ref)
    assert "$defs" not in str(spec)


def test_identity_headers_bearer_token_and_gateway_secret_are_declared(
    spec: dict[str, Any],
) -> None:
    schemes = spec["components"]["securitySchemes"]
    headers = {s["name"] for s in schemes.values() if s["type"] == "apiKey"}
    assert headers == {"X-User-Id", "X-Project-Id", "X-Project-Role", "X-Gateway-Secret"}
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["SensorToken"].items()
    paths = spec["paths"]
    assert paths["/api/v1/telemetry"]["post"]["security"] == [{"SensorToken": []}]
    edge_rules = paths["/api/v1/sensors/{sensor_id}/edge-rules"]["get"]
    assert edge_rules["security"] == [{"SensorToken": []}]
    identity = {"UserId": [], "ProjectId": [], "ProjectRole": []}
    for method, path in (
        ("get", "/api/v1/experiments"),
        ("post", "/api/v1/runs/{run_id}/metrics"),
        ("get", "/api/v1/telemetry/series"),
        ("get", "/api/v1/telemetry/stream/sse"),
        ("post", "/api/v1/stream-tickets"),
    ):
        assert paths[path][method]["security"] == [
            identity,
            {**identity, "GatewaySecret": []},
        ], (method, path)
    assert paths["/api/v1/projects"]["get"]["security"][0] == {"UserId": []}
    assert not paths["/healthz"]["get"].get("security")
    for method, path, op in operations(spec):
        if path.startswith("/api/"):
            assert op.get("security"), f"{method} {path} says nothing about who may call it"


def test_every_post_takes_an_idempotency_key(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        if method == "post":
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
            assert "Idempotency-Key" in names, path


def test_errors_are_problem_json(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "errors"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path, op in operations(spec):
        if not path.startswith("/api/"):
            continue
        errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        assert {"401", "422"} <= set(errors), (method, path, sorted(errors))
        for code, response in errors.items():
            assert list(response["content"]) == ["application/problem+json"], (path, code)
            assert response["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_from_the_service(client: TestClient, page: str) -> None:
    html = client.get(page).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    urls += re.findall(r"""url: *["']([^"']+)["']""", html)
    assert urls, html
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from outside"
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 100, url
    assert "cdn." not in html and "fonts.googleapis" not in html
