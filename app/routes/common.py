"""Helpers shared by the v1 routes: pagination and the declared error responses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from contract.wire import ErrorResponse

MAX_LIMIT = 100
# The largest integer the databases store (SQL BIGINT): integer query and header values are bounded by it,
# so a huge one answers 422 instead of overflowing the driver.
MAX_INT = 2**63 - 1
# Resource ids are at most 40 characters; a longer `after` cursor cannot name one.
MAX_CURSOR = 64


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of error responses, all with the error envelope."""
    text = {
        400: "The body is not valid JSON (code `invalid_json`)",
        401: "Missing or invalid API key",
        404: "Not found in this tenant",
        409: "Conflict with the resource's state",
        413: "Upload over the size limit",
        422: "Invalid request",
        429: "Too many jobs",
        503: "Not ready",
    }
    return {code: {"model": ErrorResponse, "description": text.get(code, "Error")} for code in (401, 422, *codes)}


def paginate(session: Session, query: Select, id_column, limit: int, after: str | None) -> tuple[list, str | None]:
    """Newest first: ids are time-ordered, so `after` means ids smaller than it."""
    if after:
        query = query.where(id_column < after)
    rows = list(session.scalars(query.order_by(id_column.desc()).limit(limit + 1)))
    next_after = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_after
