"""How a job stops: finish (succeeded, failed, cancelled by its worker), hand back, cancel by the user.

Each ending is one compare-and-set with its status event in the same transaction, and a webhook queued once the
job has ended; a second ending of the same job is refused by the row, never applied twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from app import queue
from app.db import get_sessionmaker
from app.errors import Conflict
from app.lifecycle.job_events import STATUS_EVENT, add_event, record_event
from app.lifecycle.leases import Lease, fenced_update
from app.models import Job, utcnow
from app.webhooks import notify_job_ended
from contract import ACTIVE, TERMINAL, JobStatus

logger = logging.getLogger(__name__)

RowsWriter = Callable[[Session], dict]


def finish(lease: Lease, status: str, with_session: RowsWriter | None = None, **values) -> bool:
    """End a running job in `status` (fenced by its lease); False when it was no longer this attempt's.

    `with_session(session) -> dict` runs in the same transaction first (it may add rows, e.g. artifacts) and
    returns more column values, so that what it wrote commits only if the fence holds.
    """
    if status not in TERMINAL:
        raise ValueError(f"a job finishes in one of {TERMINAL}, not {status!r}")
    with get_sessionmaker()() as session:
        if with_session is not None:
            values = {**values, **with_session(session)}
        if not fenced_update(session, lease, status=status, phase=None, finished_at=utcnow(), **values):
            session.rollback()
            return False
        message = f"job {status}" + (f": {values['error']['message']}" if values.get("error") else "")
        level = "error" if status == JobStatus.FAILED.value else "info"
        add_event(session, lease.job_id, STATUS_EVENT, message, {"status": status}, level=level)
        session.commit()
    notify_job_ended(lease.job_id)
    return True


def hand_back(lease: Lease) -> bool:
    """Worker shutdown: running -> queued (fenced), without counting a lost attempt, and wake another worker."""
    with get_sessionmaker()() as session:
        if not fenced_update(session, lease, status=JobStatus.QUEUED.value, worker_id=None, enqueued_at=utcnow()):
            session.rollback()
            return False
        add_event(
            session,
            lease.job_id,
            STATUS_EVENT,
            "its worker is shutting down; the job was handed back to resume from its checkpoint",
            {"status": JobStatus.QUEUED.value, "reason": "worker_shutdown", "attempt": lease.attempt},
            level="warning",
        )
        gpus = session.scalar(select(Job.gpus).where(Job.id == lease.job_id))
        session.commit()
    queue.enqueue_job(lease.job_id, gpus)
    return True


def cancel_job(session: Session, job: Job) -> Job:
    """The user cancels a queued or running job (409 `job_finished` once it has ended); its worker sees it and stops."""
    if job.status in TERMINAL:
        raise Conflict(f"job {job.id} has already {job.status}", code="job_finished")
    update_job = (
        update(Job)
        .where(Job.id == job.id, Job.status.in_(ACTIVE))
        .values(status=JobStatus.CANCELLED.value, finished_at=utcnow())
    )
    result = cast(CursorResult, session.execute(update_job))
    if result.rowcount != 1:  # it ended between the read above and this write
        session.rollback()
        session.refresh(job)
        raise Conflict(f"job {job.id} has already {job.status}", code="job_finished")
    add_event(session, job.id, STATUS_EVENT, "job cancelled by the user", {"status": JobStatus.CANCELLED.value})
    session.commit()
    notify_job_ended(job.id)
    session.refresh(job)
    return job


def record_after_cancel(
    lease: Lease,
    type_: str,
    message: str,
    data: dict | None = None,
    level: str = "info",
    with_session: Callable[[Session], object] | None = None,
) -> bool:
    """What a cancelled attempt left (salvaged weights, why it was killed): recorded only if the job was cancelled
    while this attempt ran; `with_session` adds rows in the same transaction. False (nothing written) otherwise."""
    with get_sessionmaker()() as session:
        row = session.get(Job, lease.job_id)
        if row is None or row.status != JobStatus.CANCELLED.value or row.attempt != lease.attempt:
            return False
        if with_session is not None:
            with_session(session)
        record_event(session, lease.job_id, type_, message, data, level)
        session.commit()
        return True
