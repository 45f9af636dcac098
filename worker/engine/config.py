"""Inputs of the engine: dataset description, distillation configuration, progress events."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from contract import (
    DEFAULT_EXPORTS,
    EXPORT_FORMATS,
    HYPERPARAMETERS,
    HYPERPARAMETERS_BY_NAME,
    InvalidHyperparameters,
    validate_hyperparameters,
)
from contract.hyperparameters import DEFAULTS
from worker.engine.errors import EngineError

NO_CLIPPING = 0.0  # grad_clip as the loop reads it when the user's grad_clip is null: it clips only above 0


@dataclass
class DatasetSpec:
    """Where a dataset lives and how to read it."""

    path: str
    format: str  # "npz" | "csv" | "jsonl" | "parquet"
    label_column: str | None = None
    text_column: str | None = None
    tokenizer_path: str | None = None
    max_length: int | None = None
    classes: list[str] | None = None
    sha256: str | None = None
    image_size: list[int] | None = None  # image_folder: [H, W] every image is resized to
    tokenizer_from: str | None = None  # "teacher": a text table tokenised at job time by the hf teacher's tokenizer


@dataclass
class ProgressEvent:
    """One thing the engine tells its caller: a phase change, progress, metrics, a warning or info."""

    type: str  # "phase" | "progress" | "metrics" | "warning" | "info"
    message: str
    data: dict = field(default_factory=dict)


@dataclass
class DistillConfig:
    """Everything that decides a distillation run; `from_dict` validates user input.

    The hyperparameters, their defaults and bounds are contract.HYPERPARAMETERS, which the API reads too; the
    other fields are the job's student, export list and baseline flag, and the device to train on.
    A null grad_clip means no clipping: it is held as 0.0 (NO_CLIPPING) and to_dict() writes it back as null.
    """

    # Empty: none named; distill() picks one by the data's kind (contract.default_student_for).
    student: dict = field(default_factory=dict)
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    learning_rate: float = DEFAULTS["learning_rate"]
    temperature: float = DEFAULTS["temperature"]
    alpha: float = DEFAULTS["alpha"]
    loss: str = DEFAULTS["loss"]
    dkd_alpha: float = DEFAULTS["dkd_alpha"]
    dkd_beta: float = DEFAULTS["dkd_beta"]
    seed: int = DEFAULTS["seed"]
    patience: int | None = DEFAULTS["patience"]
    weight_decay: float = DEFAULTS["weight_decay"]
    warmup_fraction: float = DEFAULTS["warmup_fraction"]
    grad_clip: float = DEFAULTS["grad_clip"]
    augmentation: dict | None = DEFAULTS["augmentation"]
    compile: bool = DEFAULTS["compile"]
    recipe: str = DEFAULTS["recipe"]
    export: list[str] = field(default_factory=lambda: list(DEFAULT_EXPORTS))
    baseline: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        if self.grad_clip is None:
            self.grad_clip = NO_CLIPPING

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DistillConfig:
        """Build a config from user JSON, raising EngineError("invalid_config") on impossible values."""
        d = dict(d or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise EngineError("invalid_config", f"unknown setting(s) {unknown}; known: {sorted(known)}")
        try:
            hyperparameters = validate_hyperparameters({k: v for k, v in d.items() if k in HYPERPARAMETERS_BY_NAME})
        except InvalidHyperparameters as exc:
            raise EngineError("invalid_config", exc.message) from None
        # A null student, export or baseline takes its default, as a missing one does.
        job = {k: v for k, v in d.items() if k not in HYPERPARAMETERS_BY_NAME and (v is not None or k == "device")}
        config = cls(**hyperparameters, **job)
        config.validate()
        return config

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters as the user gives them (a grad_clip of NO_CLIPPING is null)."""
        values = {p.name: getattr(self, p.name) for p in HYPERPARAMETERS}
        if values["grad_clip"] == NO_CLIPPING:
            values["grad_clip"] = None
        return values

    def to_dict(self) -> dict:
        """The resolved configuration as JSON-able data."""
        return {**dataclasses.asdict(self), **self.hyperparameters()}

    def validate(self) -> None:
        """Raise EngineError("invalid_config") when a value cannot work."""

        def bad(message: str) -> EngineError:
            return EngineError("invalid_config", message)

        try:
            validate_hyperparameters(self.hyperparameters())
        except InvalidHyperparameters as exc:
            raise bad(exc.message) from None
        if not isinstance(self.student, dict):
            raise bad("student must be an object such as {'architecture': 'mlp', 'hidden_sizes': [64]}")
        if not isinstance(self.export, list) or any(e not in EXPORT_FORMATS for e in self.export):
            raise bad(f"export must be a list drawn from {list(EXPORT_FORMATS)}, got {self.export!r}")
        if self.device is not None and not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise bad(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if not isinstance(self.baseline, bool):
            raise bad("baseline must be true or false")

    @property
    def augmenting(self) -> bool:
        """True when any augmentation is switched on (the teacher then runs online)."""
        return any(v > 0 for v in (self.augmentation or {}).values())
