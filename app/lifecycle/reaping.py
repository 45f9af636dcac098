"""What the reaper does to jobs: requeue or fail those whose worker died, re-send lost queue messages.

Every change is a compare-and-set on the row, so several workers' reapers passing at once do each thing once.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult

from app import queue
from app.db import get_sessionmaker
from app.lifecycle.job_events import STATUS_EVENT, add_event
from app.models import Job, utcnow
from app.webhooks import notify_job_ended
from contract import JobStatus

logger = logging.getLogger(__name__)


def _lost_values(attempt: int, lost: int, max_attempts: int) -> tuple[dict, str, dict]:
    """The row's new values, the event's message and data, for a job whose worker died during `attempt`."""
    if lost >= max_attempts:
        error = {
            "code": "worker_lost",
            "message": f"the worker running attempt {attempt} stopped answering; {lost} workers died "
            f"running this job, and {max_attempts} is the limit (DISTILLERY_MAX_ATTEMPTS)",
        }
        values = {
            "status": JobStatus.FAILED.value,
            "phase": None,
            "finished_at": utcnow(),
            "error": error,
            "lost_attempts": lost,
        }
        return values, "job failed: " + error["message"], {"status": JobStatus.FAILED.value}
    values = {"status": JobStatus.QUEUED.value, "worker_id": None, "enqueued_at": utcnow(), "lost_attempts": lost}
    message = f"its worker stopped answering during attempt {attempt}; job requeued to resume from its last checkpoint"
    data = {"status": JobStatus.QUEUED.value, "reason": "worker_lost", "attempt": attempt, "lost_attempts": lost}
    return values, message, data


def fail_or_requeue_lost(cutoff: datetime, max_attempts: int) -> tuple[list[str], list[str]]:
    """Running jobs whose lease is older than `cutoff`: requeued (they resume from their checkpoint), or failed
    with `worker_lost` once `max_attempts` workers died running them. Returns (requeued ids, failed ids).

    Attempts handed back on shutdown do not count (lost_attempts, not attempt): preemption is not failure.
    """
    requeued: list[tuple[str, int | None]] = []
    failed: list[str] = []
    with get_sessionmaker()() as session:
        stale = session.execute(
            select(Job.id, Job.attempt, Job.lost_attempts, Job.worker_id, Job.gpus).where(
                Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < cutoff
            )
        ).all()
        for job_id, attempt, lost_before, worker_id, gpus in stale:
            values, message, data = _lost_values(attempt, lost_before + 1, max_attempts)
            fence = (
                Job.id == job_id,
                Job.attempt == attempt,
                Job.status == JobStatus.RUNNING.value,
                Job.heartbeat_at < cutoff,
            )
            if cast(CursorResult, session.execute(update(Job).where(*fence).values(**values))).rowcount != 1:
                session.rollback()  # renewed, ended or reaped by another worker meanwhile
                continue
            add_event(session, job_id, STATUS_EVENT, message, data, level="warning")
            session.commit()
            logger.warning("job %s (worker %s): %s", job_id, worker_id, message)
            if values["status"] == JobStatus.QUEUED.value:
                requeued.append((job_id, gpus))
            else:
                failed.append(job_id)
    for job_id, gpus in requeued:
        queue.enqueue_job(job_id, gpus)
    for job_id in failed:
        notify_job_ended(job_id)
    return [job_id for job_id, _gpus in requeued], failed


def resend_queued(cutoff: datetime) -> list[str]:
    """Send again the message of every queued job last sent before `cutoff`; returns their ids.

    Each re-send is a compare-and-set on the row's send time: of several reapers passing at once, one sends, and
    the next re-send waits another period. The claim makes any duplicate delivery a no-op.
    """
    jobs: list[tuple[str, int | None]] = []
    with get_sessionmaker()() as session:
        stale = session.execute(
            select(Job.id, Job.enqueued_at, Job.gpus).where(
                Job.status == JobStatus.QUEUED.value, Job.enqueued_at < cutoff
            )
        )
        for job_id, sent, gpus in stale.all():
            swap = update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value, Job.enqueued_at == sent)
            if cast(CursorResult, session.execute(swap.values(enqueued_at=utcnow()))).rowcount == 1:
                jobs.append((job_id, gpus))
        session.commit()
    for job_id, gpus in jobs:
        logger.info("re-sending queued job %s", job_id)
        queue.enqueue_job(job_id, gpus)
    return [job_id for job_id, _gpus in jobs]
