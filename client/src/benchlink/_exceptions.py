"""The client's errors, one small tree::

    BenchlinkError
    ├── ConfigError           no URL or identity, or a config file that cannot be read
    ├── TransportError        the server could not be reached (after the retries)
    ├── APIError              the server answered with an error (problem+json fields kept)
    │   ├── BadRequest        400
    │   ├── Unauthorized      401  missing or refused identity (or gateway secret)
    │   ├── Forbidden         403  the role does not allow it
    │   ├── NotFound          404  not in this project
    │   ├── Conflict          409  e.g. an archived experiment takes no runs
    │   ├── ValidationError   422  ``errors`` names each field and the reason
    │   └── ServerError       5xx  (and 429/503 still refused after the retries)
    ├── TokenLost             a sensor was registered, but the answer with its token was lost
    └── LiveReset             the live stream cannot resume without a gap

Every :class:`APIError` carries what the server said: ``status``, ``title``, ``detail``,
``errors`` (a list of :class:`FieldProblem`) and ``type``, plus the raw ``body``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BenchlinkError(Exception):
    """Anything this package raises on purpose."""


class ConfigError(BenchlinkError):
    """The client is missing its URL or identity, or its config file is unreadable."""


class TransportError(BenchlinkError):
    """The server could not be reached (connection refused, reset, timed out) after retries."""


class LiveReset(BenchlinkError):
    """The live stream's resume point is unknown or too old: readings may be missing, so the
    history must be read again (``run.telemetry(since=...)``) before following live."""


class TokenLost(BenchlinkError):
    """A sensor was registered, but the one answer carrying its token was lost in transit (the
    retry was answered from the server's record, which never keeps tokens). ``sensor_id``
    names it; ``client.sensors.rotate_token(sensor_id)`` issues a token that works."""

    def __init__(self, sensor_id: str) -> None:
        self.sensor_id = sensor_id
        super().__init__(
            f"sensor {sensor_id} was registered but its token was lost in transit; "
            f"get a new one with client.sensors.rotate_token({sensor_id!r})"
        )


@dataclass(frozen=True)
class FieldProblem:
    """One entry of a problem's ``errors``: the field (``readings.0.timestamp``) and why."""

    field: str
    reason: str


class APIError(BenchlinkError):
    """The server answered with an error status (an ``application/problem+json`` body)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[FieldProblem] | None = None,
        *,
        type: str | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        self.body = body
        fields = "; ".join(f"{e.field}: {e.reason}" for e in self.errors)
        super().__init__(f"{status} {title}: {detail}" + (f" ({fields})" if fields else ""))


class BadRequest(APIError):
    pass


class Unauthorized(APIError):
    pass


class Forbidden(APIError):
    pass


class NotFound(APIError):
    pass


class Conflict(APIError):
    pass


class ValidationError(APIError):
    pass


class ServerError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationError,
}


def error_for(status: int, body: Any, reason_phrase: str = "") -> APIError:
    """The exception of an error answer; a body that is not problem+json still gives one."""
    problem = body if isinstance(body, dict) else {}
    raw_errors = problem.get("errors")
    errors = [
        FieldProblem(str(e.get("field", "")), str(e.get("reason", "")))
        for e in (raw_errors if isinstance(raw_errors, list) else [])
        if isinstance(e, dict)
    ]
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    detail = problem.get("detail")
    if detail is None:
        detail = body if isinstance(body, str) and body else reason_phrase
    return kind(
        status,
        str(problem.get("title") or reason_phrase or "error"),
        str(detail),
        errors,
        type=problem.get("type"),
        body=body,
    )
