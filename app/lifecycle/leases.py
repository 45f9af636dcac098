"""A running job's lease: claim, heartbeat, fenced updates, and who owns the job now.

A worker owns a running job through its attempt number. Every write after the claim is fenced by
(status = running, attempt = ours), so a worker that lost the job (cancelled, or requeued to a newer attempt by the
reaper) cannot overwrite what the newer owner wrote; each fenced write also renews the lease (heartbeat_at).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from sqlalchemy import func, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.lifecycle.job_events import STATUS_EVENT, add_event
from app.models import Job, utcnow
from contract import JobStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """The claim a worker holds on a running job: valid while the row is running at this attempt."""

    job_id: str
    attempt: int


class Ownership(StrEnum):
    """What the row says about a lease."""

    OWNED = "owned"  # running at this attempt
    CANCELLED = "cancelled"  # cancelled while this attempt ran: the child may salvage its checkpoint
    LOST = "lost"  # anything else: requeued, failed by the reaper, deleted


def claim(job_id: str, worker_id: str) -> Job | None:
    """Compare-and-set queued -> running (attempt + 1); None when another delivery or worker already has it."""
    with get_sessionmaker()() as session:
        start = (
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
            .values(
                status=JobStatus.RUNNING.value,
                attempt=Job.attempt + 1,
                worker_id=worker_id,
                phase="validating",
                started_at=func.coalesce(Job.started_at, utcnow()),
                heartbeat_at=utcnow(),
            )
        )
        result = cast(CursorResult, session.execute(start))
        if result.rowcount != 1:
            session.rollback()
            return None
        job = session.get(Job, job_id)
        assert job is not None  # the update above matched it
        # The worker's name (host:pid) is the operator's business: it goes to the log, not to the user.
        logger.info("job %s running on %s (attempt %d)", job_id, worker_id, job.attempt)
        add_event(
            session,
            job_id,
            STATUS_EVENT,
            f"job running (attempt {job.attempt})",
            {"status": JobStatus.RUNNING.value, "attempt": job.attempt},
        )
        session.commit()
        return job


def fenced_update(session: Session, lease: Lease, **values) -> bool:
    """Update the job row (and renew the lease) only while this attempt still owns it; the caller commits."""
    result = cast(
        CursorResult,
        session.execute(
            update(Job)
            .where(Job.id == lease.job_id, Job.attempt == lease.attempt, Job.status == JobStatus.RUNNING.value)
            .values(heartbeat_at=utcnow(), **values)
        ),
    )
    return result.rowcount == 1


def heartbeat(lease: Lease) -> bool:
    """Renew the lease; False when the job is no longer this attempt's (cancelled or reassigned)."""
    with get_sessionmaker()() as session:
        if fenced_update(session, lease):
            session.commit()
            return True
        session.rollback()
        return False


def record_progress(
    lease: Lease, type_: str, message: str, data: dict | None = None, level: str = "info", **values
) -> bool:
    """Write a running job's phase/progress/metrics columns and the event that reports them, fenced."""
    if type_ == STATUS_EVENT:
        raise ValueError("status events go with a state change: use a lifecycle transition")
    with get_sessionmaker()() as session:
        if not fenced_update(session, lease, **values):
            session.rollback()
            return False
        add_event(session, lease.job_id, type_, message, data, level=level)
        session.commit()
        return True


def ownership(lease: Lease) -> Ownership:
    """Whether the row still belongs to this lease, and if not, whether it was cancelled under it."""
    with get_sessionmaker()() as session:
        row = session.get(Job, lease.job_id)
        if row is None or row.attempt != lease.attempt:
            return Ownership.LOST
        if row.status == JobStatus.RUNNING.value:
            return Ownership.OWNED
        return Ownership.CANCELLED if row.status == JobStatus.CANCELLED.value else Ownership.LOST
