"""The one place where errors become ``application/problem+json`` responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.db.outage import DATABASE_DOWN
from cloud.errors import DomainError, FieldError, Unavailable

log = logging.getLogger("benchlink.cloud")

#: Seconds a client is told to wait when the database cannot be reached.
UNAVAILABLE_RETRY_AFTER_S = 5

PROBLEM_TYPE_BASE = "https://benchlink.dev/problems/"
PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or _slug(status)),
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [{"field": e.field, "reason": e.reason} for e in errors or []],
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_for(exc: DomainError) -> JSONResponse:
    """The response of a domain error: the exception handler's, and the middleware's that
    answer before the app is reached."""
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        slug=exc.slug,
        errors=exc.errors,
        headers=exc.headers,
        **exc.extra,
    )


def _slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-")
    except ValueError:
        return "error"


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if (parts and parts[0] == "body") or (parts and parts[0] in ("query", "path", "header")):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def _reason(err: Mapping[str, Any]) -> str:
    """pydantic's message, without the "Value error, " it puts before a validator's own."""
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ") if err.get("type") == "value_error" else msg


def validation_errors(exc: RequestValidationError) -> tuple[str, list[FieldError]]:
    errors: list[FieldError] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            reason = err.get("ctx", {}).get("error", "malformed JSON")
            return f"request body is not valid JSON: {reason}", [FieldError("body", str(reason))]
        errors.append(FieldError(_field_name(loc), _reason(err)))
    detail = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5])
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more"
    return detail or "invalid request", errors


def database_unavailable() -> Unavailable:
    return Unavailable(
        "the database cannot be reached; retry later",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


def server_stopping() -> Unavailable:
    """A stream asked for while the server stops: the client reconnects (to this server once
    it is back, or to another) and resumes after the last event id it received."""
    return Unavailable(
        "the server is shutting down; reconnect with the last event id to resume",
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return problem_for(exc)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Connection refused or lost, database gone or not accepting connections, pool
        # exhausted: the request may succeed later, and says nothing wrong about itself.
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            str(getattr(exc, "orig", None) or exc).splitlines()[0],
        )
        return problem_for(database_unavailable())

    for kind in DATABASE_DOWN:
        app.add_exception_handler(kind, _unavailable)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = validation_errors(exc)
        return problem_response(422, "Invalid input", detail, slug="invalid-input", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code < 600 else "Error"
        detail = exc.detail if isinstance(exc.detail, str) else phrase
        return problem_response(exc.status_code, phrase, detail, headers=dict(exc.headers or {}))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # Services check for duplicates first; this is the race two requests can still run
        # into (both checked, one committed first): the database's constraint decides.
        log.info("integrity conflict: %s", str(exc.orig).splitlines()[0] if exc.orig else exc)
        return problem_response(
            409,
            "Conflict",
            "the request conflicts with data written at the same time; retry",
            slug="conflict",
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "Internal server error", "an unexpected error occurred")
