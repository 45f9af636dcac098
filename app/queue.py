"""The Celery client and its configuration; the API enqueues by task name and never imports the worker."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from app.settings import Settings, get_settings
from contract.resources import JOBS_QUEUE, job_queue

logger = logging.getLogger(__name__)

RUN_JOB = "distillery.run_job"
VALIDATE_UPLOAD = "distillery.validate_upload"
DELIVER_WEBHOOK = "distillery.deliver_webhook"
UPLOADS_QUEUE = "uploads"


def _transport_options(broker: str, settings: Settings) -> dict:
    if broker.startswith("sqla+"):
        # kombu's SQLAlchemy transport hands its options to create_engine: only engine arguments go here.
        # It has no visibility timeout: a fetched message stays hidden for good (see the reaper).
        return {"connect_args": {"timeout": 30}} if "sqlite" in broker else {}
    return {"visibility_timeout": settings.broker_visibility_timeout_s, "polling_interval": 0.2}


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for long GPU jobs; shared by the API (sending) and the worker."""
    broker = settings.resolved_broker_url
    if broker.startswith("sqla+sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if broker.startswith("sqla+"):
        # Its options go to create_engine, so the poll interval (1 s by default) is set on the class.
        from kombu.transport.sqlalchemy import Transport

        Transport.polling_interval = 0.2
    celery = Celery("distillery", broker=broker)
    celery.conf.update(
        task_ignore_result=True,
        # A message is acknowledged after the task returns, so a worker that dies mid-job leaves it to be
        # redelivered; the compare-and-set claim on the job row makes a redelivery a no-op.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One job at a time per worker: never hold a second GPU job's message while the first trains.
        worker_prefetch_multiplier=1,
        task_routes={
            RUN_JOB: {"queue": JOBS_QUEUE},
            VALIDATE_UPLOAD: {"queue": UPLOADS_QUEUE},
            DELIVER_WEBHOOK: {"queue": UPLOADS_QUEUE},
        },
        task_default_queue=JOBS_QUEUE,
        # Redis hands an unacknowledged message to another worker after visibility_timeout; it must be longer
        # than the longest job (job_time_limit_s), else long jobs are delivered twice (celery #5935).
        broker_transport_options=_transport_options(broker, settings),
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return celery


@lru_cache
def get_celery() -> Celery:
    """The process-wide Celery client."""
    return make_celery(get_settings())


def enqueue_job(job_id: str, gpus: int | None) -> None:
    """Wake a worker of the job's resource class (`gpus`, the job's request); the row, not the message, says what
    is owed."""
    get_celery().send_task(RUN_JOB, args=[job_id], queue=job_queue(gpus))


def enqueue_validation(kind: str, obj_id: str) -> None:
    """Ask a worker to open and validate an upload."""
    get_celery().send_task(VALIDATE_UPLOAD, args=[kind, obj_id], queue=UPLOADS_QUEUE)


def enqueue_webhook(job_id: str, event_type: str, msg_id: str, first_attempt: int = 1) -> None:
    """Ask a worker to POST a job's webhook (short HTTP calls: the uploads queue, not a GPU worker)."""
    get_celery().send_task(
        DELIVER_WEBHOOK,
        args=[job_id, event_type, msg_id],
        kwargs={"first_attempt": first_attempt},
        queue=UPLOADS_QUEUE,
    )


def broker_reachable(timeout: float = 2.0) -> bool:
    """Whether a connection to the broker can be made now."""
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception as exc:  # any transport error means not reachable
        logger.warning("broker unreachable: %s", exc)
        return False
