"""Helpers shared by the v1 routes: pagination, cursors and the declared responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Query
from pydantic import AfterValidator
from sqlalchemy import Select
from sqlalchemy.orm import Session

from contract.wire import ErrorResponse

MAX_LIMIT = 100
# The largest integer the databases store (SQL BIGINT): integer query and header values are bounded by it,
# so a huge one answers 422 instead of overflowing the driver.
MAX_INT = 2**63 - 1
# Resource ids are at most 40 characters; a longer `after` cursor cannot name one.
MAX_CURSOR = 64


def _event_id_in_range(cursor: str) -> str:
    if int(cursor) > MAX_INT:
        raise ValueError(f"must be at most {MAX_INT}")
    return cursor


# Every cursor is a string (`next_after` of any page); an event cursor is an event id: digits, at most MAX_INT.
EventCursor = Annotated[
    str,
    Query(pattern=r"^[0-9]{1,19}$", description="Only events with a larger id (a page's `next_after`)"),
    AfterValidator(_event_id_in_range),
]
LastEventId = Annotated[
    int | None,
    Header(ge=0, le=MAX_INT, description="Server-sent events: resume after this event id (overrides `after`)"),
]

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}

ARTIFACT_RESPONSE: dict[str, Any] = {
    "description": "The file's bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {
        "X-Checksum-Sha256": {
            "description": "The file's sha256 (hex), as listed by jobs_artifacts_list",
            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
        "Content-Disposition": {"description": "attachment; filename=<name>", "schema": {"type": "string"}},
    },
}

EVENT_STREAM_RESPONSE: dict[str, Any] = {
    "description": "Server-sent events: `id:` the event id, `event:` its type, `data:` the event (EventPublic) as "
    "JSON; `: keep-alive` comments while nothing happens, and a last `event: end` once the job has ended. "
    "Reconnect with `Last-Event-ID` to resume.",
    "content": {
        "text/event-stream": {
            # Each server-sent event (OpenAPI 3.2's itemSchema, which schemathesis checks every event against): `data`
            # is JSON, an EventPublic, or `{}` for the closing `end`. No `schema`: the stream as a whole is no JSON
            # value, and a generated client would try to parse it as one.
            "itemSchema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "id": {"type": "string", "description": "The event id: send it as Last-Event-ID to resume"},
                    "event": {"type": "string", "description": "The event's type, or `end`"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/EventPublic"},
                                {"type": "object", "maxProperties": 0},
                            ]
                        },
                    },
                },
            },
            "example": 'id: 42\nevent: metrics\ndata: {"id": 42, "type": "metrics", "level": "info", ...}\n\n'
            "event: end\ndata: {}\n\n",
        }
    },
}


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
    declared: dict[int | str, dict[str, Any]] = {}
    for code in (401, 422, *codes):
        declared[code] = {"model": ErrorResponse, "description": text.get(code, "Error")}
        if code == 429:
            declared[code]["headers"] = RETRY_AFTER
    return declared


def paginate(session: Session, query: Select, id_column, limit: int, after: str | None) -> tuple[list, str | None]:
    """Newest first: ids are time-ordered, so `after` means ids smaller than it."""
    if after:
        query = query.where(id_column < after)
    rows = list(session.scalars(query.order_by(id_column.desc()).limit(limit + 1)))
    next_after = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_after
