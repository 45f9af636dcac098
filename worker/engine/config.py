"""Inputs of the engine: dataset description, distillation configuration, progress events."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from worker.engine.errors import EngineError

LOSSES = ("kl", "mse", "dkd")
EXPORTS = ("torchscript", "safetensors", "onnx", "pt2", "int8")
PHASES = ("validating", "teacher_outputs", "training", "evaluating", "exporting")


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


@dataclass
class ProgressEvent:
    """One thing the engine tells its caller: a phase change, progress, metrics, a warning or info."""

    type: str  # "phase" | "progress" | "metrics" | "warning" | "info"
    message: str
    data: dict = field(default_factory=dict)


@dataclass
class DistillConfig:
    """Everything that decides a distillation run; `from_dict` validates user input."""

    student: dict = field(default_factory=lambda: {"architecture": "mlp", "hidden_sizes": [64]})
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.9
    loss: str = "kl"
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    seed: int = 0
    patience: int | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    augmentation: dict | None = None
    compile: bool = False
    export: list[str] = field(default_factory=lambda: ["torchscript", "safetensors"])
    baseline: bool = False
    device: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DistillConfig:
        """Build a config from user JSON, raising EngineError("invalid_config") on impossible values."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EngineError("invalid_config", f"unknown setting(s) {unknown}; known: {sorted(known)}")
        d = {k: v for k, v in d.items() if v is not None or k in ("patience", "augmentation", "device")}
        config = cls(**d)
        config.validate()
        return config

    def to_dict(self) -> dict:
        """The resolved configuration as JSON-able data."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise EngineError("invalid_config") when a value cannot work."""

        def bad(message: str) -> EngineError:
            return EngineError("invalid_config", message)

        def number(name: str, low: float, high: float, low_open: bool = False) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise bad(f"{name} must be a number, got {value!r}")
            if value < low or value > high or (low_open and value == low):
                left = "(" if low_open else "["
                raise bad(f"{name} must be in {left}{low}, {high}], got {value}")
            return float(value)

        def integer(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(f"{name} must be an integer in [{low}, {high}], got {value!r}")

        if not isinstance(self.student, dict) or not self.student:
            raise bad("student must be an object such as {'architecture': 'mlp', 'hidden_sizes': [64]}")
        integer("epochs", 1, 10_000)
        integer("batch_size", 1, 1 << 16)
        integer("seed", 0, 2**31 - 1)
        if self.patience is not None:
            integer("patience", 1, 10_000)
        number("learning_rate", 0.0, 10.0, low_open=True)
        number("temperature", 0.0, 100.0, low_open=True)
        number("alpha", 0.0, 1.0)
        number("dkd_alpha", 0.0, 100.0)
        number("dkd_beta", 0.0, 100.0)
        number("weight_decay", 0.0, 10.0)
        number("warmup_fraction", 0.0, 1.0)
        number("grad_clip", 0.0, 1e6)
        if self.loss not in LOSSES:
            raise bad(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if not isinstance(self.export, list) or any(e not in EXPORTS for e in self.export):
            raise bad(f"export must be a list drawn from {list(EXPORTS)}, got {self.export!r}")
        if self.augmentation is not None:
            allowed = {"noise": 10.0, "mixup": 10.0, "token_dropout": 1.0, "token_mask": 1.0}
            if not isinstance(self.augmentation, dict):
                raise bad("augmentation must be an object such as {'noise': 0.1, 'mixup': 0.2}")
            for key, value in self.augmentation.items():
                if key not in allowed:
                    raise bad(f"unknown augmentation {key!r}; known: {sorted(allowed)}")
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not 0 <= value <= allowed[key]
                ):
                    raise bad(f"augmentation {key} must be a number in [0, {allowed[key]}], got {value!r}")
        if self.device is not None and not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise bad(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if not isinstance(self.compile, bool) or not isinstance(self.baseline, bool):
            raise bad("compile and baseline must be true or false")

    @property
    def augmenting(self) -> bool:
        """True when any augmentation is switched on (the teacher then runs online)."""
        return bool(self.augmentation) and any(v > 0 for v in self.augmentation.values())
