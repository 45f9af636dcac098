"""A job is born: POST /v1/jobs checks the request, inserts the row as queued with its first event, wakes a worker."""

from __future__ import annotations

import hashlib
import json
import logging

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import queue
from app.errors import TooManyRequests, Unprocessable
from app.job_inputs import check_webhook, job_inputs
from app.lifecycle.job_events import STATUS_EVENT, add_event
from app.lifecycle.waiting import note_if_waiting
from app.models import Job, Tenant, new_id, utcnow
from app.settings import get_settings
from contract import ACTIVE, JobStatus
from contract.wire import JobCreate

logger = logging.getLogger(__name__)


def request_hash(body: JobCreate) -> str:
    """A stable digest of a job request, for Idempotency-Key checks."""
    request = body.model_dump(mode="json")
    if request.get("resources") == {"gpus": None}:
        del request["resources"]  # the default: a request made before resource classes keeps its digest
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _check_capacity(session: Session, tenant: Tenant) -> None:
    """429 when the tenant already has its cap of queued plus running jobs."""
    cap = get_settings().max_active_jobs_per_tenant
    # Concurrent creates must count one after another. A write to the tenant's row does it on both databases:
    # PostgreSQL locks the row until commit; SQLite takes its single write lock, and pysqlite begins the
    # transaction at this first write, so the count below reads under that lock (SELECT ... FOR UPDATE is a
    # no-op there, and the count would be read before anyone's insert).
    session.execute(update(Tenant).where(Tenant.id == tenant.id).values(id=Tenant.id))
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id, Job.status.in_(ACTIVE))
    )
    assert active is not None  # COUNT gives a row
    if active >= cap:
        raise TooManyRequests(
            f"this tenant already has {active} queued or running jobs (the limit is {cap}); "
            "retry when some have finished",
            code="too_many_jobs",
            headers={"Retry-After": "30"},
        )


def _same_request(existing: Job, digest: str) -> Job:
    if existing.request_hash != digest:
        raise Unprocessable(
            "this Idempotency-Key was used with a different request body", code="idempotency_key_reused"
        )
    return existing


def _by_key(session: Session, tenant: Tenant, idempotency_key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.idempotency_key == idempotency_key))


def _new_job(tenant: Tenant, body: JobCreate, idempotency_key: str | None, digest: str, inputs: tuple) -> Job:
    teacher, train, eval_ = inputs
    return Job(
        id=new_id("job"),
        tenant_id=tenant.id,
        status=JobStatus.QUEUED.value,
        attempt=0,
        teacher_id=teacher.id,
        train_dataset_id=train.id,
        eval_dataset_id=eval_.id if eval_ else None,
        student=body.student.model_dump(exclude_none=True),
        # A causal-LM job's settings (job_inputs fills them in) travel with the hyperparameters, under `lm`.
        hyperparameters={**body.hyperparameters.model_dump(), **({"lm": body.lm.model_dump()} if body.lm else {})},
        export=list(body.export),
        baseline=body.baseline,
        gpus=body.resources.gpus,
        max_runtime_s=body.max_runtime_s,
        progress={},
        metrics={},
        idempotency_key=idempotency_key,
        request_hash=digest,
        webhook_url=body.webhook_url,
        created_at=utcnow(),
        enqueued_at=utcnow(),
    )


def create_job(session: Session, tenant: Tenant, body: JobCreate, idempotency_key: str | None) -> Job:
    """Check the request against the tenant's inputs, insert the job as queued and wake a worker.

    The same Idempotency-Key with the same body answers the first job; with another body, 422.
    """
    digest = request_hash(body)
    if idempotency_key and (existing := _by_key(session, tenant, idempotency_key)) is not None:
        return _same_request(existing, digest)
    if body.webhook_url:
        check_webhook(body.webhook_url)
    _check_capacity(session, tenant)
    job = _new_job(tenant, body, idempotency_key, digest, job_inputs(session, tenant, body))
    session.add(job)
    add_event(session, job.id, STATUS_EVENT, "job queued", {"status": JobStatus.QUEUED.value})
    try:
        # Inside the try: its query flushes the insert, which is where a concurrent same-key insert collides.
        note_if_waiting(session, job)
        session.commit()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        session.rollback()
        existing = _by_key(session, tenant, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _same_request(existing, digest)
    try:
        queue.enqueue_job(job.id, job.gpus)
    except Exception:  # the job stays queued; the reaper re-sends queued jobs
        logger.exception("could not enqueue job %s; the reaper will re-send it", job.id)
    return job
