"""Reprocessing a sensor's history (``POST /sensors/{sensor_id}/reprocess``) and the jobs
that do it (``/jobs/{job_id}``, ``/sensors/{sensor_id}/jobs``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from cloud.container import container
from cloud.db.uow import after_commit
from cloud.deps import DbSession, Editor, Viewer
from cloud.schemas import Page
from cloud.schemas_jobs import JobOut, JobStatus, ReprocessIn
from cloud.services import reprocess

router = APIRouter(prefix="/api/v1", tags=["reprocessing"])


@router.post(
    "/sensors/{sensor_id}/reprocess",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"description": "a job reprocesses this sensor under that version already"}},
)
def reprocess_sensor(
    sensor_id: uuid.UUID, body: ReprocessIn, request: Request, db: DbSession, caller: Editor
) -> JobOut:
    """Re-derive the sensor's stored readings (of ``run_id``, stamped in [``since``,
    ``until``): all by default) from their raw values under ``profile_version``, in the
    background. The answer is the job (``GET /jobs/{job_id}`` for its progress). Each
    reading keeps its first value too: reads take the sensor's current version by default
    and ``?profile_version=`` for another. Readings stored after this call are not in the
    job (ingest converted them with the version effective at their timestamps)."""
    job = reprocess.request(db, caller, sensor_id, body)
    runner = container(request).reprocess_runner
    after_commit(db, runner.wake.set)  # this process's runner starts it at once
    return reprocess.to_out(job)


@router.get("/sensors/{sensor_id}/jobs")
def list_sensor_jobs(
    sensor_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
) -> Page[JobOut]:
    """The sensor's reprocessing jobs, newest first, whoever started them (``status``
    narrows to one state, e.g. ``running``)."""
    rows, nxt = reprocess.list_for_sensor(db, caller, sensor_id, status, limit, cursor)
    return Page(items=[reprocess.to_out(j) for j in rows], next_cursor=nxt)


@router.get("/jobs/{job_id}")
def get_job(job_id: uuid.UUID, db: DbSession, caller: Viewer) -> JobOut:
    """A job: its status, progress (``done`` of ``total`` readings), where it got to
    (``cursor``: the timestamp of the last reading gone through) and its counts."""
    return reprocess.to_out(reprocess.get(db, caller, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: uuid.UUID, db: DbSession, caller: Editor) -> JobOut:
    """Stop a queued or running job. Chunks committed stay (each reading in them has its
    value under the job's version; the others keep theirs), and the answer says how far it
    got. A job that ended already is answered as it is, unchanged."""
    return reprocess.to_out(reprocess.cancel(db, caller, job_id))
