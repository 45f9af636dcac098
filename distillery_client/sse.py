"""Server-sent events, as GET /v1/jobs/{id}/events streams them with `Accept: text/event-stream`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, int | None, str]]:
    """(event type, id, data) for each server-sent event; comments and keep-alives are skipped."""
    data: list[str]
    kind, event_id, data = "message", None, []
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data or kind != "message":
                yield kind, event_id, "\n".join(data)
            kind, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = int(value) if value.isdigit() else None
