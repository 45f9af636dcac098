"""Job creation and cancellation: the rules behind POST /v1/jobs and /cancel."""

from __future__ import annotations

import hashlib
import json
import logging

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound, TooManyRequests, Unprocessable
from app.models import Dataset, Job, JobEvent, Model, Tenant, new_id, utcnow
from app.queue import enqueue_job
from app.settings import get_settings
from app.webhooks import WebhookTargetError, check_target, notify_job_ended
from contract import ACTIVE, TERMINAL
from contract.wire import JobCreate

logger = logging.getLogger(__name__)


def add_event(
    session: Session, job_id: str, type_: str, message: str, data: dict | None = None, level: str = "info"
) -> None:
    """Append an event to a job's log (committed by the caller)."""
    session.add(JobEvent(job_id=job_id, type=type_, level=level, message=message, data=data, created_at=utcnow()))


def _ready_input(session: Session, cls: type, obj_id: str, tenant: Tenant, what: str):
    row = session.get(cls, obj_id)
    if row is None or row.tenant_id != tenant.id:
        raise NotFound(f"no {what} with id {obj_id!r}", code=f"{what.replace(' ', '_')}_not_found")
    if row.status == "validating":
        raise Conflict(
            f"{what} {obj_id} is still being validated; retry when its status is ready",
            code="input_not_ready",
        )
    if row.status == "invalid":
        message = (row.error or {}).get("message", "it failed validation")
        raise Unprocessable(f"{what} {obj_id} is invalid: {message}", code="invalid_input")
    return row


def _shapes_fit(expected: list, actual: list) -> bool:
    """Whether an example's shape fits a model's per-example input shape."""
    return len(expected) == len(actual) and all(
        not isinstance(e, int) or e <= 0 or e == a for e, a in zip(expected, actual, strict=True)
    )


def _check_fit(body: JobCreate, teacher: Model, train: Dataset, eval_: Dataset | None) -> None:
    """Refuse jobs that can never run, from what validation recorded about the inputs."""
    t_info, d_info = teacher.info or {}, train.info or {}
    d_input = (d_info.get("input") or {}).get("shape")
    t_input = (t_info.get("input") or {}).get("shape")
    # Both shapes are per example (no batch axis); a None or named axis fits any size.
    if t_input and d_input and not _shapes_fit(t_input, d_input):
        raise Unprocessable(
            f"the teacher takes inputs of shape {t_input} but the dataset's examples have shape {d_input}",
            code="input_mismatch",
        )
    t_classes, d_classes = t_info.get("num_classes"), d_info.get("num_classes")
    if t_classes and d_classes and d_classes > t_classes:
        raise Unprocessable(
            f"the teacher outputs {t_classes} classes but the dataset has {d_classes} labels",
            code="class_mismatch",
        )
    if eval_ is not None:
        e_input = ((eval_.info or {}).get("input") or {}).get("shape")
        if e_input and d_input and e_input != d_input:
            raise Unprocessable(
                f"eval examples have shape {e_input} but training examples have {d_input}",
                code="input_mismatch",
            )
        if not (eval_.info or {}).get("has_labels", True):
            raise Unprocessable(
                "the eval dataset has no labels; the report's accuracies need them",
                code="eval_without_labels",
            )
    arch = body.student.architecture
    if arch == "cnn" and d_input is not None and len(d_input) != 3:
        raise Unprocessable(
            f"the cnn student needs examples shaped [C, H, W]; these are {d_input}", code="invalid_student"
        )
    if arch in ("lstm", "textcnn", "transformer") and d_info.get("input", {}).get("dtype", "int64") not in (
        "int64",
        "int32",
    ):
        raise Unprocessable(
            f"the {arch} student needs token ids; this dataset holds {d_info['input']['dtype']}",
            code="invalid_student",
        )
    if body.baseline and not d_info.get("has_labels", True):
        raise Unprocessable(
            "baseline needs labels in the training data (it trains without the teacher)",
            code="baseline_without_labels",
        )


def _check_student_size(student: Model) -> None:
    """Refuse an uploaded student larger than the server's cap (built-in students are checked by the engine)."""
    cap = get_settings().max_student_parameters
    count = (student.info or {}).get("num_parameters")
    if isinstance(count, int) and count > cap:
        raise Unprocessable(
            f"the uploaded student has {count:,} parameters, more than this server's cap of {cap:,} "
            "(DISTILLERY_MAX_STUDENT_PARAMETERS); upload a smaller student",
            code="limit_exceeded",
        )


def _check_webhook(url: str) -> None:
    """Refuse a webhook_url on a loopback, private or link-local address (unless settings allow it)."""
    try:
        check_target(url, get_settings().webhook_allow_private)
    except WebhookTargetError as exc:
        raise Unprocessable(str(exc), code="webhook_url_refused") from exc


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
    if active >= cap:
        raise TooManyRequests(
            f"this tenant already has {active} queued or running jobs (the limit is {cap}); "
            "retry when some have finished",
            code="too_many_jobs",
            headers={"Retry-After": "30"},
        )


def request_hash(body: JobCreate) -> str:
    """A stable digest of a job request, for Idempotency-Key checks."""
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def create_job(session: Session, tenant: Tenant, body: JobCreate, idempotency_key: str | None) -> Job:
    """Validate the request against the tenant's inputs, insert the job and wake a worker."""
    digest = request_hash(body)
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.idempotency_key == idempotency_key))
        if existing is not None:
            return _same_request(existing, digest)
    if body.webhook_url:
        _check_webhook(body.webhook_url)
    _check_capacity(session, tenant)
    teacher = _ready_input(session, Model, body.teacher_id, tenant, "teacher model")
    train = _ready_input(session, Dataset, body.train_dataset_id, tenant, "train dataset")
    eval_ = (
        _ready_input(session, Dataset, body.eval_dataset_id, tenant, "eval dataset") if body.eval_dataset_id else None
    )
    if body.student.model_id:
        student = _ready_input(session, Model, body.student.model_id, tenant, "student model")
        _check_student_size(student)
    _check_fit(body, teacher, train, eval_)
    job = Job(
        id=new_id("job"),
        tenant_id=tenant.id,
        status="queued",
        attempt=0,
        teacher_id=teacher.id,
        train_dataset_id=train.id,
        eval_dataset_id=eval_.id if eval_ else None,
        student=body.student.model_dump(exclude_none=True),
        hyperparameters=body.hyperparameters.model_dump(),
        export=list(body.export),
        baseline=body.baseline,
        max_runtime_s=body.max_runtime_s,
        progress={},
        metrics={},
        idempotency_key=idempotency_key,
        request_hash=digest,
        webhook_url=body.webhook_url,
        created_at=utcnow(),
        enqueued_at=utcnow(),
    )
    session.add(job)
    add_event(session, job.id, "status", "job queued", {"status": "queued"})
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        session.rollback()
        existing = session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        return _same_request(existing, digest)
    try:
        enqueue_job(job.id)
    except Exception:  # the job stays queued; the worker's sweeper re-sends queued jobs
        logger.exception("could not enqueue job %s; the sweeper will re-send it", job.id)
    return job


def _same_request(existing: Job, digest: str) -> Job:
    if existing.request_hash != digest:
        raise Unprocessable(
            "this Idempotency-Key was used with a different request body", code="idempotency_key_reused"
        )
    return existing


def cancel_job(session: Session, job: Job) -> Job:
    """Cancel a queued or running job; a running worker sees it within a step and stops."""
    if job.status in TERMINAL:
        raise Conflict(f"job {job.id} has already {job.status}", code="job_finished")
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.status.in_(ACTIVE)).values(status="cancelled", finished_at=utcnow())
    )
    if result.rowcount != 1:
        session.rollback()
        session.refresh(job)
        raise Conflict(f"job {job.id} has already {job.status}", code="job_finished")
    add_event(session, job.id, "status", "job cancelled by the user", {"status": "cancelled"})
    session.commit()
    notify_job_ended(job.id)
    session.refresh(job)
    return job
