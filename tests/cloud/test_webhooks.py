"""Webhooks, on SQLite and PostgreSQL, against a real HTTP receiver in a thread: each alarm
transition arrives signed (checked here by an implementation of the scheme of the test's own),
also after the receiver answered 500 and then refused connections for a while; ids are
unique per transition and a repeat carries the same id and body; a transition rolled back
owes nothing; bad URLs are 422 naming ``url``; only the owner manages webhooks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloud.container import app_container
from cloud.db import models
from cloud.services import journal, webhook_delivery, webhook_signing
from cloud.services.webhook_delivery import Job, Policy
from tests.cloud.conftest import Api, Identity, assert_problem, make_client
from tests.cloud.test_alarms import T0, _alarms, _readings, _rule, _send, _stack

#: Fast retries, so "down for a while" is a few seconds of a test.
FAST = {
    "webhook_every_s": 0.05,
    "webhook_retry_base_s": 0.05,
    "webhook_retry_max_s": 0.3,
}
#: A loaded machine: waits are deadlines, not speed claims.
DEADLINE_S = 60.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A webhook receiver on a fixed local port: ``answer`` is the status it gives; ``down()``
    closes its socket (connections are refused), ``up()`` listens again on the same port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.answer = 200
        self.location = ""
        self.got: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/benchlink"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.answer
                with receiver._lock:
                    receiver.got.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                        )
                    )
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.got if 200 <= r.answered < 300]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.got)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.up()
    yield r
    r.down()


def valid_signature(secret: str, got: Received) -> bool:
    """The receiver's check, written from the scheme (not the server's code): HMAC-SHA256 with
    the base64 key after ``whsec_`` over ``id.timestamp.body``; any one ``v1,`` entry."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = got.headers["benchlink-webhook-id"]
    stamp = got.headers["benchlink-webhook-timestamp"]
    signed = f"{msg_id}.{stamp}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1) for s in got.headers["benchlink-webhook-signature"].split()]
    return any(v == "v1" and hmac.compare_digest(sig, expected) for v, sig in given)


def wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"waited {DEADLINE_S:g} s for {what}"
        time.sleep(0.02)


def create(api: Api, who: Identity, url: str, role: str = "owner", **body: Any) -> Any:
    return api.post("/api/v1/webhooks", {"url": url, **body}, headers=who.headers(role))


def deliveries(api: Api, who: Identity, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params=params,
                headers=who.headers())  # fmt: skip
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["items"]))  # oldest first


def raise_ack_clear(api: Api, who: Identity) -> dict[str, str]:
    """An alarm raised (6 > 5), acknowledged, cleared (1): three transitions."""
    ids = _stack(api, who)
    assert _rule(api, who, ids["sensor_id"], kind="above", threshold=5).status_code == 201
    _send(api, ids, _readings([1, 6]))
    [alarm] = _alarms(api, who, ids["run_id"])
    r = api.post(f"/api/v1/alarms/{alarm['id']}/ack", {"note": "seen"}, headers=who.headers())
    assert r.status_code == 200, r.text
    _send(api, ids, _readings([1], start=T0 + timedelta(seconds=2)))
    [alarm] = _alarms(api, who, ids["run_id"])
    assert alarm["state"] == "cleared"
    return {**ids, "alarm_id": alarm["id"]}


def by_id(received: list[Received]) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = {}
    for got in received:
        out.setdefault(got.headers["benchlink-webhook-id"], []).append(got)
    return out


def test_each_transition_arrives_signed(database_url: str, receiver: Receiver) -> None:
    with make_client(database_url, **FAST) as client:
        api = Api(client)
        owner = api.project()
        r = create(api, owner, receiver.url)
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store"
        secret, hook = r.json()["secret"], r.json()["webhook"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
        assert hook["kinds"] == ["alarm.raised", "alarm.acknowledged", "alarm.cleared"]
        assert hook["secret_preview"] == f"{secret[:10]}…{secret[-4:]}"
        shown = api.get(f"/api/v1/webhooks/{hook['id']}", headers=owner.headers())
        assert secret not in shown.text and "secret" not in shown.json()

        ids = raise_ack_clear(api, owner)
        wait_for("three transitions", lambda: len(by_id(receiver.delivered())) == 3)
        got = receiver.delivered()
        bodies = [json.loads(g.body) for g in got]
        assert [b["kind"] for b in bodies] == ["alarm.raised", "alarm.acknowledged",
                                               "alarm.cleared"]  # fmt: skip
        now = time.time()
        for g, b in zip(got, bodies, strict=True):
            assert valid_signature(secret, g), g.headers
            assert abs(int(g.headers["benchlink-webhook-timestamp"]) - now) < 300
            assert g.headers["content-type"] == "application/json"
            assert g.path == "/hooks/benchlink"
            assert b["id"] == g.headers["benchlink-webhook-id"] and b["project"] == owner.project_id
            assert b["data"]["alarm_id"] == ids["alarm_id"]
            assert (
                b["data"]["sensor_id"] == ids["sensor_id"] and b["data"]["run_id"] == ids["run_id"]
            )
            assert datetime.fromisoformat(b["occurred_at"]).tzinfo is not None
        assert bodies[0]["data"]["value"] == 6 and bodies[0]["data"]["actor"] == "system:alarms"
        assert bodies[1]["data"]["note"] == "seen"
        assert bodies[1]["data"]["actor"] == f"user:{owner.user_id}"
        # A signature by another secret is not valid (the check above can fail).
        other, _ = webhook_signing.new_secret()
        assert not valid_signature(other, got[0])

        # The receiver answers before the deliverer records the attempt: wait for the record.
        wait_for("every attempt recorded", lambda: all(
            d["status"] == "delivered" for d in deliveries(api, owner, hook["id"])
        ))  # fmt: skip
        listed = deliveries(api, owner, hook["id"])
        assert [(d["kind"], d["status"], d["attempts"], d["last_status_code"]) for d in listed] == [
            ("alarm.raised", "delivered", 1, 200),
            ("alarm.acknowledged", "delivered", 1, 200),
            ("alarm.cleared", "delivered", 1, 200),
        ]
        assert [d["message_id"] for d in listed] == [b["id"] for b in bodies]
        counted = 'benchlink_webhook_attempts_total{outcome="delivered"} 3.0'
        wait_for("the counter", lambda: counted in client.get("/metrics").text)


def test_a_receiver_down_for_a_while_gets_every_transition(
    database_url: str, receiver: Receiver
) -> None:
    """500s first, then connections refused, then up: every transition arrives, each under
    its own id; a repeat of one carries its id and its body."""
    with make_client(database_url, **FAST) as client:
        api = Api(client)
        owner = api.project()
        receiver.answer = 500
        r = create(api, owner, receiver.url)
        secret, hook_id = r.json()["secret"], r.json()["webhook"]["id"]
        ids = _stack(api, owner)
        assert _rule(api, owner, ids["sensor_id"], kind="above", threshold=5).status_code == 201
        _send(api, ids, _readings([1, 6]))
        wait_for("retries answered 500", lambda: len(receiver.all()) >= 3)
        receiver.down()
        [alarm] = _alarms(api, owner, ids["run_id"])
        r = api.post(f"/api/v1/alarms/{alarm['id']}/ack", {"note": "x"}, headers=owner.headers())
        assert r.status_code == 200, r.text
        _send(api, ids, _readings([1], start=T0 + timedelta(seconds=2)))

        def refused() -> bool:
            first = deliveries(api, owner, hook_id)[0]
            return first["status"] == "pending" and "Connect" in (first["last_error"] or "")

        wait_for("an attempt refused", refused)
        [first, *_] = deliveries(api, owner, hook_id)
        assert first["attempts"] >= 3 and first["last_status_code"] is None
        assert sum(1 for d in deliveries(api, owner, hook_id) if d["status"] == "delivered") == 0

        receiver.answer = 200
        receiver.up()
        wait_for("every transition", lambda: len(by_id(receiver.delivered())) == 3)
        wait_for("all recorded delivered", lambda: all(
            d["status"] == "delivered" for d in deliveries(api, owner, hook_id)))  # fmt: skip
        everything = by_id(receiver.all())
        assert len(everything) == 3  # three transitions, three ids, however many attempts
        for copies in everything.values():
            assert len({c.body for c in copies}) == 1  # a repeat is the same message
            assert all(valid_signature(secret, c) for c in copies)
        kinds = sorted(json.loads(c[0].body)["kind"] for c in everything.values())
        assert kinds == ["alarm.acknowledged", "alarm.cleared", "alarm.raised"]
        listed = deliveries(api, owner, hook_id)
        assert listed[0]["attempts"] >= 4 and listed[0]["last_error"] is None
        assert 'benchlink_webhook_attempts_total{outcome="retry"}' in client.get("/metrics").text


def test_a_transition_rolled_back_sends_nothing(database_url: str, receiver: Receiver) -> None:
    with make_client(database_url, **FAST) as client:
        api = Api(client)
        owner = api.project()
        hook_id = create(api, owner, receiver.url).json()["webhook"]["id"]
        project = uuid.UUID(owner.project_id)

        # The outbox row lives and dies with the transaction of the event.
        sessions = app_container(client.app).sessionmaker
        with sessions() as db:
            journal.record(db, "alarm.raised", project_id=project, actor="test", value=1.0)
            db.rollback()
        count = select(func.count()).select_from(models.WebhookDelivery)
        with sessions() as db:
            assert db.scalar(count) == 0

        # Through the API: an ingest whose alarm is raised, then fails before its commit.
        ids = _stack(api, owner)
        assert _rule(api, owner, ids["sensor_id"], kind="above", threshold=5).status_code == 201

        def fail(_db: Any, _batch: Any) -> None:
            raise RuntimeError("the ingest fails after evaluating its alarms")

        listeners = app_container(client.app).ingest_tx_listeners
        listeners.append(fail)
        with contextlib.suppress(RuntimeError):
            r = api.ingest(ids, _readings([6]))
            assert r.status_code == 500, r.text
        listeners.remove(fail)
        assert _alarms(api, owner, ids["run_id"]) == []
        assert deliveries(api, owner, hook_id) == []

        # The same reading, committed this time: one transition, one message.
        _send(api, ids, _readings([6]))
        wait_for("the committed transition", lambda: len(receiver.delivered()) == 1)
        time.sleep(0.5)  # a few more ticks: nothing else is sent
        assert len(by_id(receiver.all())) == 1
        [d] = deliveries(api, owner, hook_id)
        assert d["kind"] == "alarm.raised" and d["status"] == "delivered"


def test_urls_kinds_and_roles(api: Api) -> None:
    owner = api.project()
    for url in ("ftp://example.com/x", "example.com/hook", "not a url", "http://",
                "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/h",
                "https://0.0.0.0/h", "http://[::ffff:169.254.169.254]/"):  # fmt: skip
        assert_problem(create(api, owner, url), 422, "url")
    assert_problem(create(api, owner, "https://example.com/h", kinds=["run.created"]), 422,
                   "kinds")  # fmt: skip
    assert_problem(create(api, owner, "https://example.com/h", kinds=[]), 422, "kinds")
    for role in ("viewer", "editor"):
        assert_problem(create(api, owner, "https://example.com/h", role=role), 403)
    r = create(api, owner, "https://example.com/h", kinds=["alarm.raised", "alarm.raised"])
    assert r.status_code == 201, r.text
    hook = r.json()["webhook"]
    assert hook["kinds"] == ["alarm.raised"] and hook["enabled"] is True
    url = f"/api/v1/webhooks/{hook['id']}"
    for role in ("viewer", "editor"):
        h = owner.headers(role)
        assert_problem(api.get("/api/v1/webhooks", headers=h), 403)
        assert_problem(api.get(url, headers=h), 403)
        assert_problem(api.patch(url, {"enabled": False}, headers=h), 403)
        assert_problem(api.request("DELETE", url, headers=h), 403)
        assert_problem(api.post(f"{url}/rotate-secret", headers=h), 403)
        assert_problem(api.get(f"{url}/deliveries", headers=h), 403)
    assert_problem(api.patch(url, {"url": "gopher://x"}, headers=owner.headers()), 422, "url")
    r = api.patch(url, {"enabled": False, "url": "http://receiver.lab:8080/in"},
                  headers=owner.headers())  # fmt: skip
    assert r.status_code == 200 and r.json()["enabled"] is False, r.text
    assert r.json()["url"] == "http://receiver.lab:8080/in"
    listed = api.get("/api/v1/webhooks", headers=owner.headers()).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert api.request("DELETE", url, headers=owner.headers()).status_code == 204
    assert_problem(api.get(url, headers=owner.headers()), 404)
    events = api.get("/api/v1/events", headers=owner.headers()).json()["items"]
    assert sorted(e["kind"] for e in events if e["kind"].startswith("webhook.")) == [
        "webhook.created", "webhook.deleted", "webhook.updated"
    ]  # fmt: skip


def test_a_disabled_webhook_is_owed_nothing_and_a_rotated_secret_signs_beside_the_old(
    database_url: str, receiver: Receiver
) -> None:
    with make_client(database_url, **FAST) as client:
        api = Api(client)
        owner = api.project()
        r = create(api, owner, receiver.url, enabled=False)
        old, hook_id = r.json()["secret"], r.json()["webhook"]["id"]
        ids = _stack(api, owner)
        assert _rule(api, owner, ids["sensor_id"], kind="above", threshold=5).status_code == 201
        _send(api, ids, _readings([6, 1]))  # raised and cleared while disabled
        assert deliveries(api, owner, hook_id) == []

        r = api.post(f"/api/v1/webhooks/{hook_id}/rotate-secret", headers=owner.headers())
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new != old and r.json()["webhook"]["previous_secret_until"] is not None
        r = api.patch(f"/api/v1/webhooks/{hook_id}", {"enabled": True}, headers=owner.headers())
        assert r.status_code == 200, r.text
        _send(api, ids, _readings([7], start=T0 + timedelta(seconds=2)))
        wait_for("the raise", lambda: len(receiver.delivered()) == 1)
        [got] = receiver.delivered()
        assert json.loads(got.body)["kind"] == "alarm.raised"
        assert len(got.headers["benchlink-webhook-signature"].split()) == 2
        assert valid_signature(new, got) and valid_signature(old, got)


def test_a_redirect_is_not_followed_and_a_delivery_is_given_up_on(
    database_url: str, receiver: Receiver
) -> None:
    with make_client(database_url, **FAST, webhook_give_up_s=0.5) as client:
        api = Api(client)
        owner = api.project()
        receiver.answer, receiver.location = 307, f"http://127.0.0.1:{receiver.port}/elsewhere"
        hook_id = create(api, owner, receiver.url).json()["webhook"]["id"]
        ids = _stack(api, owner)
        assert _rule(api, owner, ids["sensor_id"], kind="above", threshold=5).status_code == 201
        _send(api, ids, _readings([6]))
        wait_for("given up", lambda: deliveries(api, owner, hook_id)[0]["status"] == "failed")
        [d] = deliveries(api, owner, hook_id)
        assert d["last_status_code"] == 307 and "redirects are not followed" in d["last_error"]
        assert {g.path for g in receiver.all()} == {"/hooks/benchlink"}
        events = api.get("/api/v1/events", params={"kind": "webhook.delivery_failed"},
                         headers=owner.headers()).json()["items"]  # fmt: skip
        [event] = events
        assert event["payload"]["delivery_id"] == d["id"]
        assert event["payload"]["attempts"] == d["attempts"]


def test_signatures_follow_the_standard_webhooks_vector() -> None:
    """The scheme's published example: a receiver using its libraries verifies ours."""
    sig = webhook_signing.sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_backoff_doubles_is_capped_and_jittered() -> None:
    policy = Policy(retry_base_s=5, retry_max_s=3600)
    assert [webhook_delivery.backoff_s(n, policy, lambda: 1.0) for n in (1, 2, 3)] == [5, 10, 20]
    assert webhook_delivery.backoff_s(40, policy, lambda: 1.0) == 3600
    assert webhook_delivery.backoff_s(1, policy, lambda: 0.0) == 2.5


def test_a_link_local_address_is_not_called_at_delivery_time() -> None:
    job = Job(uuid.uuid4(), uuid.uuid4(), "http://169.254.169.254/latest", ["whsec_AAAA"],
              "m", b"{}")  # fmt: skip

    async def attempt() -> webhook_delivery.Outcome:
        async with httpx.AsyncClient() as client:
            return await webhook_delivery.send(client, job, Policy(timeout_s=1))

    outcome = asyncio.run(attempt())
    assert not outcome.ok and "link-local" in (outcome.error or "")
    assert outcome.status_code is None
