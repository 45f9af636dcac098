"""Wire shapes of the v1 API (DESIGN.md, "Wire contract")."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, create_model, field_serializer, field_validator, model_validator

from contract import (
    DEFAULT_EXPORTS,
    DEFAULT_STUDENT,
    EXPORT_FORMATS,
    HYPERPARAMETERS,
    JOB_STATUSES,
    UPLOAD_STATUSES,
    Hyperparameter,
    check_augmentation,
    check_student_parameters,
)

T = TypeVar("T")


def webhook_url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL's shape (http(s), a host, no credentials), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook_url must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "webhook_url must not carry credentials; the signature authenticates the sender"
    return None


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["no job with id job_0123 in this tenant"])


class ErrorResponse(BaseModel):
    """The one error envelope: every 4xx and 5xx body has this shape."""

    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_after: str | None = None


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @field_serializer("*", when_used="json")
    def _iso(self, value: Any) -> Any:
        # ISO 8601 UTC with a Z, the same on SQLite and PostgreSQL.
        if isinstance(value, datetime):
            return value.isoformat().replace("+00:00", "Z")
        return value


class UploadPublic(_Out):
    """Fields common to uploaded models and datasets (DESIGN.md: Model / Dataset)."""

    id: str
    name: str
    format: str
    status: Literal[UPLOAD_STATUSES]
    size_bytes: int
    sha256: str
    created_at: datetime
    error: dict[str, Any] | None = None
    info: dict[str, Any] | None = None


class ModelPublic(UploadPublic):
    """An uploaded teacher or student model."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "mdl_01a228b730fb32ae985110c4",
                    "name": "teacher.pt",
                    "format": "torchscript",
                    "status": "ready",
                    "size_bytes": 84581,
                    "sha256": "b1cd89d8377244ed65c46c911a437cd1c5696a3c029abea5a952adade6ceae04",
                    "created_at": "2026-11-29T19:10:23.999610Z",
                    "error": None,
                    "info": {"format": "torchscript", "num_parameters": 19210, "input": None, "num_classes": None},
                }
            ]
        },
    )


class DatasetPublic(UploadPublic):
    """An uploaded dataset."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "dst_01a228b731f2cbe3bad7674e",
                    "name": "digits.npz",
                    "format": "npz",
                    "status": "ready",
                    "size_bytes": 116284,
                    "sha256": "5f0c7e3a9d1b2c4e6f8a0b1c3d5e7f9a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e",
                    "created_at": "2026-11-29T19:10:24.512034Z",
                    "error": None,
                    "info": {
                        "format": "npz",
                        "rows": 1797,
                        "columns": None,
                        "input": {"shape": [64], "dtype": "float32"},
                        "has_labels": True,
                        "num_classes": 10,
                        "classes": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
                    },
                }
            ]
        },
    )


class _HyperparametersBase(BaseModel):
    # Unknown keys are refused so that a typo is not silently ignored. Every number is bounded, NaN and Infinity
    # (which Python's JSON parser accepts) are refused, and values are taken strictly as the JSON they are ("3" is
    # not an integer, 3.0 is not an epoch count): the engine takes them the same way (contract.hyperparameters).
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("augmentation", check_fields=False)
    @classmethod
    def _known_augmentations(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return None if value is None else check_augmentation(value)


def _hyperparameter_field(p: Hyperparameter) -> tuple[Any, Any]:
    """A pydantic field from a row of the contract's table: its type, default, bounds and help."""
    if p.choices:
        annotation: Any = Literal[p.choices]
    else:
        annotation = dict[str, float] if p.type is dict else p.type
    if p.nullable:
        annotation = annotation | None
    limits: dict[str, float] = {}
    if p.bounds is not None:
        if p.bounds.low is not None:
            limits["gt" if p.bounds.low_open else "ge"] = p.bounds.low
        if p.bounds.high is not None:
            limits["lt" if p.bounds.high_open else "le"] = p.bounds.high
    return annotation, Field(p.default, description=p.describe(), **limits)


Hyperparameters = create_model(
    "Hyperparameters",
    __base__=_HyperparametersBase,
    __doc__="Training settings (contract.HYPERPARAMETERS); unknown keys are refused.",
    **{p.name: _hyperparameter_field(p) for p in HYPERPARAMETERS},
)


class StudentSpec(BaseModel):
    """A built-in architecture with its size parameters, or an uploaded model by id."""

    model_config = ConfigDict(extra="allow")

    architecture: str | None = None
    model_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> StudentSpec:
        extra_values = self.model_extra or {}
        if self.model_id is not None:
            if self.architecture is not None or extra_values:
                raise ValueError("give either model_id or an architecture with its parameters, not both")
            return self
        check_student_parameters(self.architecture, extra_values)
        return self


class JobCreate(BaseModel):
    """A distillation job request."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "teacher_id": "mdl_0190c7a1b2c3d4e5f6a7b8",
                    "train_dataset_id": "dst_0190c7a1b2c3d4e5f6a7",
                    "student": {"architecture": "mlp", "hidden_sizes": [32]},
                    "hyperparameters": {"epochs": 20},
                }
            ]
        },
    )

    teacher_id: str
    train_dataset_id: str
    eval_dataset_id: str | None = None
    student: StudentSpec = Field(default_factory=lambda: StudentSpec(**copy.deepcopy(DEFAULT_STUDENT)))
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    export: list[Literal[EXPORT_FORMATS]] = Field(default_factory=lambda: list(DEFAULT_EXPORTS))
    baseline: bool = False
    max_runtime_s: int | None = Field(
        None, ge=1, le=30 * 24 * 3600, description="Fail the job with code `timeout` after this many seconds"
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        examples=["https://example.com/hooks/distillery"],
        description="POSTed a signed `job.succeeded`, `job.failed` or `job.cancelled` event when the job "
        "ends (Standard Webhooks; the secret is at GET /v1/webhooks/secret). Public addresses only.",
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_shape(cls, value: str | None) -> str | None:
        if value is not None:
            problem = webhook_url_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("export")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Progress(BaseModel):
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    fraction: float | None = None


class Metrics(BaseModel):
    train_loss: float | None = None
    eval_accuracy: float | None = None
    eval_agreement: float | None = None


class JobPublic(_Out):
    """A distillation job as clients see it."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "job_01a228b74cd10864fb43bff0",
                    "status": "running",
                    "phase": "training",
                    "attempt": 1,
                    "teacher_id": "mdl_01a228b730fb32ae985110c4",
                    "train_dataset_id": "dst_01a228b731f2cbe3bad7674e",
                    "eval_dataset_id": None,
                    "student": {"architecture": "mlp", "hidden_sizes": [32]},
                    "hyperparameters": {
                        "epochs": 20,
                        "batch_size": 64,
                        "learning_rate": 0.001,
                        "temperature": 4.0,
                        "alpha": 0.9,
                        "loss": "kl",
                        "seed": 0,
                        "patience": None,
                    },
                    "export": ["torchscript", "safetensors"],
                    "baseline": False,
                    "max_runtime_s": None,
                    "webhook_url": None,
                    "progress": {"epoch": 7, "epochs": 20, "step": 140, "total_steps": 400, "fraction": 0.35},
                    "metrics": {"train_loss": 0.41, "eval_accuracy": 0.93, "eval_agreement": 0.95},
                    "error": None,
                    "created_at": "2026-11-29T19:10:31.121378Z",
                    "started_at": "2026-11-29T19:10:33.567513Z",
                    "finished_at": None,
                }
            ]
        },
    )

    id: str
    status: Literal[JOB_STATUSES]
    phase: str | None
    attempt: int
    teacher_id: str
    train_dataset_id: str
    eval_dataset_id: str | None
    student: dict[str, Any]
    hyperparameters: dict[str, Any]
    export: list[str]
    baseline: bool
    max_runtime_s: int | None = None
    webhook_url: str | None = None
    progress: Progress
    metrics: Metrics
    error: ErrorDetail | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @field_validator("progress", "metrics", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return value or {}


class EventPublic(_Out):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "type": "metrics",
                    "level": "info",
                    "message": "epoch 7: loss 0.4100, agreement 0.9500",
                    "data": {"epoch": 7, "train_loss": 0.41, "eval_accuracy": 0.93, "eval_agreement": 0.95},
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
    created_at: datetime


class EventsPage(BaseModel):
    data: list[EventPublic]
    next_after: int | None = None


class ArtifactPublic(_Out):
    model_config = ConfigDict(
        from_attributes=True,
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
