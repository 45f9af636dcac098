"""The shapes the client returns: the API's own models (contract.wire) under short names, and the Report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from contract.wire import ArtifactPublic, DatasetPublic, EventPublic, JobPublic, ModelPublic

Job = JobPublic
Model = ModelPublic
Dataset = DatasetPublic
Event = EventPublic
Artifact = ArtifactPublic
ByteProgress = Callable[[int, int], None]  # (bytes done, total bytes or 0 when unknown)


class Report(BaseModel):
    """The job's report (DESIGN.md "Report"); keys the engine adds later are kept as extras."""

    model_config = ConfigDict(extra="allow")

    job_id: str | None = None
    device: str | None = None
    train_seconds: float | None = None
    eval_examples: int | None = None
    classes: list[str] = []
    teacher: dict[str, Any] = {}
    student: dict[str, Any] = {}
    baseline: dict[str, Any] | None = None
    compression_ratio: float | None = None
    speedup: dict[str, float | None] = {}
    teacher_outputs_cache: str | None = None
    history: list[dict[str, Any]] = []

    def to_dict(self) -> dict:
        """The report exactly as the API sent it."""
        return self.model_dump(mode="json")
