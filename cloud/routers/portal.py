"""The experiment portal: static HTML/JS/CSS served by the API itself (no build step).

Page paths (``/``, ``/tests``, ``/experiments/{id}``, ``/runs/{id}``) all serve the one page;
the script routes by path. The browser calls the same REST API as everyone else: behind a
gateway the gateway adds the identity headers; with ``BENCHLINK_DEV_IDENTITY=1`` (development
only, shown as a banner) the page asks for a user, project and role and sends them itself.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from cloud.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "portal" / "static"
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=NO_CACHE)


@router.get("/")
def home() -> FileResponse:
    return _page()


@router.get("/tests")
def tests_page() -> FileResponse:
    return _page()


@router.get("/experiments/{experiment_id}")
def experiment_page(experiment_id: uuid.UUID) -> FileResponse:
    return _page()


@router.get("/runs/{run_id}")
def run_page(run_id: uuid.UUID) -> FileResponse:
    return _page()


@router.get("/portal/config.json")
def portal_config(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    return JSONResponse(
        {"dev_identity": settings.dev_identity, "environment": settings.environment},
        headers=NO_CACHE,
    )


@router.get("/portal/static/{path:path}")
def static_file(path: str) -> FileResponse:
    target = (STATIC / path).resolve()
    if not target.is_file() or not target.is_relative_to(STATIC):
        raise NotFound(f"no such portal file: {path}")
    return FileResponse(target, headers=NO_CACHE)
