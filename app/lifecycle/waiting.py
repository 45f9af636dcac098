"""A queued job that no live worker can serve says so in its events, once per stay in the queue.

Workers advertise in their heartbeat row the queues they consume and the GPUs they hold; a job waits in its
resource class's queue (contract.resources). When no worker with a fresh heartbeat consumes that queue, the job
gets one `waiting` event saying what it waits for and which workers are live: at creation, and from the reaper
(every worker runs one) for jobs whose last worker went away or that were requeued meanwhile.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.lifecycle.job_events import STATUS_EVENT, record_event
from app.models import Job, JobEvent, WorkerHeartbeat, utcnow
from app.settings import get_settings
from contract import JobStatus
from contract.resources import is_job_queue, job_queue, resource_class

logger = logging.getLogger(__name__)

WAITING_EVENT = "waiting"


@dataclass(frozen=True)
class LiveWorker:
    """A worker with a fresh heartbeat: the queues it consumes and the GPUs it advertises."""

    queues: frozenset[str]
    gpus: int | None


def live_workers(session: Session) -> list[LiveWorker]:
    """The workers whose heartbeat is newer than worker_heartbeat_timeout_s."""
    cutoff = utcnow() - timedelta(seconds=get_settings().worker_heartbeat_timeout_s)
    rows = session.execute(
        select(WorkerHeartbeat.queues, WorkerHeartbeat.gpus).where(WorkerHeartbeat.heartbeat_at >= cutoff)
    ).all()
    return [LiveWorker(frozenset(q for q in (queues or "").split(",") if q), gpus) for queues, gpus in rows]


def describe_workers(workers: list[LiveWorker]) -> str:
    """'2 CPU, 1 with 2 GPUs, 1 for uploads only', or 'none'."""
    kinds: Counter[str] = Counter()
    for worker in workers:
        if not any(is_job_queue(q) for q in worker.queues):
            kinds["for uploads only"] += 1
        elif not worker.gpus:
            kinds["CPU"] += 1
        else:
            kinds[f"with {worker.gpus} GPU{'s' if worker.gpus > 1 else ''}"] += 1
    return ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) or "none"


def waiting_reason(gpus: int | None, workers: list[LiveWorker]) -> str | None:
    """Why no live worker can take a job asking for `gpus` (None: any worker), or None when one can."""
    queue = job_queue(gpus)
    if any(queue in worker.queues for worker in workers):
        return None
    live = f"(live workers: {describe_workers(workers)})"
    if gpus is None:
        return f"waiting for a worker: no live worker serves jobs {live}"
    if gpus == 0:
        return f"waiting for a CPU worker: no live worker serves CPU jobs (queue {queue}) {live}"
    most = max((worker.gpus or 0 for worker in workers), default=0)
    wanted = "a GPU worker" if gpus == 1 else f"a worker with {gpus} GPUs"
    if most == 0:
        return f"waiting for {wanted}: no live worker advertises a GPU {live}"
    if most < gpus:
        return f"waiting for {wanted}: the largest live worker advertises {most} {live}"
    return f"waiting for {wanted}: no live worker consumes queue {queue} {live}"


def _event_data(gpus: int | None) -> dict:
    return {"gpus": gpus, "class": resource_class(gpus), "queue": job_queue(gpus)}


def note_if_waiting(session: Session, job: Job) -> bool:
    """At creation: add the job's `waiting` event (committed by the caller) when no live worker can take it."""
    reason = waiting_reason(job.gpus, live_workers(session))
    if reason is None:
        return False
    record_event(session, job.id, WAITING_EVENT, reason, _event_data(job.gpus), level="warning")
    return True


def _already_told(session: Session, only: str | None = None) -> set[str]:
    """Queued jobs whose last `waiting` event is newer than their last status event (they were told)."""
    queued = select(Job.id).where(Job.status == JobStatus.QUEUED.value)
    if only is not None:
        queued = queued.where(Job.id == only)
    rows = session.execute(
        select(JobEvent.job_id, JobEvent.type, func.max(JobEvent.id))
        .where(JobEvent.job_id.in_(queued), JobEvent.type.in_((STATUS_EVENT, WAITING_EVENT)))
        .group_by(JobEvent.job_id, JobEvent.type)
    ).all()
    last: dict[str, dict[str, int]] = {}
    for job_id, type_, event_id in rows:
        last.setdefault(job_id, {})[type_] = event_id
    return {job_id for job_id, ids in last.items() if ids.get(WAITING_EVENT, -1) > ids.get(STATUS_EVENT, -1)}


def note_waiting_jobs() -> list[str]:
    """From the reaper: every queued job that no live worker can take and that was not told so since it was last
    queued gets its `waiting` event; returns their ids."""
    noted: list[str] = []
    with get_sessionmaker()() as session:
        workers = live_workers(session)
        queued = session.execute(select(Job.id, Job.gpus).where(Job.status == JobStatus.QUEUED.value)).all()
        reasons = {gpus: waiting_reason(gpus, workers) for gpus in {gpus for _id, gpus in queued}}
        waiting = [(job_id, gpus) for job_id, gpus in queued if reasons[gpus]]
        told = _already_told(session) if waiting else set()
        for job_id, gpus in waiting:
            if job_id in told:
                continue
            # A write to the row locks it (PostgreSQL) or takes the write lock (SQLite) until commit, so of several
            # reapers passing at once one writes the event and the others, reading after it, see it.
            lock = update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value).values(id=Job.id)
            if cast(CursorResult, session.execute(lock)).rowcount != 1 or _already_told(session, job_id):
                session.rollback()
                continue
            record_event(session, job_id, WAITING_EVENT, reasons[gpus] or "", _event_data(gpus), level="warning")
            session.commit()
            logger.info("job %s: %s", job_id, reasons[gpus])
            noted.append(job_id)
    return noted
