"""A job's events and artifacts (DESIGN.md: Event, and the artifacts list)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from contract.wire.common import OutModel, Timestamp


class EventPublic(OutModel):
    """One entry of a job's append-only log; ids increase."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "type": "metrics",
                    "level": "info",
                    "message": "epoch 7: loss 0.4100, agreement 0.9500",
                    "data": {"epoch": 7, "train_loss": 0.41, "validation_accuracy": 0.93, "validation_agreement": 0.95},
                    "created_at": "2026-11-29T19:10:35.000000Z",
                }
            ]
        },
    )

    id: int
    type: str
    level: str
    message: str
    data: dict[str, Any] | None
    created_at: Timestamp


class EventsPage(BaseModel):
    """Events oldest first; `next_after` (an event id, as a string like every cursor) is the next page's `after`."""

    data: list[EventPublic]
    next_after: str | None = None


class ArtifactPublic(OutModel):
    """A file a job produced."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "student.pt",
                    "format": "torchscript",
                    "size_bytes": 19381,
                    "sha256": "218ba24341b5f1c711303efa9e3c5b957297f43141a5bddf08bdde7eff578774",
                }
            ]
        },
    )

    name: str
    format: str
    size_bytes: int
    sha256: str


class ArtifactsPage(BaseModel):
    data: list[ArtifactPublic]
    next_after: str | None = None
