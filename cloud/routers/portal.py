"""The experiment portal: static HTML/JS/CSS served by the API itself (no build step).

Page paths (``/``, ``/tests``, ``/devices``, ``/sensors``, ``/deleted``, ``/experiments/{id}``,
``/runs/{id}``, ``/compare``) all serve the one page;
the script routes by path. The browser calls the same REST API as everyone else: behind a
gateway the gateway adds the identity headers; with ``BENCHLINK_DEV_IDENTITY=1`` (development
only, shown as a banner) the page sends them itself: the default identity of the settings
(``make demo``: the demo project's owner), or the user, project and role it asks for.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from cloud.container import container
from cloud.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "portal" / "static"
NO_CACHE = {"Cache-Control": "no-cache"}
#: The page runs only the package's own scripts: names, tags and meta are user text, and a
#: rendering slip that turned one into markup must still not run (no inline script, no
#: handler attributes, no javascript: URLs, no eval) nor send anything to another origin.
#: Inline styles stay allowed: uPlot sizes its elements with them, and CSS runs no code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {**NO_CACHE, "Content-Security-Policy": CONTENT_SECURITY_POLICY}

router = APIRouter(include_in_schema=False)


def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.get("/")
def home() -> FileResponse:
    return _page()


@router.get("/tests")
def tests_page() -> FileResponse:
    return _page()


@router.get("/devices")
def devices_page() -> FileResponse:
    return _page()


@router.get("/sensors")
def sensors_page() -> FileResponse:
    return _page()


@router.get("/deleted")
def deleted_page() -> FileResponse:
    return _page()


@router.get("/compare")
def compare_page() -> FileResponse:
    """Runs compared (``?run=…&run=…&sensor=…``): the query is the page's own to read."""
    return _page()


@router.get("/experiments/{experiment_id}")
def experiment_page(experiment_id: uuid.UUID) -> FileResponse:
    return _page()


@router.get("/runs/{run_id}")
def run_page(run_id: uuid.UUID) -> FileResponse:
    return _page()


@router.get("/portal/config.json")
def portal_config(request: Request) -> JSONResponse:
    settings = container(request).settings
    config: dict[str, object] = {
        "dev_identity": settings.dev_identity,
        "environment": settings.environment,
        "default_identity": None,
    }
    if settings.dev_identity and settings.dev_identity_user:
        # The page looks the project up among the user's own (by id or name) when it opens.
        config["default_identity"] = {
            "user": str(settings.dev_identity_user),
            "project": settings.dev_identity_project,
            "role": settings.dev_identity_role,
        }
    return JSONResponse(config, headers=NO_CACHE)


@router.get("/portal/static/{path:path}")
def static_file(path: str) -> FileResponse:
    target = (STATIC / path).resolve()
    if not target.is_file() or not target.is_relative_to(STATIC):
        raise NotFound(f"no such portal file: {path}")
    return FileResponse(target, headers=NO_CACHE)
