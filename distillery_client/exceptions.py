"""The one exception of the client: every API error, and every transport failure, is a DistilleryError."""

from __future__ import annotations

import httpx


class DistilleryError(Exception):
    """An error answered by the API (or a transport failure, status 0)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{message} ({status} {code})" if status else message)
        self.status = status
        self.code = code
        self.message = message


def raise_for_response(resp: httpx.Response) -> None:
    """Raise DistilleryError(status, code, message) from the API's error envelope, unless resp succeeded."""
    if resp.is_success:
        return
    try:
        resp.read()
        body = resp.json()
        err = body.get("error") or {}
        code, message = err.get("code") or "http_error", err.get("message") or resp.text
    except (ValueError, AttributeError):
        code, message = "http_error", resp.text.strip() or resp.reason_phrase
    raise DistilleryError(resp.status_code, code, message)
