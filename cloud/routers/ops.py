from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The database answers."""

    def ping() -> None:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:  # any driver error means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": str(exc).splitlines()[0]}, status_code=503
        )
    return JSONResponse({"status": "ready", "database": "ok"})


@router.get("/metrics", include_in_schema=False)
def prometheus(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.stats.registry), media_type=CONTENT_TYPE_LATEST
    )
