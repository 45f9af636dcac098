"""Webhooks, following the Standard Webhooks specification (https://www.standardwebhooks.com/).

When a job ends (succeeded, failed, cancelled) and it names a `webhook_url`, the service POSTs

    {"type": "job.succeeded", "timestamp": "2026-12-01T10:00:00Z", "data": <the Job object>}

with the headers `webhook-id` (the same on every retry of one delivery), `webhook-timestamp` (Unix seconds)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the tenant's secret
(`whsec_<base64 key>`; GET /v1/webhooks/secret, `distillery webhooks secret`).

A receiver checks a delivery with `verify_webhook(secret, headers, body)`. The sending happens in the worker
(worker/webhook_delivery.py); this module holds what both sides share, and never imports torch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from app.models import Tenant
from contract import TERMINAL
from contract.wire import webhook_url_problem

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
# Receivers refuse deliveries whose timestamp is further than this from their clock (replay protection).
DEFAULT_TOLERANCE_S = 5 * 60


class WebhookVerificationError(Exception):
    """The delivery is not authentic: missing headers, a stale timestamp, or no matching signature."""


class WebhookTargetError(ValueError):
    """A webhook URL the service refuses to call."""


# --- secrets and signatures --------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise WebhookVerificationError("the secret is not whsec_<base64>") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers of one delivery."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict:
    """Check a delivery's signature and timestamp; return its parsed JSON payload.

    `headers` may use any case (a plain dict, or a framework's case-insensitive headers). Raises
    WebhookVerificationError when the delivery is not authentic, so a receiver answers 400 and drops it.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, signatures = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and ts and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(ts)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far from now (replayed or clock skew)")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = sign(secret, msg_id, timestamp, raw).partition(",")[2]
    # The header may carry several space-separated signatures (during a secret rotation, for example).
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(raw)
    raise WebhookVerificationError("no matching signature")


def tenant_secret(session: Session, tenant: Tenant) -> str:
    """The tenant's signing secret, made (and committed) on first use."""
    if not tenant.webhook_secret:
        tenant.webhook_secret = new_secret()
        session.commit()
    return tenant.webhook_secret


def rotate_secret(session: Session, tenant: Tenant) -> str:
    """Replace the tenant's secret; deliveries from now on are signed with the new one."""
    tenant.webhook_secret = new_secret()
    session.commit()
    return tenant.webhook_secret


# --- targets ----------------------------------------------------------------------------------------------


def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_url_shape(url: str) -> None:
    """http(s) with a host and no credentials; raises WebhookTargetError."""
    problem = webhook_url_problem(url)
    if problem:
        raise WebhookTargetError(problem)


def check_target(url: str, allow_private: bool) -> list[str]:
    """Resolve the URL's host; refuse loopback, private, link-local and other non-public addresses.

    Returns the resolved addresses. Called when a job is created and again before every delivery (DNS may
    have changed in between). With allow_private (DISTILLERY_WEBHOOK_ALLOW_PRIVATE) only the shape is checked.
    """
    check_url_shape(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookTargetError(f"webhook_url has an invalid port: {exc}") from exc
    if allow_private:
        return []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookTargetError(f"webhook_url host {host!r} does not resolve: {exc}") from exc
    addresses = sorted({cast(str, info[4][0]) for info in infos})  # an IPv4 or IPv6 address: SOCK_STREAM
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if _refused_address(ip):
            raise WebhookTargetError(
                f"webhook_url host {host!r} resolves to {address}, a loopback, private or link-local "
                "address; webhooks go to public addresses only (the operator can allow others with "
                "DISTILLERY_WEBHOOK_ALLOW_PRIVATE=true)"
            )
    return addresses


# --- enqueueing -------------------------------------------------------------------------------------------


def delivery_ids(job_id: str, status: str) -> tuple[str, str]:
    """(event type, webhook-id) of a job's delivery for the status it ended in.

    One webhook-id per (job, event): receivers deduplicate retries and re-sends with it.
    """
    return f"job.{status}", f"msg_{job_id}_{status}"


def notify_job_ended(job_id: str) -> None:
    """Queue the job's webhook delivery if it names a webhook_url and has ended; never raises.

    Called once where a job reaches succeeded, failed or cancelled (app/lifecycle/, which owns those changes).
    """
    try:
        from app.db import get_sessionmaker
        from app.models import Job
        from app.queue import enqueue_webhook

        with get_sessionmaker()() as session:
            job = session.get(Job, job_id)
            if job is None or not job.webhook_url or job.status not in TERMINAL:
                return
            event_type, msg_id = delivery_ids(job_id, job.status)
        enqueue_webhook(job_id, event_type, msg_id)
    except Exception:  # a webhook must never change how a job ends
        logger.exception("could not queue the webhook of job %s", job_id)
