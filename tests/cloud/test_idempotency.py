"""Idempotency-Key on POST (IETF httpapi draft semantics), stored in the database."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from cloud.container import app_container
from cloud.db.models import IdempotencyRecord
from tests.cloud.conftest import Api, assert_problem, make_client


def _count_experiments(api: Api, headers: dict[str, str]) -> int:
    return len(api.get("/api/v1/experiments", headers=headers).json()["items"])


def test_replay_mismatch_and_scope(api: Api) -> None:
    owner = api.project()
    h = {**owner.headers(), "Idempotency-Key": "k-1"}
    body = {"project_id": owner.project_id, "name": "once", "tags": ["a"]}
    first = api.post("/api/v1/experiments", body, headers=h)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = api.post("/api/v1/experiments", body, headers=h)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"] == "application/json"
    assert _count_experiments(api, owner.headers()) == 1
    # Same key, different body: 422, nothing created.
    other = api.post("/api/v1/experiments", {**body, "name": "twice"}, headers=h)
    assert_problem(other, 422, "header.Idempotency-Key")
    # Same key on another path is a different request too.
    assert_problem(api.post(f"/api/v1/experiments/{first.json()['id']}/runs", headers=h), 422)
    assert _count_experiments(api, owner.headers()) == 1
    # Another principal may use the same key for its own request.
    editor = {**owner.headers("editor"), "X-User-Id": str(uuid.uuid4()), "Idempotency-Key": "k-1"}
    r = api.post("/api/v1/experiments", body, headers=editor)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert _count_experiments(api, owner.headers()) == 2


def test_errors_are_replayed_but_auth_failures_are_not(api: Api) -> None:
    owner = api.project()
    missing = str(uuid.uuid4())
    h = {**owner.headers(), "Idempotency-Key": "k-404"}
    r1 = api.post(f"/api/v1/experiments/{missing}/runs", headers=h)
    r2 = api.post(f"/api/v1/experiments/{missing}/runs", headers=h)
    assert r1.status_code == r2.status_code == 404 and r2.headers["idempotent-replayed"] == "true"
    # A 403 depends on the role the gateway granted, not on the request: once the caller's
    # role allows it, the same key goes through.
    exp = api.experiment(owner)
    viewer = {**owner.headers("viewer"), "Idempotency-Key": "k-role"}
    assert_problem(api.post(f"/api/v1/experiments/{exp}/runs", headers=viewer), 403)
    ok = api.post(
        f"/api/v1/experiments/{exp}/runs", headers={**owner.headers(), "Idempotency-Key": "k-role"}
    )
    assert ok.status_code == 201 and "idempotent-replayed" not in ok.headers
    # 401 is not stored: the same key works once credentials are right.
    ids = api.stack(owner)
    reading = [{"timestamp": datetime.now(UTC).isoformat(), "raw_value": 1}]
    assert_problem(api.ingest(ids, reading, token="bls_wrong", key="b-1"), 401)
    assert api.ingest(ids, reading, key="b-1").status_code == 202


def test_in_flight_is_409_with_retry_after(database_url: str) -> None:
    with make_client(database_url) as client:
        api = Api(client)
        owner = api.project()
        exp = api.experiment(owner)
        # Hold the run creation inside its transaction until the second request has been seen.
        from cloud.services import runs

        gate, entered = threading.Event(), threading.Event()
        original = runs.create

        def slow_create(*a, **kw):  # type: ignore[no-untyped-def]
            entered.set()
            assert gate.wait(10)
            return original(*a, **kw)

        runs.create = slow_create  # a fault at a precise moment: the first request is slow
        try:
            h = {**owner.headers(), "Idempotency-Key": "slow"}
            result: dict[str, int] = {}
            t = threading.Thread(
                target=lambda: result.setdefault(
                    "status", api.post(f"/api/v1/experiments/{exp}/runs", headers=h).status_code
                )
            )
            t.start()
            assert entered.wait(10)
            second = api.post(f"/api/v1/experiments/{exp}/runs", headers=h)
            body = assert_problem(second, 409)
            assert body["type"].endswith("idempotency-in-flight")
            assert second.headers["retry-after"] == "1"
            gate.set()
            t.join(10)
        finally:
            runs.create = original
        assert result["status"] == 201
        third = api.post(f"/api/v1/experiments/{exp}/runs", headers=h)
        assert third.status_code == 201 and third.headers["idempotent-replayed"] == "true"
        listed = api.get(f"/api/v1/experiments/{exp}/runs", headers=owner.headers()).json()
        assert len(listed["items"]) == 1


def test_keys_are_shared_across_processes_expire_and_leases_are_taken_over(
    database_url: str,
) -> None:
    with make_client(database_url) as a, make_client(database_url) as b:
        api_a, api_b = Api(a), Api(b)
        owner = api_a.project()
        body = {"project_id": owner.project_id, "name": "x"}
        h = {**owner.headers(), "Idempotency-Key": "shared"}
        first = api_a.post("/api/v1/experiments", body, headers=h)
        replay = api_b.post("/api/v1/experiments", body, headers=h)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]
        sessions = app_container(a.app).sessionmaker
        # Expired keys are forgotten: the request runs again.
        with sessions.begin() as db:
            db.execute(
                update(IdempotencyRecord).values(
                    expires_at=datetime.now(UTC) - timedelta(seconds=1)
                )
            )
        fresh = api_b.post("/api/v1/experiments", body, headers=h)
        assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
        assert fresh.json()["id"] != first.json()["id"]
        # A claim left in flight by a crashed process is taken over once its lease ends.
        h2 = {**owner.headers(), "Idempotency-Key": "crashed"}
        api_a.post("/api/v1/experiments", body, headers=h2)
        with sessions.begin() as db:
            db.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key == "crashed")
                .values(state="in_flight", locked_until=datetime.now(UTC) + timedelta(minutes=1))
            )
        assert_problem(api_b.post("/api/v1/experiments", body, headers=h2), 409)
        with sessions.begin() as db:
            db.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key == "crashed")
                .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert api_b.post("/api/v1/experiments", body, headers=h2).status_code == 201
        with sessions() as db:
            rec = db.scalars(
                select(IdempotencyRecord).where(IdempotencyRecord.key == "crashed")
            ).one()
            assert rec.state == "done"
        with sessions.begin() as db:
            db.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key == "shared")
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert _purge(a) == 1
        with sessions() as db:
            keys = set(db.scalars(select(IdempotencyRecord.key)))
        assert keys == {"crashed"}


def _purge(client: object) -> int:
    from cloud.app import _find_idempotency

    mw = _find_idempotency(client.app)  # type: ignore[attr-defined]
    assert mw is not None
    return mw.purge_expired()


def test_key_length_is_checked(api: Api) -> None:
    owner = api.project()
    r = api.post(
        "/api/v1/experiments",
        {"project_id": owner.project_id, "name": "x"},
        headers={**owner.headers(), "Idempotency-Key": "k" * 256},
    )
    assert_problem(r, 422, "header.Idempotency-Key")
    assert _count_experiments(api, owner.headers()) == 0


def test_tokens_never_rest_in_the_idempotency_store(api: Api) -> None:
    owner = api.project()
    body = {
        "project_id": owner.project_id,
        "name": "tc",
        "type": "t",
        "input_unit": "mV",
        "display_unit": "C",
        "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1}},
    }
    h = {**owner.headers(), "Idempotency-Key": "reg-1"}
    token = api.post("/api/v1/sensors", body, headers=h).json()["token"]
    sid = api.get("/api/v1/sensors", headers=owner.headers()).json()["items"][0]["id"]
    rotated = api.post(
        f"/api/v1/sensors/{sid}/rotate-token",
        headers={**owner.headers(), "Idempotency-Key": "rot-1"},
    ).json()["token"]
    with api.services.sessionmaker() as db:
        stored = b"".join(r.response_body or b"" for r in db.scalars(select(IdempotencyRecord)))
    assert token.encode() not in stored and rotated.encode() not in stored
    replay = api.post(
        f"/api/v1/sensors/{sid}/rotate-token",
        headers={**owner.headers(), "Idempotency-Key": "rot-1"},
    )
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["token"] is None
    # The rotation was not done twice: the token from the first answer still works.
    ids = api.stack(owner)
    ids = {**ids, "sensor_id": sid, "token": rotated}
    r = api.ingest(ids, [{"timestamp": datetime.now(UTC).isoformat(), "raw_value": 1}])
    assert r.status_code == 202


def test_a_replay_needs_the_same_authenticated_principal(database_url: str) -> None:
    """A stored answer is never handed to a caller who would be refused the request itself."""
    with make_client(database_url, gateway_secret="gw") as client:
        api = Api(client)
        gw = {"X-Gateway-Secret": "gw"}
        user = str(uuid.uuid4())
        r = api.post("/api/v1/projects", {"name": "p"}, headers={"X-User-Id": user, **gw})
        from tests.cloud.conftest import Identity

        owner = Identity(user, r.json()["id"])
        body = {"project_id": owner.project_id, "name": "secret plans"}
        h = {**owner.headers(), **gw, "Idempotency-Key": "k"}
        assert api.post("/api/v1/experiments", body, headers=h).status_code == 201
        # Without the gateway secret: refused, not replayed.
        no_gw = {**owner.headers(), "Idempotency-Key": "k"}
        assert_problem(api.post("/api/v1/experiments", body, headers=no_gw), 401)
        # Same user, lower role: the route's own answer (403), not the owner's 201.
        viewer = {**owner.headers("viewer"), **gw, "Idempotency-Key": "k"}
        assert_problem(api.post("/api/v1/experiments", body, headers=viewer), 403)
        # Malformed identity: 422 from the route.
        bad = {**h, "X-Project-Role": "root"}
        assert_problem(api.post("/api/v1/experiments", body, headers=bad), 422)
    with make_client(database_url) as client:
        api = Api(client)
        owner = api.project()
        ids = api.stack(owner)
        reading = [{"timestamp": datetime.now(UTC).isoformat(), "raw_value": 1}]
        assert api.ingest(ids, reading, key="t-1").status_code == 202
        api.post(f"/api/v1/sensors/{ids['sensor_id']}/revoke-token", headers=owner.headers())
        # A revoked token replays nothing: 401.
        assert_problem(api.ingest(ids, reading, key="t-1"), 401)


def test_conflicts_are_not_remembered(api: Api) -> None:
    owner = api.project()
    run = api.run(owner, api.experiment(owner))
    first = api.session(owner, run, 1)
    h = {**owner.headers(), "Idempotency-Key": "second-session"}
    url = f"/api/v1/runs/{run}/capture-sessions"
    assert_problem(api.post(url, {"ordinal_number": 2}, headers=h), 409)
    api.post(f"{url}/{first}/stop", headers=owner.headers())
    # The state changed: the same request with the same key now succeeds.
    r = api.post(url, {"ordinal_number": 2}, headers=h)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


def test_an_unrelated_bearer_token_does_not_disable_the_key(api: Api) -> None:
    """A user route is keyed by its user, whatever else the request carries (a client
    library that always sends some Authorization header, a proxy's token)."""
    owner = api.project()
    body = {"project_id": owner.project_id, "name": "once"}
    h = {**owner.headers(), "Idempotency-Key": "k-bearer", "Authorization": "Bearer unrelated"}
    first = api.post("/api/v1/experiments", body, headers=h)
    again = api.post("/api/v1/experiments", body, headers=h)
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert _count_experiments(api, owner.headers()) == 1
    # The same user and key without that header is the same principal: a replay too.
    plain = {**owner.headers(), "Idempotency-Key": "k-bearer"}
    assert api.post("/api/v1/experiments", body, headers=plain).json()["id"] == first.json()["id"]


def test_a_sensor_token_never_replays_a_users_answer(api: Api) -> None:
    """A stored answer is for the user the route authenticated, not for whoever holds the
    bearer token that happened to travel with the request."""
    owner = api.project()
    ids = api.stack(owner)
    body = {"project_id": owner.project_id, "name": "secret plans"}
    bearer = {"Authorization": f"Bearer {ids['token']}", "Idempotency-Key": "k-shared"}
    first = api.post("/api/v1/experiments", body, headers={**owner.headers(), **bearer})
    assert first.status_code == 201, first.text
    # The token alone, no identity headers, no gateway: the route's own 401.
    r = api.post("/api/v1/experiments", body, headers=bearer)
    assert_problem(r, 401)
    assert "idempotent-replayed" not in r.headers and "secret plans" not in r.text
    # Another project's user with the same token and key: its own request, not a replay.
    stranger = api.project()
    theirs = {"project_id": stranger.project_id, "name": "secret plans"}
    r = api.post("/api/v1/experiments", theirs, headers={**stranger.headers(), **bearer})
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert r.json()["project_id"] == stranger.project_id
