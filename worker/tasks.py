"""Celery tasks: thin adapters that take ids, re-read rows and call logic that lives elsewhere."""

from __future__ import annotations

import logging

from app.queue import DELIVER_WEBHOOK, RUN_JOB, VALIDATE_UPLOAD
from app.settings import get_settings
from worker.celery_app import celery
from worker.logcontext import job_context

logger = logging.getLogger(__name__)


@celery.task(name=VALIDATE_UPLOAD, time_limit=900, soft_time_limit=840)
def validate_upload(kind: str, obj_id: str) -> None:
    """Open an uploaded model or dataset and record `ready` with its info, or `invalid` with the error."""
    from worker.validate import validate

    validate(kind, obj_id)


@celery.task(name=RUN_JOB, time_limit=get_settings().job_time_limit_s + 60)
def run_job(job_id: str) -> None:
    """Claim the job (a no-op if another delivery already did) and run it to the end."""
    from worker.runner import run

    with job_context(job_id):
        run(job_id)


@celery.task(name=DELIVER_WEBHOOK, bind=True, max_retries=None, time_limit=300, soft_time_limit=240)
def deliver_webhook(self, job_id: str, event_type: str, msg_id: str, first_attempt: int = 1) -> None:
    """POST a finished job's signed webhook; a failed attempt is retried with exponential backoff."""
    from worker.webhook_delivery import deliver, retry_delay

    # first_attempt > 1: the reaper re-sent a delivery whose retry was lost with its worker.
    attempt = first_attempt + self.request.retries
    with job_context(job_id):
        outcome = deliver(job_id, event_type, msg_id, attempt)
    if outcome == "retry":
        raise self.retry(countdown=retry_delay(attempt))
