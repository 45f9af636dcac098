"""Shapes every part of the API shares: the error envelope, list pages, timestamps, health and webhook secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# Timestamps are ISO 8601 UTC strings ending in Z: the database hands back aware UTC datetimes (app.models'
# UTCDateTime), and pydantic writes those with a Z, so the schema keeps `format: date-time` for clients.
Timestamp = datetime


def webhook_url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL's shape (http(s), a host, no credentials), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook_url must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "webhook_url must not carry credentials; the signature authenticates the sender"
    return None


class ErrorDetail(BaseModel):
    """What went wrong: a stable `code` (contract.errors) and a message a person can act on."""

    # Open: a validation error recorded by an older worker may carry more keys, and they are passed on.
    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["no job with id job_0123 in this tenant"])


class ErrorResponse(BaseModel):
    """The one error envelope: every 4xx and 5xx body has this shape."""

    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first; pass `next_after` as `?after=` for the next one (null: the last page)."""

    data: list[T]
    next_after: str | None = None


class OutModel(BaseModel):
    """A response shape read from a database row."""

    model_config = ConfigDict(from_attributes=True)


class WebhookSecret(BaseModel):
    """The tenant's webhook signing secret (Standard Webhooks `whsec_<base64>`)."""

    secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "checks": {"database": "ok", "workers": 2, "broker": "ok"}}]
        }
    )

    status: str
    checks: dict[str, Any] = Field(default_factory=dict)
