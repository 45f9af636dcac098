"""Jobs: the request that creates one and the job as clients see it (DESIGN.md: JobCreate, Job)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    create_model,
    field_validator,
    model_serializer,
)

from contract import DEFAULT_EXPORTS, EXPORT_FORMATS, HYPERPARAMETERS, Hyperparameter, check_augmentation
from contract.jobs import JobStatus, Phase
from contract.resources import MAX_GPUS
from contract.wire.common import ErrorDetail, OutModel, Timestamp, webhook_url_problem
from contract.wire.lm import LMOptions
from contract.wire.students import StudentSpec, default_student

ExportFormatName = Literal[EXPORT_FORMATS]  # type: ignore[valid-type]  # the tuple's values, dynamic to mypy


class _HyperparametersBase(BaseModel):
    # Unknown keys are refused so that a typo is not silently ignored. Every number is bounded, NaN and Infinity
    # (which Python's JSON parser accepts) are refused, and values are taken strictly as the JSON they are ("3" is
    # not an integer, 3.0 is not an epoch count): the engine takes them the same way (contract.hyperparameters).
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("augmentation", check_fields=False)
    @classmethod
    def _known_augmentations(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return None if value is None else check_augmentation(value)


def _hyperparameter_type(p: Hyperparameter) -> Any:
    annotation: Any = Literal[p.choices] if p.choices else (dict[str, float] if p.type is dict else p.type)
    return annotation | None if p.nullable else annotation


def _hyperparameter_field(p: Hyperparameter) -> tuple[Any, Any]:
    """A pydantic field from a row of the contract's table: its type, default, bounds and help."""
    limits: dict[str, Any] = {}
    if p.bounds is not None:
        if p.bounds.low is not None:
            limits["gt" if p.bounds.low_open else "ge"] = p.bounds.low
        if p.bounds.high is not None:
            limits["lt" if p.bounds.high_open else "le"] = p.bounds.high
    return _hyperparameter_type(p), Field(p.default, description=p.describe(), **limits)


Hyperparameters = create_model(  # type: ignore[call-overload]  # fields from the table: dynamic to mypy
    "Hyperparameters",
    __base__=_HyperparametersBase,
    __doc__="Training settings (contract.HYPERPARAMETERS); unknown keys are refused.",
    **{p.name: _hyperparameter_field(p) for p in HYPERPARAMETERS},
)


class _ResolvedBase(BaseModel):
    # Typed like the request but without its bounds and closed key set: a job stored under older limits must
    # still read back.
    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler) -> Any:
        # The keys the job was stored with, no more: a setting added since is not claimed for an older job.
        stored = self.model_fields_set | set(self.model_extra or {})
        return {key: value for key, value in handler(self).items() if key in stored}


ResolvedHyperparameters = create_model(  # type: ignore[call-overload]  # fields from the table: dynamic to mypy
    "ResolvedHyperparameters",
    __base__=_ResolvedBase,
    __doc__="The job's training settings, every default filled in when it was created (see Hyperparameters).",
    **{p.name: (_hyperparameter_type(p), Field(p.default, description=p.describe())) for p in HYPERPARAMETERS},
)


class Resources(BaseModel):
    """What a job needs from its worker; `gpus` absent (null) lets any worker take it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    gpus: int | None = Field(
        None,
        ge=0,
        le=MAX_GPUS,
        description="GPUs the job trains on: 0 runs it on a CPU worker, N on a worker with at least N GPUs; "
        "null (the default) lets any worker take it, and a GPU worker gives it one GPU",
    )


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
    student: StudentSpec = Field(default_factory=default_student)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    lm: LMOptions | None = Field(
        None,
        description="Causal-LM teachers only: how the language model is distilled (defaults when left out); "
        "stored with the job's hyperparameters under `lm`",
    )
    export: list[ExportFormatName] = Field(default_factory=lambda: list(DEFAULT_EXPORTS))
    baseline: bool = False
    resources: Resources = Field(default_factory=Resources)
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
    """The latest epoch's numbers on the validation slice of train (the report's `accuracy` is the eval split's)."""

    train_loss: float | None = None
    # Jobs stored before the rename hold eval_accuracy / eval_agreement: they are read under the new names.
    validation_accuracy: float | None = Field(
        None, validation_alias=AliasChoices("validation_accuracy", "eval_accuracy")
    )
    validation_agreement: float | None = Field(
        None, validation_alias=AliasChoices("validation_agreement", "eval_agreement")
    )
    # Causal-LM jobs: their numbers are next-token NLLs and perplexities, not accuracies, so they have their own.
    validation_nll: float | None = Field(None, description="causal LM: the latest epoch's mean next-token NLL")
    teacher_perplexity: float | None = Field(None, description="causal LM: held-out perplexity, at the end")
    student_perplexity: float | None = Field(None, description="causal LM: held-out perplexity, at the end")
    baseline_perplexity: float | None = Field(None, description="causal LM: the SFT baseline's, at the end")
    gap_recovered: float | None = Field(None, description="causal LM: (student - baseline) / (teacher - baseline)")
    sampled_batches: int | None = Field(
        None, description="causal LM, on_policy: the student's training batches so far that were its own samples"
    )
    data_batches: int | None = Field(
        None, description="causal LM, on_policy: those that were the data's completions (the warm start's included)"
    )


class JobPublic(OutModel):
    """A distillation job as clients see it."""

    model_config = ConfigDict(
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
                    "resources": {"gpus": 1},
                    "max_runtime_s": None,
                    "webhook_url": None,
                    "progress": {"epoch": 7, "epochs": 20, "step": 140, "total_steps": 400, "fraction": 0.35},
                    "metrics": {"train_loss": 0.41, "validation_accuracy": 0.93, "validation_agreement": 0.95},
                    "error": None,
                    "created_at": "2026-11-29T19:10:31.121378Z",
                    "started_at": "2026-11-29T19:10:33.567513Z",
                    "finished_at": None,
                }
            ]
        },
    )

    id: str
    status: JobStatus
    phase: Phase | None
    attempt: int
    teacher_id: str
    train_dataset_id: str
    eval_dataset_id: str | None
    student: StudentSpec
    hyperparameters: ResolvedHyperparameters
    export: list[ExportFormatName]
    baseline: bool
    resources: Resources = Field(default_factory=Resources)
    max_runtime_s: int | None = None
    webhook_url: str | None = None
    progress: Progress
    metrics: Metrics
    error: ErrorDetail | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None

    @field_validator("progress", "metrics", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return value or {}
