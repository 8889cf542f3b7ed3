"""Domain errors, raised by services and mapped once to ``application/problem+json`` (RFC 9457).

DomainError
 ├── Unauthenticated        401  no or bad credentials
 ├── Forbidden              403  role too low, token of another sensor, project mismatch
 ├── NotFound               404  absent, or in another project (never say which)
 ├── Conflict               409  state does not allow it (archived, terminal, duplicate)
 │    └── IdempotencyInFlight  409  the same Idempotency-Key is being processed
 ├── PayloadTooLarge        413
 ├── InvalidInput           422  with per-field ``errors``
 │    └── IdempotencyKeyReused 422  the same Idempotency-Key with another request
 └── Unavailable            503  the database cannot be reached; with ``Retry-After``
DomainError itself is a 400 (a malformed request, e.g. an identity header sent twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


class DomainError(Exception):
    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra


class Unauthenticated(DomainError):
    status, title, slug = 401, "Unauthenticated", "unauthenticated"


class Forbidden(DomainError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(DomainError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(DomainError):
    status, title, slug = 409, "Conflict", "conflict"


class IdempotencyInFlight(Conflict):
    title, slug = "Request with this Idempotency-Key is in flight", "idempotency-in-flight"


class PayloadTooLarge(DomainError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class InvalidInput(DomainError):
    status, title, slug = 422, "Invalid input", "invalid-input"


class IdempotencyKeyReused(InvalidInput):
    title, slug = "Idempotency-Key reused", "idempotency-key-reused"


class Unavailable(DomainError):
    status, title, slug = 503, "Service unavailable", "service-unavailable"


def invalid(field: str, reason: str) -> InvalidInput:
    """A 422 about one field."""
    return InvalidInput(f"{field}: {reason}", errors=[FieldError(field, reason)])
