"""A project built through the public API of a running cloud, with every kind of object the
access matrix addresses; calls of any route (HTTP, SSE, WebSocket) reduced to a status and a
text; and a fingerprint of everything the database holds, to prove a refusal wrote nothing."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import Engine, select
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.reliability.access_routes import EXPECT, Expect, Ids

Headers = Sequence[tuple[str, str]]
#: Tables a refused request may touch without storing anything: the replay cache of
#: Idempotency-Key, spent stream tickets.
BOOKKEEPING = {"idempotency_keys", "stream_ticket_uses"}


@dataclass
class World:
    url: str
    owner: str
    ids: Ids
    #: the gateway secret, sent with every identity header (when the server wants one)
    gateway: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str = "owner") -> dict[str, str]:
        return {
            "X-User-Id": self.owner,
            "X-Project-Id": self.ids["project_id"],
            "X-Project-Role": role,
            **self.gateway,
        }

    def own_ids(self) -> list[str]:
        """The ids only this project's callers may see."""
        keys = ("project_id", "sensor_id", "sensor2_id", "experiment_id", "run_id", "session_id")
        return [self.ids[k] for k in keys]


def build_world(url: str, gateway: dict[str, str] | None = None) -> World:
    gw = gateway or {}
    owner = str(uuid.uuid4())
    c = _client(url)
    h0 = {"X-User-Id": owner, **gw}

    def post(path: str, body: Any = None) -> dict[str, Any]:
        r = c.post(path, json=body, headers=h0)
        assert r.status_code in (200, 201, 202), f"{path}: {r.status_code} {r.text}"
        out: dict[str, Any] = r.json()
        return out

    project = post("/api/v1/projects", {"name": "matrix"})["id"]
    h0.update({"X-Project-Id": project, "X-Project-Role": "owner"})
    sensors = []
    for n in range(3):
        body = {
            "project_id": project,
            "name": f"s{n}",
            "type": "thermocouple",
            "input_unit": "mV",
            "display_unit": "C",
            "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1}},
        }
        made = post("/api/v1/sensors", body)
        sensors.append((made["sensor"]["id"], made["token"]))
    exp = post("/api/v1/experiments", {"project_id": project, "name": "e"})["id"]
    run = post(f"/api/v1/experiments/{exp}/runs")["id"]
    session = post(
        f"/api/v1/runs/{run}/capture-sessions", {"ordinal_number": 1, "status": "running"}
    )["id"]
    draft_run = post(f"/api/v1/experiments/{exp}/runs")["id"]
    draft = post(
        f"/api/v1/runs/{draft_run}/capture-sessions", {"ordinal_number": 1, "status": "draft"}
    )["id"]
    archived = post("/api/v1/experiments", {"project_id": project, "name": "old"})["id"]
    post(f"/api/v1/experiments/{archived}/archive")
    post(f"/api/v1/runs/{run}/metrics", {"metrics": [{"name": "loss", "step": 1, "value": 1}]})
    # Sensor 2's first token is rotated away, sensor 3's revoked.
    rotated = post(f"/api/v1/sensors/{sensors[1][0]}/rotate-token")["token"]
    post(f"/api/v1/sensors/{sensors[2][0]}/revoke-token")
    ids = {
        "project_id": project,
        "sensor_id": sensors[0][0],
        "token": sensors[0][1],
        "sensor2_id": sensors[1][0],
        "token2_old": sensors[1][1],
        "token2": rotated,
        "sensor3_id": sensors[2][0],
        "token3_revoked": sensors[2][1],
        "experiment_id": exp,
        "run_id": run,
        "session_id": session,
        "draft_run": draft_run,
        "draft": draft,
        "archived": archived,
        "nonce": uuid.uuid4().hex[:8],
        "now": datetime.now(UTC).isoformat(),
        "portal_file": "app.js",
        "docs_file": "swagger-ui.css",
    }
    world = World(url, owner, ids, gw)
    ingest = EXPECT[("POST", "/api/v1/telemetry")]
    status, text = call(world.url, "POST", "/api/v1/telemetry", ingest, ids, bearer(ids))
    assert status == 202, text
    return world


def bearer(ids: Ids, token: str = "token") -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {ids[token]}")]


def target(path: str, e: Expect, ids: Ids) -> str:
    values = {**ids, **{param: ids[key] for param, key in e.use}}
    url = path.format(**{k: quote(v, safe="") for k, v in values.items()})
    return url + ("?" + e.query.format(**values) if e.query else "")


def call(
    base: str,
    method: str,
    path: str,
    e: Expect,
    ids: Ids,
    headers: Headers,
    *,
    body_ids: Ids | None = None,
    extra_query: str = "",
) -> tuple[int, str]:
    """The status and text of one call. A stream that subscribed counts as 200 (its text is
    the ``subscribed`` message); a refused one gives the refusal's status and problem."""
    url = target(path, e, ids)
    if extra_query:
        url += ("&" if "?" in url else "?") + extra_query
    if method == "WS":
        return _websocket(base, url, headers)
    c = _client(base)
    # A fresh nonce per call: names and ordinals the body creates are new every time.
    body = e.body({**(body_ids or ids), "nonce": uuid.uuid4().hex[:8]}) if e.body else None
    req = c.build_request(method, url, json=body, headers=list(headers))
    r = c.send(req, stream=True)
    try:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return r.status_code, _first_event(r)
        r.read()
        return r.status_code, r.text
    finally:
        r.close()


_CLIENTS: dict[str, httpx.Client] = {}


def _client(base: str) -> httpx.Client:
    """One client per server: making one costs an SSL context (some 100 ms), more than the
    calls themselves. Closed by :func:`close_clients`."""
    if base not in _CLIENTS:
        _CLIENTS[base] = httpx.Client(base_url=base, timeout=30)
    return _CLIENTS[base]


def close_clients() -> None:
    while _CLIENTS:
        _CLIENTS.popitem()[1].close()


def _first_event(r: httpx.Response) -> str:
    lines = []
    for line in r.iter_lines():
        if line == "" and any(x.startswith("data:") for x in lines):
            break
        lines.append(line)
    return "\n".join(lines)


def _websocket(base: str, url: str, headers: Headers) -> tuple[int, str]:
    try:
        with connect(
            base.replace("http://", "ws://") + url,
            additional_headers=list(headers),
            open_timeout=30,
        ) as ws:
            first = ws.recv(timeout=30)
            return 200, first if isinstance(first, str) else first.decode()
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode(errors="replace")


def fingerprint(engine: Engine) -> str:
    """A digest of every row of every table the product stores data in."""
    from cloud.db.models import Base

    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in BOOKKEEPING:
                continue
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            digest.update(f"{table.name}:{rows!r}".encode())
    return digest.hexdigest()
