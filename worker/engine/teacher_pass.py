"""The job's teacher pass: the teacher's logits for the training rows and the eval split, cached, shared by ranks."""

from __future__ import annotations

import numpy as np
import torch

from worker.engine.config import DatasetSpec, ProgressEvent
from worker.engine.prepare import Prepared
from worker.engine.ranks import SINGLE, Ranks
from worker.engine.teacher_outputs import cache_key, compute_teacher_outputs, preprocessing, teacher_outputs


def train_teacher_logits(
    prep: Prepared, spec: DatasetSpec, online_only: bool, cache_dir: str | None, emit, ranks: Ranks = SINGLE
) -> tuple[torch.Tensor, str | None]:
    """Teacher logits for every train row, or (plain recipe, augmenting) only for the held-out rows."""
    if online_only:
        emit(
            ProgressEvent(
                "info",
                "augmentation is on: the teacher runs on every augmented batch, so its outputs are not cached",
                {"teacher_outputs_cache": None},
            )
        )
        held_out = np.concatenate([prep.val_index] + ([prep.eval_index] if prep.eval_index is not None else []))
        logits = torch.zeros(prep.train.rows, prep.num_classes)
        logits[held_out] = compute_teacher_outputs(prep.teacher, prep.train.x[held_out], ranks=ranks)
        return logits, None
    key = job_cache_key(prep, spec, prep.train_sha256)
    return teacher_outputs(prep.teacher, prep.train.x, cache_dir, key, ranks)


def eval_split(prep: Prepared, eval_spec: DatasetSpec | None, train_logits, cache_dir, ranks: Ranks = SINGLE):
    """(x, y, teacher logits) of the report's eval split: the eval file, else rows held out of the train file."""
    if prep.eval is None:
        index = prep.eval_index
        y = None if prep.train.y is None else prep.train.y[index]
        return prep.train.x[index], y, train_logits[index]
    assert eval_spec is not None and prep.eval_sha256 is not None  # an eval file was read
    key = job_cache_key(prep, eval_spec, prep.eval_sha256)
    logits, _ = teacher_outputs(prep.teacher, prep.eval.x, cache_dir, key, ranks)
    return prep.eval.x, prep.eval.y, logits


def job_cache_key(prep: Prepared, spec: DatasetSpec, dataset_sha256: str) -> str:
    """The teacher-outputs cache key of one split of the job."""
    # Every split is read into the training rows' shape and dtype.
    read_as = preprocessing(spec, prep.train.input_shape, str(prep.train.x.dtype))
    return cache_key(prep.teacher_sha256, dataset_sha256, read_as)
