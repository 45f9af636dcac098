"""Celery tasks: thin adapters that take ids, re-read rows and call logic that lives elsewhere."""

from __future__ import annotations

import logging

from app.queue import RUN_JOB, VALIDATE_UPLOAD
from app.settings import get_settings
from worker.celery_app import celery

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

    run(job_id)
