"""Routing: a request is matched against the routes in the order their routers are included
(``cloud.app``: the ingest routes first). Every route must still be reached by its own paths:
no route of a router included earlier may take them."""

from __future__ import annotations

import re

from starlette.routing import BaseRoute, Route, WebSocketRoute

from cloud.app import CHECKED_ROUTERS, UNCHECKED_ROUTERS

_PARAM = re.compile(r"{([^}:]+)(?::([^}]+))?}")
_SAMPLES = {"int": "7", "float": "7.5", "path": "a/b"}
_ANY = "0f8fad5b-d9cb-469f-a165-70867728950e"


def _sample(path: str) -> str:
    """A concrete path for a template: each parameter filled with a value of its kind."""
    return _PARAM.sub(lambda m: _SAMPLES.get(m.group(2) or "", _ANY), path)


def _in_order() -> list[Route | WebSocketRoute]:
    routes: list[BaseRoute] = [
        r for module in (*CHECKED_ROUTERS, *UNCHECKED_ROUTERS) for r in module.router.routes
    ]
    return [r for r in routes if isinstance(r, Route | WebSocketRoute)]


def _methods(route: Route | WebSocketRoute) -> set[str]:
    return set(route.methods or ()) if isinstance(route, Route) else {"WEBSOCKET"}


def _first(routes: list[Route | WebSocketRoute], path: str, method: str) -> Route | WebSocketRoute:
    return next(r for r in routes if method in _methods(r) and r.path_regex.match(path))


def test_every_route_is_reached_by_its_own_paths() -> None:
    routes = _in_order()
    assert len(routes) > 50
    served = [(method, r.path) for r in routes for method in _methods(r)]
    assert sorted(served) == sorted(set(served)), "a route (or a router) is included twice"
    taken = [
        f"{method} {route.path} goes to {got.path}"
        for route in routes
        for method in _methods(route)
        if (got := _first(routes, _sample(route.path), method)).path != route.path
    ]
    assert taken == []


def test_the_check_sees_a_route_taken_by_one_included_before_it() -> None:
    routes = _in_order()
    catch_all = Route("/api/v1/runs/{anything}", lambda: None, methods=["GET"])
    compare = next(r for r in routes if r.path == "/api/v1/runs/compare")
    assert _first([catch_all, *routes], _sample(compare.path), "GET") is catch_all


def test_what_edges_and_clients_send_all_day_is_matched_first() -> None:
    paths = [r.path for r in _in_order()]
    assert paths.index("/api/v1/telemetry") == 0
    heartbeat = next(p for p in paths if p.startswith("/api/v1/edges/") and "heartbeat" in p)
    assert paths.index(heartbeat) < paths.index("/api/v1/projects")
    assert paths.index("/api/v1/runs/{run_id}/metrics") < paths.index("/api/v1/projects")
