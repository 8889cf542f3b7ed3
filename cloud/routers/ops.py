from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from cloud.container import container
from cloud.db.uow import read_connection
from cloud.migrate import current_revisions, schema_gap, shown_revisions

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The database answers and its schema is at this version's migration head. One
    read of ``alembic_version`` per probe, as cheap as a ping, so nothing is cached."""
    engine = container(request).engine

    def schema() -> frozenset[str]:
        with read_connection(engine) as conn:
            return current_revisions(conn)

    try:
        current = await run_in_threadpool(schema)
    except Exception as exc:  # any driver error means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": str(exc).splitlines()[0]}, status_code=503
        )
    gap = schema_gap(current)
    if gap is not None:
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "ok",
                "schema": shown_revisions(current),
                "detail": f"{gap}: run the migrations (benchlink-cloud migrate)",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "database": "ok", "schema": "head"})


@router.get("/metrics", include_in_schema=False)
def prometheus(request: Request) -> Response:
    return Response(
        generate_latest(container(request).stats.registry), media_type=CONTENT_TYPE_LATEST
    )
