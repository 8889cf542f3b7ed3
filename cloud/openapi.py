"""The OpenAPI document and the pages that show it (``/docs``, ``/redoc``), offline.

FastAPI's document leaves out what the service reads by hand: the gateway's identity headers,
the sensors' Bearer token, ``Idempotency-Key`` and the ``application/problem+json`` errors;
and a request body given as a pydantic JSON schema keeps its ``#/$defs/...`` references, which
nothing resolves in an OpenAPI document. ``document`` adds the first and moves the second into
``components/schemas``, so that "Try it out" sends the right headers and every ``$ref``
resolves. Swagger UI and ReDoc come from the package ``fastapi-offline`` (no CDN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from cloud import deps
from cloud.problems import PROBLEM_JSON

#: Where the Swagger UI and ReDoc assets are served from.
DOCS_STATIC_URL = "/docs/static"

IDENTITY = ("UserId", "ProjectId", "ProjectRole")
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "UserId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-User-Id",
        "description": "The caller's user id (a UUID), set by the auth gateway.",
    },
    "ProjectId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Project-Id",
        "description": "The project the request acts in (a UUID), set by the auth gateway.",
    },
    "ProjectRole": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Project-Role",
        "description": "The caller's role in that project: owner, editor or viewer.",
    },
    "GatewaySecret": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Gateway-Secret",
        "description": "Required with every identity header when the service runs with "
        "BENCHLINK_GATEWAY_SECRET (any deployment the gateway is not the only way into).",
    },
    "SensorToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A sensor's token (bls_...), shown once at registration or rotation.",
    },
    "EdgeToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An edge's token (ble_...), shown once at registration or rotation.",
    },
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An error (RFC 9457): what went wrong, and per field why.",
    "required": ["type", "title", "status", "detail", "errors"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}

ERRORS = {
    "400": "a malformed request (e.g. an identity header given twice)",
    "401": "no identity headers, or a missing, unknown, rotated or revoked sensor token",
    "403": "the caller's role or project does not allow this, or the token is another's",
    "404": "no such object in the caller's project",
    "409": "a conflict with the current state, or the same Idempotency-Key still in progress",
    "413": "the request body is too large",
    "422": "invalid input: each field and the reason",
    "503": "the database is unavailable; retry after Retry-After seconds",
}

IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any string of 1 to 255 characters. The same key with the same body "
    "replays the first answer (Idempotent-Replayed: true); with another body: 422; while the "
    "first is still running: 409 with Retry-After. Kept 24 h.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

#: Routes that authenticate by hand rather than through a dependency: who calls them.
HAND_CHECKED = {
    ("post", "/api/v1/telemetry"): "sensor",
    ("post", "/api/v1/sensors/{sensor_id}/faults"): "sensor",
    ("get", "/api/v1/sensors/{sensor_id}/edge-rules"): "sensor",
    ("get", "/api/v1/telemetry/stream/sse"): "identity",
    ("put", "/api/v1/edges/{edge_id}/heartbeat"): "edge",
    ("get", "/api/v1/time"): "clock",
}


def install(app: FastAPI) -> None:
    """Serve the document with ``document`` applied once, on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            document(schema, callers(app))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def callers(app: FastAPI) -> dict[tuple[str, str], str]:
    """Who may call each operation: ``identity`` (the gateway's three headers), ``user``
    (X-User-Id only: projects), ``sensor`` (Bearer token), by (method, path)."""
    found: dict[tuple[str, str], str] = {}
    for path, route in _api_routes(app):
        calls = {d.call for d in _dependencies(route.dependant)}
        kind = None
        if any(_is_role_check(c) for c in calls):
            kind = "identity"
        elif deps.current_user in calls:
            kind = "user"
        for method in route.methods or ():
            key = (method.lower(), path)
            by_hand = HAND_CHECKED.get(key)
            if by_hand or kind:
                found[key] = by_hand or kind  # type: ignore[assignment]
    return found


def _api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """Every API route with its full path. Newer FastAPI keeps included routers as they are
    (``iter_route_contexts`` walks them, as its own OpenAPI generator does); older ones copy
    their routes into ``app.routes``."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:
        for route in app.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                yield route.path_format, route
        return
    for context in iterate(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            yield context.path_format or route.path_format, route


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dep in dependant.dependencies:
        yield dep
        yield from _dependencies(dep)


def _is_role_check(call: Callable[..., Any] | None) -> bool:
    return getattr(call, "__qualname__", "").startswith(deps.require.__qualname__ + ".")


def document(schema: dict[str, Any], who: dict[tuple[str, str], str]) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _hoist_defs(schema, schemas)
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas["Problem"] = PROBLEM_SCHEMA
    # Validation errors are problem+json like every other error, not FastAPI's default shape.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            kind = who.get((method, path))
            op["security"] = _security(kind)
            if method == "post" and not any(
                p.get("name", "").lower() == "idempotency-key" for p in op.get("parameters", [])
            ):
                op.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            _errors(op, method, path, kind)


def _security(kind: str | None) -> list[dict[str, list[str]]]:
    if kind == "sensor":
        return [{"SensorToken": []}]
    if kind == "edge":
        return [{"EdgeToken": []}]
    if kind == "clock":  # any credential the API knows (see cloud/routers/clock.py)
        return [{"EdgeToken": []}, {"SensorToken": []}, *_security("identity")]
    names = IDENTITY if kind == "identity" else ("UserId",) if kind == "user" else ()
    if not names:
        return []
    plain: dict[str, list[str]] = {name: [] for name in names}
    return [plain, {**plain, "GatewaySecret": []}]


def _errors(op: dict[str, Any], method: str, path: str, kind: str | None) -> None:
    codes = {"422"} if op.get("parameters") or op.get("requestBody") else set()
    if kind:  # malformed identity headers or token are 422 too
        codes |= {"400", "401", "422", "503"}
    if kind in ("identity", "user", "sensor", "edge"):
        codes.add("403")  # a token is also refused for another sensor's or edge's data
    if "{" in path or kind in ("identity", "sensor"):
        codes.add("404")  # a sensor's batch names a run and a session, which may not exist
    if method in ("post", "put", "patch"):
        codes |= {"409", "413"}
    responses = op.setdefault("responses", {})
    for code in sorted(codes):
        described = responses.get(code, {}).get("description")
        responses[code] = {
            "description": described if described and code != "422" else ERRORS[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """Move nested JSON-schema ``$defs`` into components/schemas and point refs there."""
    if isinstance(node, dict):
        for name, definition in node.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
            _hoist_defs(definition, schemas)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
        for value in list(node.values()):
            _hoist_defs(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _hoist_defs(value, schemas)
