"""The teacher's first call on the data: when the examples do not fit it, say why in the user's terms.

The framework's own message ("mat1 and mat2 shapes cannot be multiplied (2x21 and 20x64)") names matrices,
not columns; it is logged, and the user reads what the teacher expects, what the data has and the likely fix.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import torch

from worker.engine.config import DatasetSpec
from worker.engine.data import DEFAULT_LABEL_COLUMN, LoadedDataset
from worker.engine.dataset_hints import LABEL_NAMES
from worker.engine.errors import EngineError
from worker.engine.limits import short_list
from worker.engine.teachers import Teacher

logger = logging.getLogger(__name__)

# torch: "mat1 and mat2 shapes cannot be multiplied (2x21 and 20x64)": the data gives 21, the layer takes 20.
_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
# torch: "... expected input[2, 1, 8, 8] to have 3 channels, but got 1 channels instead".
_CHANNELS = re.compile(r"to have (\d+) channels, but got (\d+) channels")
_WANTS_INTEGERS = re.compile(r"expected scalar type Long|argument #1 'indices'", re.I)
_WANTS_FLOATS = re.compile(r"expected scalar type Float|expected .*Float|must be float|found dtype Long", re.I)
_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|bad_alloc", re.I)


def probe_teacher(teacher: Teacher, data: LoadedDataset, spec: DatasetSpec) -> None:
    """Run the teacher on the first rows; raise input_mismatch or teacher_failed in the user's terms."""
    sample = torch.from_numpy(data.x[: min(2, data.rows)])
    try:
        teacher(sample)
    except EngineError:
        raise
    except Exception as exc:
        logger.info("the teacher failed on the first rows: %s", exc)
        raise first_call_error(teacher, data, spec, exc) from exc


def first_call_error(teacher: Teacher, data: LoadedDataset, spec: DatasetSpec, exc: Exception) -> EngineError:
    """The user's error for a teacher that failed on the data's first rows; never the framework's text."""
    text = str(exc)
    if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(text):
        return EngineError("sandbox_memory_limit", "the teacher tried to use more memory than the job may use")
    shape = list(data.x.shape[1:])
    declared = _declared_shape(teacher)
    takes = "" if declared is None else f"the teacher takes shape {declared}; "
    seen = f" ({takes}the data's examples: shape {shape}, {data.x.dtype})"
    dtype_problem = _dtype_problem(teacher, data.x, text)
    if dtype_problem:
        return EngineError("input_mismatch", dtype_problem + seen)
    want, have = _expected_width(teacher, data.x, text)
    if want is not None and have is not None and want != have:
        return EngineError("input_mismatch", _width_message(want, have, data, spec) + seen)
    if declared is not None and declared != shape:
        return EngineError(
            "input_mismatch",
            f"the teacher expects examples of shape {declared}; the data's examples are {shape} {data.x.dtype}: "
            "reshape the data to the teacher's input",
        )
    return EngineError(
        "teacher_failed",
        f"the teacher failed ({type(exc).__name__}) on the first examples of shape {shape} {data.x.dtype}; "
        "check that it runs on this kind of data outside the service",
    )


def _declared_shape(teacher: Teacher) -> list | None:
    if teacher.input_shape is None or len(teacher.input_shape) < 2:
        return None
    return list(teacher.input_shape[1:])


def _expected_width(teacher: Teacher, x: np.ndarray, text: str) -> tuple[int | None, int | None]:
    """(what the teacher's first layer takes, what the data gives) along the mismatched axis, when known."""
    declared = _declared_shape(teacher)
    if declared is not None and x.ndim == 2 and len(declared) == 1 and isinstance(declared[0], int):
        return declared[0], int(x.shape[1])
    match = _MATMUL.search(text)
    if match:
        return int(match.group(3)), int(match.group(2))
    match = _CHANNELS.search(text)
    if match:
        return int(match.group(1)), int(match.group(2))
    return None, None


def _width_message(want: int, have: int, data: LoadedDataset, spec: DatasetSpec) -> str:
    x = data.x
    if x.dtype == np.int64 and x.ndim == 2:  # token ids: the width is the padded length
        return (
            f"the teacher expects sequences of {want} tokens; the data is padded to {have}: "
            f"upload the dataset with max_length={want}"
        )
    if x.ndim != 2:
        return (
            f"the teacher expects {want} channels; the data's examples have {have} (shape {list(x.shape[1:])}): "
            "convert the images to the teacher's channels (e.g. grayscale vs RGB)"
        )
    head = f"the teacher expects {want} features; the dataset has {have} feature columns"
    if data.columns is not None and spec.label_column is None and data.y is None:
        head = f"the teacher expects {want} features; the dataset has {have} columns and no label column"
    return f"{head} — {_likely_fix(want, have, data, spec)}"


def _likely_fix(want: int, have: int, data: LoadedDataset, spec: DatasetSpec) -> str:
    columns = data.columns
    if have == want + 1 and data.y is None and columns is not None:
        label = spec.label_column or DEFAULT_LABEL_COLUMN
        likely = next((c for c in columns if c.strip().lower() in LABEL_NAMES), None)
        if likely is not None:
            return (
                f"no column is named {label!r}, so every column was read as a feature: is the label column named "
                f"{likely!r}? pass label_column={likely!r}"
            )
        return (
            f"no column is named {label!r}, so every column was read as a feature; is the label one of "
            f"{short_list(columns)}? pass label_column"
        )
    if have > want and columns is not None:
        return f"drop the {have - want} extra column(s) (an index or id column?) from {short_list(columns)}"
    if have < want and spec.label_column and columns is not None:
        return f"is {spec.label_column!r} a feature rather than the label? columns: {short_list(columns)}"
    if have < want:
        return f"{want - have} feature(s) the teacher was trained on are missing from the data"
    return "the data must have the features the teacher was trained on, in the same order"


def _dtype_problem(teacher: Teacher, x: np.ndarray, text: str) -> str | None:
    """A message when the teacher takes token ids and the data is floats, or the other way round."""
    declared = np.dtype(teacher.input_dtype) if teacher.input_dtype is not None else None
    wants_ints = (declared is not None and declared.kind in "iu") or bool(_WANTS_INTEGERS.search(text))
    wants_floats = (declared is not None and declared.kind == "f") or bool(_WANTS_FLOATS.search(text))
    if wants_ints and x.dtype.kind == "f":
        return (
            "the teacher takes token ids (integers) but the data holds float features: for text, upload the "
            "dataset with text_column and its tokenizer"
        )
    if wants_floats and x.dtype.kind in "iu":
        return (
            "the teacher takes float features but the data holds integer token ids: upload numeric features, "
            "or a text teacher for text"
        )
    return None
