"""Student architectures: a registry from a JSON spec to an nn.Module that takes the teacher's input."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from contract.students import ARCHITECTURES, TEXT_ARCHITECTURES
from worker.engine.errors import EngineError


class MLP(nn.Module):
    """Flatten any input, then Linear-ReLU-Dropout blocks and a linear classifier."""

    def __init__(self, in_features: int, hidden_sizes: list[int], num_classes: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks over [C, H, W] inputs, global average pooling, a linear classifier."""

    def __init__(self, in_channels: int, channels: list[int], num_classes: int, dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for size in channels:
            blocks += [
                nn.Conv2d(width, size, 3, padding=1, bias=False),
                nn.BatchNorm2d(size),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            width = size
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(self.features(x)).flatten(1)))


def _positive_ints(spec: dict, key: str, default: list[int]) -> list[int]:
    value = spec.get(key, default)
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65536 for v in value)
    ):
        raise EngineError("invalid_student", f"{key} must be a non-empty list of positive integers, got {value!r}")
    return value


def _default(architecture: str, name: str):
    """A size parameter's default, from the contract's table (the one place defaults are written)."""
    return next(p.default for p in ARCHITECTURES[architecture].parameters if p.name == name)


def _dropout(spec: dict) -> float:
    value = spec.get("dropout", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise EngineError("invalid_student", f"dropout must be in [0, 1), got {value!r}")
    return float(value)


def _check_keys(spec: dict, allowed: set[str]) -> None:
    unknown = sorted(set(spec) - allowed - {"architecture"})
    if unknown:
        raise EngineError(
            "invalid_student",
            f"unknown student setting(s) {unknown} for {spec.get('architecture')!r}; known: {sorted(allowed)}",
        )


def text_student_spec(spec: dict, pad_id: int | None) -> dict:
    """A text student's spec with the data's pad id filled in (the tokenizer decides, not the user)."""
    if not isinstance(spec, dict) or spec.get("architecture") not in TEXT_ARCHITECTURES:
        return spec
    return {**spec, "pad_id": int(pad_id if pad_id is not None else spec.get("pad_id", 0))}


def build_student(
    spec: dict,
    input_shape: list[int],
    input_dtype: str,
    num_classes: int,
    vocab_size: int | None = None,
    pad_id: int | None = None,
    teacher=None,
) -> nn.Module:
    """Build a fresh student from its spec for inputs of `input_shape` (per example) and `num_classes`.

    Text students take `vocab_size` and `pad_id` from the data (the tokenizer's pad id, 0 if none); an `hf`
    student takes its configuration and first weights from the loaded Hugging Face `teacher`.
    """
    if not isinstance(spec, dict):
        raise EngineError("invalid_student", f"student must be an object, got {spec!r}")
    if "model_path" in spec:
        return load_uploaded_student(spec["model_path"], num_classes, vocab_size, pad_id)
    architecture = spec.get("architecture")
    if architecture == "hf":
        from worker.engine.hf_student import build_hf_student

        return build_hf_student(spec, teacher)
    if architecture in TEXT_ARCHITECTURES:
        return _text_student(spec, architecture, input_shape, input_dtype, num_classes, vocab_size, pad_id)
    is_float = "float" in str(input_dtype)
    if architecture in ("mlp", "cnn") and not is_float:
        raise EngineError(
            "invalid_student",
            f"{architecture!r} needs float features but the data is "
            f"{input_dtype}; for token ids use one of {list(TEXT_ARCHITECTURES)}",
        )
    if architecture == "mlp":
        _check_keys(spec, {"hidden_sizes", "dropout"})
        hidden = spec.get("hidden_sizes", [64])
        if hidden != []:
            hidden = _positive_ints(spec, "hidden_sizes", _default("mlp", "hidden_sizes"))
        return MLP(math.prod(input_shape), hidden, num_classes, _dropout(spec))
    if architecture == "cnn":
        _check_keys(spec, {"channels", "dropout"})
        if len(input_shape) != 3:
            raise EngineError(
                "invalid_student",
                f"'cnn' needs examples shaped [channels, height, width], "
                f"got {input_shape}; use 'mlp' for flat features",
            )
        channels = _positive_ints(spec, "channels", _default("cnn", "channels"))
        return CNN(input_shape[0], channels, num_classes, _dropout(spec))
    raise EngineError(
        "invalid_student",
        f"unknown student architecture {architecture!r}; known: {list(ARCHITECTURES)}, "
        "or {'model_path': ...} for an uploaded TorchScript student",
    )


def _text_student(spec, architecture, input_shape, input_dtype, num_classes, vocab_size, pad_id) -> nn.Module:
    from worker.engine.text_students import build_text_student

    if "int" not in str(input_dtype):
        raise EngineError(
            "invalid_student",
            f"{architecture!r} needs token ids but the data is {input_dtype}; use 'mlp' or 'cnn'",
        )
    if vocab_size is None:
        raise EngineError("invalid_student", f"{architecture!r} needs the vocabulary size of the data")
    try:
        return build_text_student(text_student_spec(spec, pad_id), input_shape, num_classes, vocab_size)
    except ValueError as exc:
        raise EngineError("invalid_student", str(exc)) from exc


def load_uploaded_student(
    path: str, num_classes: int | None = None, vocab_size: int | None = None, pad_id: int | None = None
) -> nn.Module:
    """Load an uploaded TorchScript or Hugging Face student for fine-tuning (its parameters stay trainable)."""
    from worker.engine.teachers import sniff_format

    try:
        fmt = sniff_format(path)
    except EngineError as exc:
        raise EngineError("invalid_student", exc.message) from exc
    if fmt == "hf":
        from worker.engine.hf_student import load_hf_student

        return load_hf_student(path, num_classes, vocab_size, pad_id)
    if fmt != "torchscript":
        raise EngineError("invalid_student", "an uploaded student must be TorchScript so it can be trained")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(path, map_location="cpu")
    if not any(p.requires_grad for p in module.parameters()):
        raise EngineError("invalid_student", "the uploaded student has no trainable parameters")
    return module


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in model.parameters())
