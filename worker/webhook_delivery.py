"""Webhook delivery: one signed POST per attempt, each attempt recorded as a job event of type `webhook`.

The Celery task (worker/tasks.py) retries a failed attempt with exponential backoff:
DISTILLERY_WEBHOOK_RETRY_BASE_S * 2**(attempt - 1), capped at DISTILLERY_WEBHOOK_RETRY_MAX_DELAY_S, up to
DISTILLERY_WEBHOOK_MAX_ATTEMPTS attempts. Any 2xx answer is a delivery; anything else, a timeout or a
connection error is retried; a target that now resolves to a refused address is not.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

import httpx
from sqlalchemy import select

from app.db import get_sessionmaker
from app.lifecycle import record_event_now
from app.models import Job, JobEvent, Tenant
from app.settings import get_settings
from app.webhooks import WebhookTargetError, check_target, signed_headers, tenant_secret
from contract.wire import JobPublic

logger = logging.getLogger(__name__)

Outcome = Literal["delivered", "retry", "gave_up"]


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    settings = get_settings()
    return min(settings.webhook_retry_base_s * 2 ** (attempt - 1), settings.webhook_retry_max_delay_s)


def payload(job: Job, event_type: str) -> bytes:
    """The delivery body: `{"type", "timestamp", "data": Job}` (Standard Webhooks' payload shape)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    data = JobPublic.model_validate(job).model_dump(mode="json")
    return json.dumps({"type": event_type, "timestamp": now, "data": data}, separators=(",", ":")).encode()


def webhook_attempts(session, job_id: str) -> list[dict]:
    """The data of a job's webhook events, oldest first, each with its `created_at`."""
    rows = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "webhook").order_by(JobEvent.id)
    )
    return [{**(row.data or {}), "created_at": row.created_at} for row in rows]


def _record(job_id: str, message: str, data: dict, level: str) -> None:
    record_event_now(job_id, "webhook", message, data, level=level)


def deliver(job_id: str, event_type: str, msg_id: str, attempt: int) -> Outcome:
    """Make one delivery attempt and record it; say whether to retry."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        if job is None or not job.webhook_url:
            return "gave_up"
        if any(e.get("delivered") and e.get("webhook_id") == msg_id for e in webhook_attempts(session, job_id)):
            # A copy of a delivery that already arrived (a re-sent retry whose original came back): skip it.
            return "delivered"
        tenant = session.get(Tenant, job.tenant_id)
        secret = tenant_secret(session, tenant)
        url = job.webhook_url
        body = payload(job, event_type)
    info = {"event": event_type, "webhook_id": msg_id, "attempt": attempt, "url": url, "status_code": None}
    last = attempt >= settings.webhook_max_attempts
    try:
        check_target(url, settings.webhook_allow_private)
    except WebhookTargetError as exc:
        _record(job_id, f"webhook not sent: {exc}", {**info, "delivered": False, "error": str(exc)}, "warning")
        return "gave_up"
    error = None
    try:
        # No redirects: a 3xx to an internal address must not be followed.
        resp = httpx.post(
            url,
            content=body,
            headers=signed_headers(secret, msg_id, body),
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
        )
        info["status_code"] = resp.status_code
        if 200 <= resp.status_code < 300:
            _record(
                job_id,
                f"webhook {event_type} delivered (attempt {attempt}, HTTP {resp.status_code})",
                {**info, "delivered": True},
                "info",
            )
            return "delivered"
        error = f"HTTP {resp.status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if last:
        message = f"webhook {event_type} failed (attempt {attempt}, {error}); giving up"
    else:
        info["retry_in_s"] = retry_delay(attempt)
        message = f"webhook {event_type} failed (attempt {attempt}, {error}); retrying in {info['retry_in_s']:g} s"
    _record(job_id, message, {**info, "delivered": False, "error": error}, "warning")
    logger.info("job %s: %s", job_id, message)
    return "gave_up" if last else "retry"
