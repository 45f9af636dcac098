"""The report of a finished job (DESIGN.md: Report). Accuracies are fractions in [0, 1], null where not
applicable; every object is open, so a newer engine may add keys without breaking older clients."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Latency(_Open):
    """Median milliseconds per call at batch 1 and batch 64 (null: not measured)."""

    batch_1: float | None = None
    batch_64: float | None = None


class TeacherScores(_Open):
    accuracy: float | None = None
    num_parameters: int | None = None
    size_bytes: int | None = None
    latency_ms: Latency | None = None


class StudentScores(TeacherScores):
    agreement: float | None = None


class BaselineScores(_Open):
    """The same student trained without the teacher."""

    accuracy: float | None = None
    agreement: float | None = None


class HistoryEpoch(_Open):
    """One epoch of training, measured on the validation slice held out of train."""

    epoch: int
    train_loss: float | None = None
    validation_accuracy: float | None = None
    validation_agreement: float | None = None


class SearchCandidate(_Open):
    """One student size the budget search measured: trained briefly when it fit, else only measured."""

    trial: int
    student: dict[str, Any]
    parameters: int
    latency_ms: Latency
    fits: bool
    trained: bool
    validation_metric: float | None = None
    validation_accuracy: float | None = None
    validation_agreement: float | None = None
    epochs: int = 0
    seconds: float | None = None
    why_not: str | None = None
    on_front: bool = False


class StudentSearchReport(_Open):
    """The budget search: its budget, where latency was measured, every candidate, the Pareto front, the choice."""

    budget: dict[str, Any]
    target: dict[str, Any]
    candidates: list[SearchCandidate]
    front: list[int]
    chosen: int
    seconds: float | None = None
    final_latency_ms: Latency | None = None
    final_within_budget: bool | None = None


REPORT_EXAMPLE: dict[str, Any] = {
    "job_id": "job_01a228b74cd10864fb43bff0",
    "device": "cpu",
    "train_seconds": 5.9,
    "eval_examples": 360,
    "classes": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    "teacher": {
        "accuracy": 0.9889,
        "num_parameters": 300042,
        "size_bytes": 1203419,
        "latency_ms": {"batch_1": 0.08, "batch_64": 0.61},
    },
    "student": {
        "accuracy": 0.9583,
        "agreement": 0.9611,
        "num_parameters": 2410,
        "size_bytes": 19381,
        "latency_ms": {"batch_1": 0.01, "batch_64": 0.02},
    },
    "baseline": None,
    "compression_ratio": 124.5,
    "speedup": {"batch_1": 8.0, "batch_64": 30.5},
    "teacher_outputs_cache": "miss",
    "history": [{"epoch": 1, "train_loss": 2.1, "validation_accuracy": 0.71, "validation_agreement": 0.72}],
}


class Report(_Open):
    """What the student kept of the teacher, measured on the eval split; reproducible from the downloaded files."""

    model_config = ConfigDict(json_schema_extra={"examples": [REPORT_EXAMPLE]})

    job_id: str | None
    device: str
    train_seconds: float
    eval_examples: int
    classes: list[str]
    teacher: TeacherScores
    student: StudentScores
    baseline: BaselineScores | None
    compression_ratio: float | None
    speedup: Latency
    teacher_outputs_cache: Literal["hit", "miss"] | None = None
    history: list[HistoryEpoch]
    student_search: StudentSearchReport | None = None
