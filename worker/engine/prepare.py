"""Validating phase: load teacher and data, check they fit together, split train / validation / eval."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import cast

import numpy as np

from worker.engine.config import DatasetSpec, DistillConfig
from worker.engine.data import LoadedDataset, file_sha256, load_dataset
from worker.engine.errors import EngineError
from worker.engine.fit_check import probe_teacher
from worker.engine.limits import DataLimits
from worker.engine.teacher_outputs import check_teacher
from worker.engine.teachers import Teacher, load_teacher

logger = logging.getLogger(__name__)

EVAL_FRACTION = 0.2
VALIDATION_FRACTION = 0.1


@dataclass
class Prepared:
    """Everything the later phases need, with row indices into `train` for each split."""

    teacher: Teacher
    teacher_sha256: str
    train: LoadedDataset
    train_sha256: str
    eval: LoadedDataset | None  # None: the eval split is held out of train (eval_index)
    eval_sha256: str | None
    train_index: np.ndarray
    val_index: np.ndarray
    eval_index: np.ndarray | None
    num_classes: int
    classes: list[str]
    vocab_size: int | None
    pad_id: int | None = None  # token-id data: the tokenizer's pad id, which text students are built with
    mask_id: int | None = None  # token-id data: the id token masking writes
    num_label_classes: int | None = None  # the most classes any labelled split names


def with_teacher_tokenizer(spec: DatasetSpec, teacher: Teacher) -> DatasetSpec:
    """A table uploaded with tokenizer_from "teacher", pointed at the Hugging Face teacher's own tokenizer.json."""
    if spec.tokenizer_from != "teacher" or spec.tokenizer_path:
        return spec
    folder = getattr(teacher.module, "folder", None) if teacher.format == "hf" else None
    path = os.path.join(folder, "tokenizer.json") if folder else None
    if path is None or not os.path.isfile(path):
        raise EngineError(
            "invalid_dataset",
            "this dataset is to be tokenised with the teacher's tokenizer, but the teacher "
            + ("has no tokenizer.json" if teacher.format == "hf" else f"is {teacher.format}, not a Hugging Face folder")
            + "; upload the dataset again with its tokenizer.json",
        )
    return dataclasses.replace(spec, tokenizer_path=path)


def prepare(
    teacher_path: str,
    train_spec: DatasetSpec,
    eval_spec: DatasetSpec | None,
    config: DistillConfig,
    device: str,
    data_limits: DataLimits | None = None,
) -> Prepared:
    """Load and cross-check the inputs; raise EngineError with a message a user can act on."""
    teacher = load_teacher(teacher_path, device)
    train_spec = with_teacher_tokenizer(train_spec, teacher)
    eval_spec = None if eval_spec is None else with_teacher_tokenizer(eval_spec, teacher)
    train = load_dataset(train_spec, data_limits)
    evaluation = None
    if eval_spec is not None:
        if eval_spec.classes is None and train.classes and train.y is not None:
            # String labels must take the same order as in train, or class indices would disagree.
            eval_spec = dataclasses.replace(eval_spec, classes=train.classes)
        evaluation = load_dataset(eval_spec, data_limits)
        if evaluation.input_shape != train.input_shape or evaluation.x.dtype != train.x.dtype:
            raise EngineError(
                "invalid_dataset",
                f"eval examples are {evaluation.input_shape} {evaluation.x.dtype} "
                f"but train examples are {train.input_shape} {train.x.dtype}",
            )
        if train.pad_id is not None and evaluation.pad_id is not None and evaluation.pad_id != train.pad_id:
            raise EngineError(
                "invalid_dataset",
                f"the eval data is padded with id {evaluation.pad_id} but the training data with id "
                f"{train.pad_id}: upload both with the same tokenizer",
            )
    label_classes = [d.num_classes for d in (train, evaluation) if d is not None and d.y is not None]
    num_label_classes = max(cast(list[int], label_classes)) if label_classes else None  # labelled: a count
    probe_teacher(teacher, train, train_spec)  # the teacher's first call: a misfit is told in the data's terms
    num_classes = check_teacher(teacher, train.x, num_label_classes)
    classes = list(train.classes or [])
    if evaluation is not None and evaluation.classes and len(evaluation.classes) > len(classes):
        classes = list(evaluation.classes)

    train_index, val_index, eval_index = split_indices(train.rows, config.seed, holdout_eval=evaluation is None)
    return Prepared(
        teacher=teacher,
        teacher_sha256=file_sha256(teacher_path),
        train=train,
        train_sha256=train_spec.sha256 or file_sha256(train_spec.path),
        eval=evaluation,
        eval_sha256=None if eval_spec is None else eval_spec.sha256 or file_sha256(eval_spec.path),
        train_index=train_index,
        val_index=val_index,
        eval_index=eval_index,
        num_classes=num_classes,
        classes=_all_classes(classes, num_classes),
        vocab_size=_vocab_size(train, evaluation),
        pad_id=train.pad_id,
        mask_id=train.mask_id,
        num_label_classes=num_label_classes,
    )


def _all_classes(named: list[str], num_classes: int) -> list[str]:
    # Teacher classes the data never names are called by their index.
    return (list(named) + [str(i) for i in range(len(named), num_classes)])[:num_classes]


def split_indices(rows: int, seed: int, holdout_eval: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Seeded (train, validation, eval) row indices; eval is taken first and only when holdout_eval."""
    needed = 3 if holdout_eval else 2
    if rows < needed:
        raise EngineError(
            "invalid_dataset",
            f"the training data has {rows} rows; at least {needed} are needed "
            "(a validation slice" + (" and an eval split" if holdout_eval else "") + " are held out)",
        )
    order = np.random.default_rng(seed).permutation(rows)
    eval_index = None
    if holdout_eval:
        n_eval = min(rows - 2, max(1, round(EVAL_FRACTION * rows)))
        eval_index, order = np.sort(order[:n_eval]), order[n_eval:]
    n_val = min(len(order) - 1, max(1, round(VALIDATION_FRACTION * len(order))))
    return np.sort(order[n_val:]), np.sort(order[:n_val]), eval_index


def _vocab_size(train: LoadedDataset, evaluation: LoadedDataset | None) -> int | None:
    if train.x.dtype != np.int64:
        return None
    size = max(int(d.x.max()) for d in (train, evaluation) if d is not None) + 1
    if train.tokenizer_path:
        try:
            from tokenizers import Tokenizer

            size = max(size, Tokenizer.from_file(train.tokenizer_path).get_vocab_size())
        except Exception as exc:  # the ids actually present are enough to train on
            logger.info("cannot read the tokenizer's vocabulary size: %s", exc)
    return size
