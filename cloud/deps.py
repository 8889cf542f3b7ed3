"""Request dependencies: the database transaction and who is calling.

Who a caller is (``Principal``, ``Role``, ``User``) lives in ``cloud.identity``, so services
need nothing of FastAPI; they are imported here for the routes. Routes read like the API they
serve::

    def create(body: ExperimentIn, db: DbSession, caller: Editor) -> ExperimentOut: ...
"""

from __future__ import annotations

import hmac
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from cloud import idempotency
from cloud.container import container
from cloud.db.uow import per_request
from cloud.errors import DomainError, FieldError, Forbidden, InvalidInput, Unauthenticated, invalid
from cloud.identity import Principal, Role, User
from cloud.settings import Settings

#: Headers that say who is calling. Each may appear once: with two values, a gateway that
#: appends its own after the client's would be read as the client's (the first one wins).
IDENTITY_HEADERS = (
    "X-User-Id",
    "X-Project-Id",
    "X-Project-Role",
    "X-Gateway-Secret",
    "Authorization",
)
_IDENTITY_LOWER = {name.lower().encode("latin-1"): name for name in IDENTITY_HEADERS}


def get_settings(request: Request) -> Settings:
    return container(request).settings


def db_session(request: Request) -> Iterator[Session]:
    services = container(request)
    reads_only = request.method in ("GET", "HEAD")
    yield from per_request(services.read_sessionmaker if reads_only else services.sessionmaker)


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": commit right after the route returns, before the response goes out.
DbSession = Annotated[Session, Depends(db_session, scope="function")]


def refuse_repeated_identity(conn: HTTPConnection) -> None:
    """400 when an identity header is sent more than once (HTTP and streams alike)."""
    seen: set[bytes] = set()
    repeated: list[str] = []
    for raw_name, _ in conn.scope.get("headers", ()):
        name = raw_name.lower()
        if name in _IDENTITY_LOWER:
            if name in seen and _IDENTITY_LOWER[name] not in repeated:
                repeated.append(_IDENTITY_LOWER[name])
            seen.add(name)
    if repeated:
        raise DomainError(
            f"identity header sent more than once: {', '.join(repeated)}; send each once",
            errors=[FieldError(f"header.{name}", "sent more than once") for name in repeated],
        )


def _check_gateway(request: HTTPConnection, settings: Settings) -> None:
    refuse_repeated_identity(request)
    if settings.gateway_secret is None:
        return
    given = request.headers.get("x-gateway-secret", "")
    if not hmac.compare_digest(given.encode(), settings.gateway_secret.encode()):
        raise Unauthenticated("identity headers are accepted only from the gateway")


def _uuid_header(request: HTTPConnection, name: str, *, required: bool) -> uuid.UUID | None:
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise Unauthenticated(f"missing {name} header")
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise invalid(f"header.{name}", "must be a UUID") from None


def _role_header(request: HTTPConnection, *, required: bool) -> Role | None:
    raw = request.headers.get("X-Project-Role")
    if raw is None or raw.strip() == "":
        if required:
            raise Unauthenticated("missing X-Project-Role header")
        return None
    try:
        return Role[raw.strip().lower()]
    except KeyError:
        raise invalid("header.X-Project-Role", "must be one of owner, editor, viewer") from None


def identify(request: HTTPConnection, settings: Settings) -> Principal:
    """The caller from the gateway's headers (HTTP requests and WebSockets alike)."""
    _check_gateway(request, settings)
    errors = []
    parsed: dict[str, object] = {}
    # Report every bad header at once; absence (401) wins over malformation (422).
    for name, parse in (
        ("X-User-Id", lambda: _uuid_header(request, "X-User-Id", required=True)),
        ("X-Project-Id", lambda: _uuid_header(request, "X-Project-Id", required=True)),
        ("X-Project-Role", lambda: _role_header(request, required=True)),
    ):
        try:
            parsed[name] = parse()
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput("malformed identity headers", errors=errors)
    return Principal(
        user_id=parsed["X-User-Id"],  # type: ignore[arg-type]
        project_id=parsed["X-Project-Id"],  # type: ignore[arg-type]
        role=parsed["X-Project-Role"],  # type: ignore[arg-type]
    )


def require(role: Role) -> Callable[[Request, Settings], Principal]:
    def dependency(request: Request, settings: SettingsDep) -> Principal:
        principal = identify(request, settings)
        if principal.role < role:
            raise Forbidden(
                f"this action needs the {role.name} role; the caller is {principal.role.name}"
            )
        # The role is part of the key's scope: a viewer never replays what an owner was told.
        idempotency.claim(
            request, f"user:{principal.user_id}:{principal.project_id}:{principal.role.name}"
        )
        return principal

    return dependency


def current_user(request: Request, settings: SettingsDep) -> User:
    _check_gateway(request, settings)
    user_id = _uuid_header(request, "X-User-Id", required=True)
    assert user_id is not None
    user = User(
        user_id=user_id,
        project_id=_uuid_header(request, "X-Project-Id", required=False),
        role=_role_header(request, required=False),
    )
    idempotency.claim(
        request,
        f"user:{user.user_id}:{user.project_id or '-'}:{user.role.name if user.role else '-'}",
    )
    return user


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Editor = Annotated[Principal, Depends(require(Role.editor))]
Owner = Annotated[Principal, Depends(require(Role.owner))]
CurrentUser = Annotated[User, Depends(current_user)]


def same_project(principal: Principal, body_project_id: uuid.UUID | None) -> None:
    """A body ``project_id`` other than ``X-Project-Id`` is refused (403)."""
    if body_project_id is not None and body_project_id != principal.project_id:
        raise Forbidden("project_id in the body differs from X-Project-Id")


#: Endpoints that read terms of their own from the query string (run search's
#: ``param.NAME=VALUE``): :func:`takes_free_query` puts them here.
FREE_QUERY: set[Callable[..., Any]] = set()


def takes_free_query(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an endpoint whose query string holds names of the caller's choosing (it checks
    them itself: an unknown term is its own 422)."""
    FREE_QUERY.add(endpoint)
    return endpoint


async def known_query_parameters(request: Request) -> None:
    """Refuse (422) a query parameter the endpoint does not take, or one that takes a single
    value given more than once. A misspelt filter (``?sensor=`` for ``?sensor_id=``) would
    otherwise be ignored, and ``?name=a&name=b`` read as ``b``: the answer would hold other
    than was asked for while looking like what was asked for."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or getattr(route, "endpoint", None) in FREE_QUERY:
        return
    # Worked out once per route and kept on it (a route is not hashable, so no mapping):
    # each name the route takes, and whether it takes several values.
    taken: dict[str, bool] | None = getattr(route, "_benchlink_query_names", None)
    if taken is None:
        taken = dict(_query_names(dependant))
        setattr(route, "_benchlink_query_names", taken)  # noqa: B010
    params = request.query_params
    for name in params:
        many = taken.get(name)
        if many is None:
            offered = ", ".join(sorted(taken)) or "none"
            raise invalid(
                name or "(empty name)", f"not a parameter of this endpoint (it takes: {offered})"
            )
        if not many and len(params.getlist(name)) > 1:
            raise invalid(name, f"given {len(params.getlist(name))} times; it takes one value")


def _query_names(dependant: Any) -> Iterator[tuple[str, bool]]:
    for param in dependant.query_params:
        yield param.alias, _takes_many(param.field_info.annotation)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


def _takes_many(annotation: Any) -> bool:
    """Whether a parameter's type is a list (``?tag=a&tag=b``), through Optional/Annotated."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin is typing.Annotated:
        return _takes_many(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_takes_many(arg) for arg in typing.get_args(annotation))
    return False
