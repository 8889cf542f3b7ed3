"""Who may call what: one declared expectation per route of the app, HTTP and streams.

The access matrix walks the routes the app really has (:func:`app_routes`); a route without
an entry in :data:`EXPECT` fails it, so a new endpoint is covered the day it is added, and
an entry whose route is gone fails it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import fastapi.routing
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

Ids = dict[str, str]
#: ``identity``: the gateway's three headers, at least ``role``; ``user``: X-User-Id (projects);
#: ``sensor``: a Bearer sensor token; ``stream``: identity headers or a stream ticket;
#: ``public``: anyone (health, the portal's static shell, the API's own documents)
Who = Literal["identity", "user", "sensor", "stream", "public"]


@dataclass(frozen=True)
class Expect:
    who: Who
    ok: int = 200
    role: str = "viewer"
    body: Callable[[Ids], Any] | None = None
    query: str = ""
    #: path parameters taken from other ids of the world (``session_id`` -> ``draft``)
    use: tuple[tuple[str, str], ...] = ()
    #: the answer when another project's owner addresses this project's objects: 404 for
    #: ids, 403 for a body naming the project, ``list``: 200 without any of its ids,
    #: ``per_item``: 200 with a 404 per item, None: nothing of another project to address
    foreign: int | Literal["list", "per_item"] | None = 404
    #: the call changes what it addresses for good (revokes, archives, starts): a project
    #: of its own for every successful call
    fresh: bool = False


def _sensor(ids: Ids) -> Any:
    return {
        "project_id": ids["project_id"],
        "name": f"s-{ids['nonce']}",
        "type": "t",
        "input_unit": "mV",
        "display_unit": "C",
        "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1, "b": 0}},
    }


def _profile(ids: Ids) -> Any:
    return {"version": f"v-{ids['nonce']}", "kind": "linear", "payload": {"a": 2}}


def _reading(ids: Ids) -> Any:
    return {
        "sensor_id": ids["sensor_id"],
        "run_id": ids["run_id"],
        "capture_session_id": ids["session_id"],
        "readings": [{"timestamp": ids["now"], "raw_value": 1.5}],
    }


def _empty(_: Ids) -> Any:
    return {}


V1 = "/api/v1"
RUN = V1 + "/runs/{run_id}"
SES = RUN + "/capture-sessions/{session_id}"
EXP = V1 + "/experiments/{experiment_id}"
SEN = V1 + "/sensors/{sensor_id}"

EXPECT: dict[tuple[str, str], Expect] = {
    ("POST", V1 + "/projects"): Expect("user", 201, body=lambda i: {"name": "p"}, foreign=None),
    ("GET", V1 + "/projects"): Expect("user", foreign="list"),
    ("GET", V1 + "/projects/{project_id}"): Expect("user"),
    ("POST", V1 + "/sensors"): Expect("identity", 201, "editor", _sensor, foreign=403),
    ("GET", V1 + "/sensors"): Expect("identity", foreign="list"),
    ("GET", SEN): Expect("identity"),
    ("PATCH", SEN): Expect("identity", role="editor", body=lambda i: {"type": "K"}),
    ("POST", SEN + "/rotate-token"): Expect("identity", role="owner", body=_empty, fresh=True),
    ("POST", SEN + "/revoke-token"): Expect("identity", role="owner", body=_empty, fresh=True),
    ("PUT", SEN + "/conversion-profile"): Expect("identity", role="editor", body=_profile),
    ("GET", SEN + "/conversion-profiles"): Expect("identity"),
    ("POST", V1 + "/experiments"): Expect(
        "identity",
        201,
        "editor",
        lambda i: {"project_id": i["project_id"], "name": "x"},
        foreign=403,
    ),
    ("GET", V1 + "/experiments"): Expect("identity", foreign="list"),
    ("GET", EXP): Expect("identity"),
    ("PATCH", EXP): Expect("identity", role="editor", body=lambda i: {"name": "y"}),
    ("POST", EXP + "/archive"): Expect("identity", role="owner", body=_empty, fresh=True),
    ("POST", EXP + "/unarchive"): Expect(
        "identity", role="owner", body=_empty, use=(("experiment_id", "archived"),), fresh=True
    ),
    ("POST", EXP + "/runs"): Expect("identity", 201, "editor", _empty),
    ("GET", EXP + "/runs"): Expect("identity"),
    ("GET", EXP + "/events"): Expect("identity"),
    ("POST", V1 + "/runs:batch-status"): Expect(
        "identity",
        role="owner",
        body=lambda i: {"run_ids": [i["run_id"]], "status": "succeeded"},
        foreign="per_item",
        fresh=True,
    ),
    ("GET", RUN): Expect("identity"),
    ("PATCH", RUN): Expect("identity", role="editor", body=lambda i: {"params": {"lr": 0.1}}),
    ("POST", RUN + "/capture-sessions"): Expect(
        "identity",
        201,
        "editor",
        lambda i: {"ordinal_number": int(i["nonce"], 16) % 999_999 + 1, "status": "draft"},
    ),
    ("GET", RUN + "/capture-sessions"): Expect("identity"),
    ("GET", SES): Expect("identity"),
    ("POST", SES + "/start"): Expect(
        "identity",
        role="editor",
        body=_empty,
        use=(("run_id", "draft_run"), ("session_id", "draft")),
        fresh=True,
    ),
    ("POST", SES + "/stop"): Expect(
        "identity", role="editor", body=lambda i: {"status": "succeeded"}, fresh=True
    ),
    ("GET", V1 + "/capture-sessions"): Expect("identity", foreign="list"),
    ("POST", V1 + "/telemetry"): Expect("sensor", 202, body=_reading),
    ("GET", V1 + "/telemetry"): Expect("identity", query="run_id={run_id}"),
    ("GET", V1 + "/telemetry/series"): Expect("identity", query="sensor_id={sensor_id}"),
    ("GET", V1 + "/telemetry/export.csv"): Expect("identity", query="run_id={run_id}"),
    ("POST", RUN + "/metrics"): Expect(
        "identity",
        201,
        "editor",
        lambda i: {"metrics": [{"name": "loss", "step": 9, "value": 0.5}]},
    ),
    ("GET", RUN + "/metrics"): Expect("identity", query="name=loss"),
    ("GET", RUN + "/metrics/summary"): Expect("identity"),
    ("GET", RUN + "/events"): Expect("identity"),
    ("GET", V1 + "/events"): Expect("identity", foreign="list"),
    ("POST", V1 + "/stream-tickets"): Expect("identity", 201, body=_empty, foreign=None),
    ("GET", V1 + "/telemetry/stream/sse"): Expect("stream", query="sensor_id={sensor_id}"),
    ("WS", V1 + "/telemetry/stream"): Expect("stream", query="sensor_id={sensor_id}"),
    # Anyone: liveness, the Prometheus counters, the portal's static shell (its data comes
    # from the API above), the API's documents.
    ("GET", "/healthz"): Expect("public"),
    ("GET", "/readyz"): Expect("public"),
    ("GET", "/metrics"): Expect("public"),
    ("GET", "/"): Expect("public"),
    ("GET", "/tests"): Expect("public"),
    ("GET", "/experiments/{experiment_id}"): Expect("public"),
    ("GET", "/runs/{run_id}"): Expect("public"),
    ("GET", "/portal/config.json"): Expect("public"),
    ("GET", "/portal/static/{path}"): Expect("public", use=(("path", "portal_file"),)),
    ("GET", "/openapi.json"): Expect("public"),
    ("GET", "/docs"): Expect("public"),
    ("GET", "/docs/oauth2-redirect"): Expect("public"),
    ("GET", "/redoc"): Expect("public"),
    ("GET", "/docs/static/{path}"): Expect("public", use=(("path", "docs_file"),)),
}


def app_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves, HTTP and WebSocket, schema or not
    (HEAD is GET's twin; a static mount is one GET)."""
    for context in fastapi.routing.iter_route_contexts(app.routes):
        route: BaseRoute = context.original_route
        path = (context.path_format or getattr(route, "path_format", "")).replace(":path}", "}")
        if isinstance(route, WebSocketRoute | fastapi.routing.APIWebSocketRoute):
            yield "WS", path
        elif isinstance(route, Mount):
            yield "GET", path
        elif isinstance(route, Route | fastapi.routing.APIRoute):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, path


def undeclared(app: FastAPI) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Routes the app serves without a declared expectation, and expectations of routes
    it no longer serves."""
    served = set(app_routes(app))
    return sorted(served - EXPECT.keys()), sorted(EXPECT.keys() - served)
