"""``GET /api/v1/time``: the server's clock, for edges estimating their offset (NTP-style).

Not anonymous, though it leaks nothing: nothing in the API is, so a scan of the service learns
nothing and an open endpoint never has to be defended on its own. Every caller that needs it
already holds a credential: an edge's token (the daemon), a sensor's token (a device that
stamps its own readings and sends them straight to the API), or the gateway's identity
headers (a user, any role). Tokens found are remembered (as telemetry's gate does), so a
sample costs no database round trip; the time is taken around the check, not after it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from cloud.container import container
from cloud.deps import get_settings, identify
from cloud.edge_schemas import ServerTime, now_us
from cloud.errors import Unauthenticated
from cloud.services.tokens import TokenGate, bearer_token, hash_token

router = APIRouter(prefix="/api/v1", tags=["operations"])


def _gate(request: Request) -> TokenGate:
    return container(request).clock_gate


@router.get("/time")
async def server_time(request: Request) -> ServerTime:
    """The server's time in microseconds since 1970 (UTC). Needs an edge's or a sensor's
    token (``Authorization: Bearer``) or the identity headers."""
    received = now_us()
    token = bearer_token(request.headers.get("authorization"))
    if token is not None:
        gate, token_hash = _gate(request), hash_token(token)
        if not (gate.remembered(token_hash) or await run_in_threadpool(gate.lookup, token_hash)):
            raise Unauthenticated(
                "unknown, rotated or revoked token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
    else:
        identify(request, get_settings(request))
    return ServerTime(time_us=now_us(), received_us=received)
