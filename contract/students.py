"""The built-in student architectures and the size parameters each one takes (DESIGN.md, "Formats").

A student is either one of these, `{"architecture": "mlp", "hidden_sizes": [64]}`, or an uploaded model,
`{"model_id": "..."}`. A size parameter left out, or given as null, takes the engine's default.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract.bounds import Bounds, as_integer, as_number

SIZE = Bounds(1, 65536)
DROPOUT = Bounds(0, 1, high_open=True)
MAX_LIST_ITEMS = 64


@dataclass(frozen=True)
class SizeParameter:
    """One parameter of an architecture; `kind` is "int", "int_list", "dropout", "bool" or "choice"."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    min_items: int = 1  # for "int_list"

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value, in words; None when it is fine."""
        if self.kind == "int":
            integer = as_integer(value)
            ok = integer is not None and SIZE.contains(integer)
            return None if ok else f"{self.name} must be an integer in {SIZE}"
        if self.kind == "int_list":
            ok = (
                isinstance(value, list)
                and self.min_items <= len(value) <= MAX_LIST_ITEMS
                and all(as_integer(v) is not None and SIZE.contains(v) for v in value)
            )
            return (
                None
                if ok
                else (f"{self.name} must be a list of {self.min_items} to {MAX_LIST_ITEMS} integers in {SIZE}")
            )
        if self.kind == "dropout":
            number = as_number(value)
            return None if number is not None and DROPOUT.contains(number) else f"dropout must be in {DROPOUT}"
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"{self.name} must be true or false"
        return None if value in self.choices else f"{self.name} must be one of {list(self.choices)}"


@dataclass(frozen=True)
class StudentArchitecture:
    name: str
    inputs: str  # "features" (float, any shape), "images" (float [C, H, W]) or "tokens" (integer ids [L])
    help: str
    parameters: tuple[SizeParameter, ...]

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)


def _dropout(default: float) -> SizeParameter:
    return SizeParameter("dropout", "dropout", default, "dropout probability")


STUDENT_ARCHITECTURES: tuple[StudentArchitecture, ...] = (
    StudentArchitecture(
        "mlp",
        "features",
        "flatten, then Linear-ReLU blocks and a linear classifier",
        (
            SizeParameter("hidden_sizes", "int_list", [64], "width of each hidden layer ([] for none)", min_items=0),
            _dropout(0.0),
        ),
    ),
    StudentArchitecture(
        "cnn",
        "images",
        "Conv-BN-ReLU-MaxPool blocks, global average pooling, a classifier",
        (
            SizeParameter("channels", "int_list", [16, 32], "channels of each convolution block"),
            _dropout(0.0),
        ),
    ),
    StudentArchitecture(
        "lstm",
        "tokens",
        "embedding, LSTM and pad-aware pooling",
        (
            SizeParameter("embedding_dim", "int", 64, "embedding width"),
            SizeParameter("hidden_dim", "int", 64, "LSTM hidden width"),
            SizeParameter("num_layers", "int", 1, "stacked LSTM layers"),
            SizeParameter("bidirectional", "bool", False, "also read right to left"),
            _dropout(0.0),
            SizeParameter(
                "pooling",
                "choice",
                "mean",
                "mean of the states over real tokens, or the last one",
                choices=("mean", "last"),
            ),
        ),
    ),
    StudentArchitecture(
        "textcnn",
        "tokens",
        "embedding, parallel 1-d convolutions, max pooling (Kim 2014)",
        (
            SizeParameter("embedding_dim", "int", 64, "embedding width"),
            SizeParameter("num_filters", "int", 64, "filters per kernel size"),
            SizeParameter("kernel_sizes", "int_list", [3, 4, 5], "convolution widths in tokens"),
            _dropout(0.1),
        ),
    ),
    StudentArchitecture(
        "transformer",
        "tokens",
        "a small pre-norm Transformer encoder with mean pooling",
        (
            SizeParameter("d_model", "int", 64, "model width (a multiple of heads)"),
            SizeParameter("layers", "int", 2, "encoder blocks"),
            SizeParameter("heads", "int", 4, "attention heads"),
            SizeParameter("ff_dim", "int", None, "feed-forward width (null: 4 * d_model)"),
            _dropout(0.1),
        ),
    ),
)
# A smaller configuration of a Hugging Face teacher's own family; only with an `hf` teacher (the API checks).
HF_STUDENT = StudentArchitecture(
    "hf",
    "tokens",
    "the Hugging Face teacher's own architecture with fewer layers (hf teachers only), DistilBERT-style",
    (
        SizeParameter("num_hidden_layers", "int", None, "layers (null: half the teacher's, at least 1)"),
        SizeParameter("hidden_size", "int", None, "width (null: the teacher's; teacher_layers needs it)"),
        SizeParameter("intermediate_size", "int", None, "feed-forward width (null: the teacher's)"),
        SizeParameter("num_attention_heads", "int", None, "attention heads (null: the teacher's)"),
        SizeParameter(
            "init",
            "choice",
            "teacher_layers",
            "teacher_layers: embeddings, head and every k-th layer copied from the teacher; random: fresh weights",
            choices=("teacher_layers", "random"),
        ),
    ),
)
STUDENT_ARCHITECTURES = (*STUDENT_ARCHITECTURES, HF_STUDENT)
ARCHITECTURES: dict[str, StudentArchitecture] = {a.name: a for a in STUDENT_ARCHITECTURES}
TEXT_ARCHITECTURES: tuple[str, ...] = tuple(a.name for a in STUDENT_ARCHITECTURES if a.inputs == "tokens")
DEFAULT_STUDENT: dict[str, Any] = {"architecture": "mlp", "hidden_sizes": [64]}
# Token ids cannot go through an MLP: a job on text that names no student gets the BiLSTM that issue 9's trial on
# real text distilled to above its teacher (with the auto recipe's token dropout).
DEFAULT_TEXT_STUDENT: dict[str, Any] = {
    "architecture": "lstm",
    "embedding_dim": 32,
    "hidden_dim": 32,
    "bidirectional": True,
}
TOKEN_INPUT_DTYPES = ("int64", "int32", "text")


def default_student_for(input_dtype: str | None) -> dict[str, Any]:
    """The student a job that names none gets, by the kind of its training data (token ids or text: a BiLSTM)."""
    chosen = DEFAULT_TEXT_STUDENT if input_dtype in TOKEN_INPUT_DTYPES else DEFAULT_STUDENT
    return copy.deepcopy(chosen)


def check_student_parameters(architecture: Any, parameters: Mapping[str, Any]) -> None:
    """Raise ValueError unless `architecture` is built in and takes every one of `parameters` as given."""
    arch = ARCHITECTURES.get(architecture) if isinstance(architecture, str) else None
    if arch is None:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)} (or give model_id)")
    unknown = sorted(set(parameters) - set(arch.parameter_names))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {arch.name}; allowed: {sorted(arch.parameter_names)}")
    for parameter in arch.parameters:
        value = parameters.get(parameter.name)
        problem = None if value is None else parameter.problem(value)
        if problem:
            raise ValueError(problem)
