"""/v1/jobs: distillation jobs, their events, artifacts and report."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select

from app.db import get_sessionmaker
from app.deps import JobDep, PolledJobDep, SessionDep, SettingsDep, TenantDep
from app.errors import NotFound
from app.lifecycle import cancel_job, create_job
from app.models import Artifact, Job, JobEvent
from app.object_store import ObjectStorage
from app.routes.common import (
    ARTIFACT_RESPONSE,
    EVENT_STREAM_RESPONSE,
    MAX_CURSOR,
    MAX_LIMIT,
    EventCursor,
    LastEventId,
    errors,
    paginate,
)
from app.stores import open_storage
from contract import TERMINAL, JobStatus
from contract.wire import ArtifactsPage, EventPublic, EventsPage, JobCreate, JobPublic, Page, Report

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    responses=errors(400, 404, 409, 429),
    summary="Create a distillation job",
    operation_id="jobs_create",
)
def post_job(
    body: JobCreate,
    session: SessionDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> Job:
    """Queue a job; 409 while an input is validating, 422 if an input is invalid or the job impossible."""
    return create_job(session, tenant, body, idempotency_key)


@router.get("", response_model=Page[JobPublic], responses=errors(), summary="List jobs", operation_id="jobs_list")
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    after: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> dict:
    """The tenant's jobs, newest first, optionally by status."""
    query = select(Job).where(Job.tenant_id == tenant.id)
    if status:
        query = query.where(Job.status == status)
    rows, next_after = paginate(session, query, Job.id, limit, after)
    return {"data": rows, "next_after": next_after}


@router.get("/{job_id}", response_model=JobPublic, responses=errors(404), summary="Get a job", operation_id="jobs_get")
async def get_job(job: PolledJobDep) -> Job:
    """One job with its progress and latest metrics."""
    return job  # loaded and detached by the dependency; serialising it needs no database


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses=errors(404, 409),
    summary="Cancel a job",
    operation_id="jobs_cancel",
)
def post_cancel(job: JobDep, session: SessionDep) -> Job:
    """Cancel a queued or running job; 409 once it has finished."""
    return cancel_job(session, job)


def _events_after(job_id: str, after: int, limit: int) -> list[JobEvent]:
    with get_sessionmaker()() as session:
        return list(
            session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.id > after)
                .order_by(JobEvent.id)
                .limit(limit)
            )
        )


def _job_status(job_id: str) -> str | None:
    with get_sessionmaker()() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


async def _event_stream(job_id: str, after: int):
    """Server-sent events: everything after `after`, live, until the job has ended and all is sent."""
    while True:
        events = await asyncio.to_thread(_events_after, job_id, after, 500)
        for event in events:
            after = event.id
            payload = EventPublic.model_validate(event).model_dump_json()
            yield f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"
        if not events:
            if await asyncio.to_thread(_job_status, job_id) in TERMINAL:
                # One more read: events written just before the status changed must not be lost.
                if not await asyncio.to_thread(_events_after, job_id, after, 1):
                    yield "event: end\ndata: {}\n\n"
                    return
            else:
                yield ": keep-alive\n\n"
                await asyncio.sleep(0.5)


@router.get(
    "/{job_id}/events",
    response_model=EventsPage,
    responses=errors(404),
    summary="A job's events",
    operation_id="jobs_events_list",
)
def get_events(
    request: Request,
    job: JobDep,
    session: SessionDep,
    after: EventCursor = "0",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last_event_id: LastEventId = None,
):
    """Events in order, a page at a time (live: jobs_events_stream; `Accept: text/event-stream` here too)."""
    if "text/event-stream" in request.headers.get("accept", ""):
        return _stream(job.id, after, last_event_id)
    rows = list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job.id, JobEvent.id > int(after))
            .order_by(JobEvent.id)
            .limit(limit + 1)
        )
    )
    next_after = str(rows[limit - 1].id) if len(rows) > limit else None
    return {"data": rows[:limit], "next_after": next_after}


def _stream(job_id: str, after: str, last_event_id: int | None) -> StreamingResponse:
    # Both values are bounded by the schema: a bad one answered 422 before the stream's 200.
    start = last_event_id if last_event_id is not None else int(after)
    return StreamingResponse(
        _event_stream(job_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={**errors(404), 200: EVENT_STREAM_RESPONSE},
    summary="A job's events, live (server-sent events)",
    operation_id="jobs_events_stream",
)
def stream_events(job: JobDep, after: EventCursor = "0", last_event_id: LastEventId = None) -> StreamingResponse:
    """Every event after `after` as it happens, then an `end` event once the job has ended and all is sent."""
    return _stream(job.id, after, last_event_id)


@router.get(
    "/{job_id}/artifacts",
    response_model=ArtifactsPage,
    responses=errors(404),
    summary="List a job's artifacts",
    operation_id="jobs_artifacts_list",
)
def list_artifacts(job: JobDep, session: SessionDep) -> dict:
    """Files the job produced, with sizes and sha256."""
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name)).all()
    return {"data": rows, "next_after": None}


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={
        **errors(404),
        200: ARTIFACT_RESPONSE,
        307: {"description": "With DISTILLERY_STORAGE_PRESIGN: a presigned URL of the object store to fetch it from"},
    },
    summary="Download an artifact",
    operation_id="jobs_artifacts_get",
)
def download_artifact(job: JobDep, name: str, session: SessionDep, settings: SettingsDep) -> Response:
    """The artifact's bytes."""
    row = session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.name == name))
    if row is None:
        raise NotFound(f"job {job.id} has no artifact named {name!r}")
    storage = open_storage(settings)
    headers = {"X-Checksum-Sha256": row.sha256, "X-Content-Type-Options": "nosniff"}
    if not storage.exists(row.path):
        raise NotFound(f"the file of artifact {name!r} of job {job.id} is no longer stored", code="artifact_gone")
    if isinstance(storage, ObjectStorage):
        if settings.storage_presign:  # the bytes come from the store itself, not through this process
            return RedirectResponse(storage.presigned_url(row.path, row.name), status_code=307, headers=headers)
        disposition = {
            "Content-Disposition": f'attachment; filename="{row.name}"',
            "Content-Length": str(row.size_bytes),
        }
        return StreamingResponse(
            storage.stream(row.path), media_type="application/octet-stream", headers={**headers, **disposition}
        )
    return FileResponse(
        storage.path(row.path), filename=row.name, media_type="application/octet-stream", headers=headers
    )


@router.get(
    "/{job_id}/report",
    summary="The job's report",
    operation_id="jobs_report_get",
    response_model=Report,
    responses=errors(404),
)
def get_report(job: JobDep) -> JSONResponse:
    """The report of a finished job; 404 until there is one."""
    if not job.report:
        raise NotFound(f"job {job.id} has no report yet (status {job.status})", code="report_not_ready")
    # The stored report as it is, the same bytes every time (the CLI saves them as report.json).
    return JSONResponse(job.report)
