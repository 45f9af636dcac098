"""Teacher logits over a dataset: computed once in batches, checked, and optionally cached on disk.

The cache is keyed by the teacher file, the dataset file and how the dataset was read (`preprocessing`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import numpy as np
import torch

from worker.engine.atomic import atomic_write
from worker.engine.config import DatasetSpec
from worker.engine.data import file_sha256
from worker.engine.errors import EngineError
from worker.engine.ranks import SINGLE, Ranks
from worker.engine.teachers import Teacher

logger = logging.getLogger(__name__)

INFERENCE_BATCH = 256


def check_teacher(teacher: Teacher, x: np.ndarray, num_label_classes: int | None) -> int:
    """Run the teacher on a few rows; raise input_mismatch / class_mismatch; return its number of classes."""
    sample = torch.from_numpy(x[: min(2, len(x))])
    try:
        logits = teacher(sample)
    except EngineError:
        raise
    except Exception as exc:
        raise _first_rows_error(teacher, x, exc) from exc
    if logits.shape[0] != sample.shape[0]:
        raise EngineError(
            "input_mismatch",
            f"the teacher returned {logits.shape[0]} rows for {sample.shape[0]} examples of shape {list(x.shape[1:])}",
        )
    width = int(logits.shape[1])
    if num_label_classes is not None and width < num_label_classes:
        raise EngineError(
            "class_mismatch",
            f"teacher outputs {width} classes but the dataset has {num_label_classes} labels",
        )
    return width


# Errors that say the examples' shape or dtype does not fit the teacher (rather than the teacher breaking).
_SHAPE_PROBLEM = re.compile(
    r"shape|size mismatch|dimension|must match the size|size of tensor|mat1 and mat2|expected scalar type"
    r"|dtype|expected .*input|input .* expected",
    re.IGNORECASE,
)
_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|bad_alloc", re.IGNORECASE)


def _first_rows_error(teacher: Teacher, x: np.ndarray, exc: Exception) -> EngineError:
    """The user's error for a teacher that failed on its first rows: the data's fault, the teacher's, or memory."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = lines[-1] if lines else type(exc).__name__
    if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(str(exc)):
        return EngineError("sandbox_memory_limit", "the teacher tried to use more memory than the job may use")
    declared, misfit = "", False
    if teacher.input_shape is not None and teacher.input_dtype is not None:
        want, dtype = teacher.input_shape[1:], np.dtype(teacher.input_dtype)
        declared = f" (the teacher expects {want} of {dtype.name})"
        misfit = (
            len(want) != x.ndim - 1
            or x.dtype.kind != dtype.kind
            or any(w is not None and w != a for w, a in zip(want, x.shape[1:], strict=False))
        )
    if misfit or _SHAPE_PROBLEM.search(telling):
        return EngineError(
            "input_mismatch",
            f"the teacher cannot take this data: examples of shape {list(x.shape[1:])} and dtype "
            f"{x.dtype}{declared}; teacher error: {telling[:500]}",
        )
    return EngineError(
        "teacher_failed", f"the teacher failed on examples of shape {list(x.shape[1:])} {x.dtype}: {telling[:500]}"
    )


@torch.no_grad()
def compute_teacher_outputs(
    teacher: Teacher, x: np.ndarray, batch_size: int = INFERENCE_BATCH, ranks: Ranks = SINGLE
) -> torch.Tensor:
    """Teacher logits for every row of x, on the CPU, as float32 [N, C]; several ranks share the rows out."""
    shared = ranks.active and len(x) >= ranks.world  # fewer rows than ranks: each rank computes them all
    mine = np.ascontiguousarray(x[ranks.share(len(x))]) if shared else x
    parts = []
    for start in range(0, len(mine), batch_size):
        parts.append(teacher(torch.from_numpy(mine[start : start + batch_size])).float().cpu())
    logits = ranks.gather_rows(torch.cat(parts), len(x)) if shared else torch.cat(parts)
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise EngineError(
            "non_finite",
            f"the teacher returned NaN or infinite outputs for {bad} of {len(x)} examples; "
            "check the teacher on this data",
        )
    return logits


def preprocessing(spec: DatasetSpec, input_shape: list[int], input_dtype: str) -> dict:
    """Everything that changes the rows the teacher sees, besides the dataset file itself."""
    return {
        "format": spec.format,
        "label_column": spec.label_column,
        "text_column": spec.text_column,
        "max_length": spec.max_length,
        "tokenizer": file_sha256(spec.tokenizer_path) if spec.tokenizer_path else None,
        "shape": input_shape,
        "dtype": input_dtype,
    }


def cache_key(teacher_sha256: str, dataset_sha256: str, preprocessing: dict) -> str:
    """Key of cached teacher outputs: the teacher file, the dataset file and how it was read."""
    blob = json.dumps({"teacher": teacher_sha256, "dataset": dataset_sha256, "pre": preprocessing}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def teacher_outputs(
    teacher: Teacher, x: np.ndarray, cache_dir: str | None, key: str, ranks: Ranks = SINGLE
) -> tuple[torch.Tensor, str | None]:
    """Teacher logits for x, read from `cache_dir` when present there; returns (logits, "hit"|"miss"|None).

    With several ranks, rank 0 alone reads and writes the cache and every rank gets its answer.
    """
    if cache_dir is None:
        return compute_teacher_outputs(teacher, x, ranks=ranks), None
    path = os.path.join(cache_dir, f"teacher-{key}.npy")
    cached = _read_cache(path, len(x)) if ranks.main else None
    cached = ranks.from_main(cached)  # type: ignore[assignment]  # rank 0's tensor or None
    if cached is not None:
        return cached, "hit"
    logits = compute_teacher_outputs(teacher, x, ranks=ranks)
    if ranks.main:
        os.makedirs(cache_dir, exist_ok=True)
        _write_cache(path, logits)
    return logits, "miss"


def _read_cache(path: str, rows: int) -> torch.Tensor | None:
    if not os.path.exists(path):
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable teacher cache %s: %s", path, exc)
        return None
    return torch.from_numpy(cached) if cached.ndim == 2 and cached.shape[0] == rows else None


def _write_cache(path: str, logits: torch.Tensor) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file, not a path: np.save would append ".npy" to the name
            np.save(f, logits.numpy(), allow_pickle=False)

    # Atomic, so that a concurrent reader never sees half a file.
    atomic_write(path, write)
