"""The reaper: a loop in every worker that keeps the database's promises when workers die.

- A running job whose lease (heartbeat) is stale lost its worker: it is requeued to resume from its last
  checkpoint (attempt + 1 at the next claim), or failed with `worker_lost` once max_attempts workers died
  running it. Attempts that a worker handed back on SIGTERM are not counted: preemption is not failure.
- A queued job or a validating upload whose message may be lost (kombu's SQLAlchemy transport hides a
  fetched message for good, so a killed worker takes it along) is sent again; the row claim makes any
  duplicate a no-op.
- A finished job's webhook whose pending retry (or first send) was lost is sent again.
- With a retention setting, files of jobs that ended long ago are removed.
- Presigned multipart uploads left unfinished past their expiry are aborted, and their parts dropped.
- A queued job that no live worker can serve (no fresh heartbeat consumes its resource class's queue) gets one
  `waiting` event saying what it waits for.
Every change is a compare-and-set on the row, so several workers reaping at once do each thing once; what
changes a job's state is app/lifecycle/'s (fail_or_requeue_lost, resend_queued).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, update

from app import queue
from app.db import get_sessionmaker
from app.direct_uploads import abort_expired
from app.lifecycle import fail_or_requeue_lost, note_waiting_jobs, record_event, resend_queued
from app.models import Artifact, Dataset, Job, Model, utcnow
from app.settings import get_settings
from app.stores import open_storage
from app.webhooks import delivery_ids
from contract import TERMINAL

logger = logging.getLogger(__name__)


def reap_stale_leases() -> list[str]:
    """Requeue or fail running jobs whose heartbeat is older than the lease; returns the requeued ids."""
    settings = get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.lease_timeout_s)
    requeued, _failed = fail_or_requeue_lost(cutoff, settings.max_attempts)
    return requeued


def resend_lost_messages() -> None:
    """Send again the messages of queued jobs and validating uploads that waited longer than resend_after_s.

    Each re-send is a compare-and-set on the row's send time: of the reapers of several workers passing at
    once, one sends, and the next re-send waits another resend_after_s.
    """
    cutoff = utcnow() - timedelta(seconds=get_settings().resend_after_s)
    resend_queued(cutoff)
    uploads: list[tuple[str, str]] = []
    with get_sessionmaker()() as session:
        for kind, cls in (("models", Model), ("datasets", Dataset)):
            never_resent = and_(cls.enqueued_at.is_(None), cls.created_at < cutoff)
            stale = session.execute(
                select(cls.id, cls.enqueued_at).where(
                    cls.status == "validating", or_(cls.enqueued_at < cutoff, never_resent)
                )
            )
            for obj_id, sent in stale.all():
                same = cls.enqueued_at.is_(None) if sent is None else cls.enqueued_at == sent
                swap = update(cls).where(cls.id == obj_id, cls.status == "validating", same)
                if session.execute(swap.values(enqueued_at=utcnow())).rowcount == 1:
                    uploads.append((kind, obj_id))
            session.commit()
    for kind, obj_id in uploads:
        logger.info("re-sending the validation of %s %s", kind, obj_id)
        queue.enqueue_validation(kind, obj_id)


def resend_stalled_webhooks() -> list[str]:
    """Send again the webhooks of ended jobs whose delivery stalled; returns their job ids.

    A pending retry lives in its worker (a Celery countdown): a worker killed meanwhile takes it along for good
    with the embedded broker, and for the visibility timeout (a day) with Redis; a broker down when the job
    ended loses the first send. The job's webhook events say where each delivery stands, so a delivery with
    no attempt for resend_after_s after one was due is queued again from the next attempt number. Receivers
    deduplicate by webhook-id (at-least-once delivery), and a worker skips a delivery that already arrived.
    """
    from worker.webhook_delivery import retry_delay, webhook_attempts

    settings = get_settings()
    now, wait = utcnow(), timedelta(seconds=settings.resend_after_s)
    attempts_max = settings.webhook_max_attempts
    horizon = timedelta(seconds=sum(retry_delay(i) for i in range(1, attempts_max + 1))) + 2 * attempts_max * wait
    due = []
    with get_sessionmaker()() as session:
        ended = session.execute(
            select(Job.id, Job.status, Job.finished_at).where(
                Job.webhook_url.is_not(None),
                Job.status.in_(TERMINAL),
                Job.finished_at > now - horizon,
                Job.finished_at < now - wait,
            )
        ).all()
        for job_id, status, finished_at in ended:
            event_type, msg_id = delivery_ids(job_id, status)
            tries = [a for a in webhook_attempts(session, job_id) if a.get("webhook_id") == msg_id]
            if not tries:
                next_attempt, due_at = 1, finished_at
            else:
                last = tries[-1]
                if last.get("delivered") or not (last.get("resent") or "retry_in_s" in last):
                    continue  # delivered, or given up (last attempt, or a refused target)
                next_attempt = last["attempt"] + (0 if last.get("resent") else 1)
                due_at = last["created_at"] + timedelta(seconds=last.get("retry_in_s") or 0)
            if due_at > now - wait or next_attempt > attempts_max:
                continue
            record_event(
                session,
                job_id,
                "webhook",
                f"webhook {event_type}: no attempt {settings.resend_after_s:g} s after one was due; "
                f"sent again (attempt {next_attempt})",
                {"event": event_type, "webhook_id": msg_id, "attempt": next_attempt, "resent": True},
                level="warning",
            )
            session.commit()
            due.append((job_id, event_type, msg_id, next_attempt))
    for job_id, event_type, msg_id, attempt in due:
        logger.warning("re-sending webhook %s of job %s (attempt %d)", event_type, job_id, attempt)
        queue.enqueue_webhook(job_id, event_type, msg_id, first_attempt=attempt)
    return [d[0] for d in due]


def apply_retention() -> int:
    """Remove the files and artifact rows of jobs that ended more than retention_days ago."""
    settings = get_settings()
    if settings.retention_days is None:
        return 0
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    storage = open_storage(settings)
    with get_sessionmaker()() as session:
        old = session.execute(
            select(Job.id, Job.tenant_id).where(
                Job.status.in_(TERMINAL), Job.finished_at < cutoff, Job.id.in_(select(Artifact.job_id))
            )
        ).all()
        for job_id, tenant_id in old:
            session.execute(delete(Artifact).where(Artifact.job_id == job_id))
            record_event(session, job_id, "retention", f"files removed after {settings.retention_days} days")
            session.commit()
            storage.remove_tree(storage.relative(storage.job_dir(tenant_id, job_id)))
    return len(old)


def abort_expired_uploads() -> list[str]:
    """Abort presigned multipart uploads left unfinished past their expiry, and the parts the store holds."""
    settings = get_settings()
    if not settings.storage_url:
        return []
    with get_sessionmaker()() as session:
        return abort_expired(session, open_storage(settings))


def reap_once() -> None:
    """One pass of every reaper duty."""
    reap_stale_leases()
    resend_lost_messages()
    resend_stalled_webhooks()
    apply_retention()
    abort_expired_uploads()
    note_waiting_jobs()


def run_forever(stop: threading.Event) -> None:
    """The reaper loop; a failing pass is logged and retried at the next interval."""
    interval = get_settings().reaper_interval_s
    while not stop.wait(interval):
        try:
            reap_once()
        except Exception:
            logger.exception("reaper pass failed")
