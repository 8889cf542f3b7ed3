"""The access matrix: every route the app serves (HTTP, SSE, WebSocket), taken from the app
itself, called by every kind of caller against a real server, and nothing else.

Callers: nobody, identity headers sent twice, a sensor token in place of a user, viewer,
editor, owner, the owner of another project addressing this one's objects, and -- on a server
with a gateway secret -- identity headers without the secret or with a wrong one. Telemetry
ingest: no token, a revoked, a rotated-away, another sensor's and another project's token.
A refusal is the declared 4xx and changes nothing in the database (a digest of every row); no
answer to one project's caller holds an id of the other; no 5xx.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloud.app import create_app
from cloud.settings import Settings
from tests.reliability.access_routes import EXPECT, Expect, undeclared
from tests.reliability.access_world import (
    World,
    bearer,
    build_world,
    call,
    close_clients,
    fingerprint,
)
from tests.reliability.conftest import LONG, Figures
from tests.support.cloud import CloudServer
from tests.support.services import postgres_database

ROLES = ("viewer", "editor", "owner")
RANK = {r: i for i, r in enumerate(ROLES)}
SECRET = "matrix-gateway-secret"
DATABASES = ["sqlite", "postgres"] if LONG else ["sqlite"]


def test_every_route_of_the_app_has_a_declared_expectation() -> None:
    missing, stale = undeclared(create_app(Settings(database_url="sqlite:///:memory:")))
    assert missing == [], f"routes with no access expectation in access_routes.EXPECT: {missing}"
    assert stale == [], f"expectations for routes the app no longer serves: {stale}"


def test_a_new_route_without_an_expectation_is_reported() -> None:
    app = create_app(Settings(database_url="sqlite:///:memory:"))

    @app.get("/api/v1/forgotten/{thing_id}")
    def forgotten(thing_id: str) -> dict[str, str]:
        return {}

    @app.websocket("/api/v1/forgotten-stream")
    async def forgotten_stream() -> None: ...

    missing, _ = undeclared(app)
    assert missing == [("GET", "/api/v1/forgotten/{thing_id}"), ("WS", "/api/v1/forgotten-stream")]


class Matrix:
    """Calls one server's routes and checks each answer; counts what it did."""

    def __init__(self, server: CloudServer, engine: Engine) -> None:
        self.server, self.engine = server, engine
        self.cases: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()

    def expect(
        self,
        kind: str,
        key: tuple[str, str],
        world: World,
        headers: list[tuple[str, str]],
        want: int,
        *,
        body_world: World | None = None,
        extra_query: str = "",
        forbidden_ids: list[str] | None = None,
    ) -> str:
        method, path = key
        e = EXPECT[key]
        before = fingerprint(self.engine) if want >= 400 else ""
        status, text = call(
            self.server.url,
            method,
            path,
            e,
            world.ids,
            headers,
            body_ids=(body_world or world).ids,
            extra_query=extra_query,
        )
        self.cases[kind] += 1
        self.statuses[status] += 1
        where = f"{kind}: {method} {path} -> {status} {text[:300]}"
        assert status == want, where
        if want >= 400:
            assert "problem" in text or status == 403 or text.startswith("{"), where
            assert fingerprint(self.engine) == before, f"a refused call wrote: {where}"
        for ident in forbidden_ids or ():
            assert ident not in text, f"another project's id {ident} in: {where}"
        return text


def identity(world: World, role: str = "owner") -> list[tuple[str, str]]:
    return list(world.headers(role).items())


def refusals(m: Matrix, a: World, b: World) -> None:
    """Everything that must be refused, on the shared worlds (before anything succeeds)."""
    for key, e in EXPECT.items():
        if e.who == "public":
            m.expect("public", key, a, [], 200, forbidden_ids=a.own_ids() + b.own_ids())
            continue
        if e.who == "sensor":
            sensor_tokens(m, key, a, b)
            continue
        m.expect("no identity", key, a, [], 401)
        m.expect("sensor token as identity", key, a, bearer(a.ids), 401)
        twice = [*identity(a, "viewer"), ("X-Project-Role", "owner")]
        m.expect("identity headers twice", key, a, twice, 400)
        if e.who == "identity":
            for role in ROLES:
                if RANK[role] < RANK[e.role]:
                    m.expect(f"{role} below {e.role}", key, a, identity(a, role), 403)
        foreign(m, key, e, a, b)
        if e.who == "stream":
            tickets(m, key, a, b)


def foreign(m: Matrix, key: tuple[str, str], e: Expect, a: World, b: World) -> None:
    """b's owner addressing a's objects: 404 (or as declared), nothing of a in the answer."""
    if e.foreign is None:
        return
    if e.foreign == "list":  # no id to address: b sees only b's
        m.expect("other project", key, b, identity(b), 200, forbidden_ids=a.own_ids())
    elif e.foreign == "per_item":
        text = m.expect("other project", key, a, identity(b), 200, body_world=a)
        assert '"status":404' in text.replace(" ", ""), text
    else:
        m.expect("other project", key, a, identity(b), e.foreign, forbidden_ids=[a.owner])


def sensor_tokens(m: Matrix, key: tuple[str, str], a: World, b: World) -> None:
    crossed = World(a.url, a.owner, {**b.ids, "run_id": a.ids["run_id"]})
    crossed.ids["session_id"] = a.ids["session_id"]
    for kind, world, headers, want in (
        ("no token", a, [], 401),
        ("identity headers, no token", a, identity(a), 401),
        ("token sent twice", a, bearer(a.ids) + bearer(a.ids, "token2"), 400),
        ("revoked token", _as(a, "sensor3_id"), bearer(a.ids, "token3_revoked"), 401),
        ("rotated-away token", _as(a, "sensor2_id"), bearer(a.ids, "token2_old"), 401),
        ("another sensor's token", a, bearer(a.ids, "token2"), 403),
        ("another project's token", a, bearer(b.ids), 403),
        ("own token, another project's run", crossed, bearer(b.ids), 404),
    ):
        m.expect(kind, key, world, headers, want)


def _as(world: World, sensor_key: str) -> World:
    return World(world.url, world.owner, {**world.ids, "sensor_id": world.ids[sensor_key]})


def tickets(m: Matrix, key: tuple[str, str], a: World, b: World) -> None:
    ticket = ticket_for(m, a)
    m.expect("stream ticket", key, a, [], 200, extra_query=f"ticket={ticket}")
    m.expect("stream ticket used twice", key, a, [], 401, extra_query=f"ticket={ticket}")
    other = ticket_for(m, b)
    m.expect("other project's ticket", key, a, [], 404, extra_query=f"ticket={other}")
    m.expect("forged ticket", key, a, [], 401, extra_query=f"ticket={ticket[:-4]}AAAA")


def ticket_for(m: Matrix, world: World) -> str:
    text = m.expect("ticket", ("POST", "/api/v1/stream-tickets"), world, identity(world), 201)
    import json

    return str(json.loads(text)["ticket"])


def successes(m: Matrix, a: World, b: World) -> None:
    """Every allowed role gets the declared answer, holding nothing of the other project.
    Writes go to a scratch project; one that changes its object for good (archive, revoke,
    stop) gets a project of its own, as does every write in the long form."""
    scratch = build_world(m.server.url)
    for key, e in EXPECT.items():
        if e.who == "public":
            continue
        if e.who == "sensor":
            m.expect("sensor token", key, a, bearer(a.ids), e.ok, forbidden_ids=b.own_ids())
            continue
        for role in ROLES:
            if e.who == "identity" and RANK[role] < RANK[e.role]:
                continue
            world = a if e.body is None else scratch
            if e.body is not None and (e.fresh or LONG):
                world = build_world(m.server.url)
            m.expect(role, key, world, identity(world, role), e.ok, forbidden_ids=b.own_ids())


def gateway(m: Matrix, a: World) -> None:
    """With a gateway secret configured, identity headers without it (or with a wrong one)
    are refused everywhere; sensor tokens and public routes do not need it."""
    for key, e in EXPECT.items():
        plain = [h for h in identity(a) if h[0] != "X-Gateway-Secret"]
        if e.who == "public":
            m.expect("public, gateway on", key, a, [], 200)
        elif e.who == "sensor":
            m.expect("sensor token, gateway on", key, a, bearer(a.ids), e.ok)
        else:
            m.expect("gateway secret missing", key, a, plain, 401)
            wrong = [*plain, ("X-Gateway-Secret", SECRET + "x")]
            m.expect("gateway secret wrong", key, a, wrong, 401)
            if e.body is None:
                m.expect("gateway secret right", key, a, identity(a), e.ok)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        # In memory (tmpfs) where there is one: this is about who may do what, not about
        # durability, and an fsync per write on a busy disk made it most of the run.
        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
            yield f"sqlite:///{Path(tmp) / 'cloud.db'}"
    else:
        with postgres_database() as url:
            yield url


def test_the_access_matrix(database_url: str, tmp_path: Path, figures: Figures) -> None:
    from cloud.db.engine import make_engine

    engine = make_engine(database_url)
    open_server = CloudServer(database_url, log_path=tmp_path / "open.log")
    gated = CloudServer(
        database_url, env={"BENCHLINK_GATEWAY_SECRET": SECRET}, log_path=tmp_path / "gated.log"
    )
    try:
        with open_server, gated:
            m = Matrix(open_server, engine)
            a, b = build_world(open_server.url), build_world(open_server.url)
            refusals(m, a, b)
            successes(m, a, b)
            g = Matrix(gated, engine)
            gateway(g, build_world(gated.url, {"X-Gateway-Secret": SECRET}))
    finally:
        close_clients()
        engine.dispose()
    cases = m.cases + g.cases
    statuses = m.statuses + g.statuses
    assert not [s for s in statuses if s >= 500], statuses
    figures.record(
        "access",
        f"access matrix, {len(EXPECT)} routes ({database_url.split(':')[0]})",
        requests=sum(cases.values()),
        refused=sum(n for s, n in statuses.items() if s >= 400),
        cross_project_reads=0,
        http_5xx=0,
        statuses={str(k): v for k, v in sorted(statuses.items())},
    )
