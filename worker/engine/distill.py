"""distill(): the whole job, phase by phase: validating, teacher_outputs, training, evaluating, exporting."""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from worker.engine.config import DatasetSpec, DistillConfig, ProgressEvent
from worker.engine.errors import EngineError
from worker.engine.evaluate import evaluate_and_export
from worker.engine.loop import Split, train_student
from worker.engine.prepare import Prepared, prepare, set_teacher_width
from worker.engine.report import build_report, write_report
from worker.engine.students import build_student
from worker.engine.teacher_outputs import cache_key, compute_teacher_outputs, teacher_outputs

logger = logging.getLogger(__name__)


def resolve_device(requested: str | None) -> str:
    """The configured device, else "cuda" when available, else "cpu"."""
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("invalid_config", f"device {requested!r} requested but CUDA is not available")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def distill(
    teacher_path: str,
    train: DatasetSpec,
    eval: DatasetSpec | None,
    config: DistillConfig,
    out_dir: str,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | None = None,
    teacher_cache_dir: str | None = None,
    precomputed: dict | Callable[[np.ndarray, np.ndarray | None], dict] | None = None,
) -> dict:
    """Distil the teacher into a student; write artifacts and report.json into out_dir; return the report.

    `precomputed`: the teacher's outputs computed elsewhere (e.g. in a sandbox), so that the teacher file is
    never opened in this process: {"train": logits [train rows, C], "eval": logits [eval rows, C] or None
    (None when there is no eval dataset: the held-out eval rows are sliced from "train"), "info":
    {"num_parameters", "size_bytes", "latency_ms", ...}}, or a callable (train_x, eval_x or None) -> that
    dict, called only when the teacher-outputs cache misses. Ignored when augmenting (the teacher must
    then run on every batch, in this process).
    """
    try:
        return _distill(
            teacher_path,
            train,
            eval,
            config,
            out_dir,
            progress or (lambda event: None),
            should_stop,
            checkpoint_dir,
            teacher_cache_dir,
            precomputed,
        )
    except EngineError:
        raise
    except Exception as exc:  # anything else is our bug, not the user's: say so plainly
        logger.exception("distillation failed")
        raise EngineError("internal", f"{type(exc).__name__}: {exc}") from exc


def _distill(
    teacher_path,
    train_spec,
    eval_spec,
    config,
    out_dir,
    emit,
    should_stop,
    checkpoint_dir,
    teacher_cache_dir,
    precomputed=None,
) -> dict:
    emit(ProgressEvent("phase", "validating inputs", {"phase": "validating"}))
    config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    os.makedirs(out_dir, exist_ok=True)
    if precomputed is not None and config.augmenting:
        logger.info("augmentation is on: precomputed teacher outputs are ignored; the teacher runs online")
        precomputed = None
    prep = prepare(teacher_path, train_spec, eval_spec, config, device, load=precomputed is None)
    labeled = prep.train.y is not None
    if not labeled:
        emit(
            ProgressEvent(
                "warning",
                "the training data has no labels: the hard-label term is dropped and "
                "the student learns from the teacher's outputs only (alpha = 1)",
                {"alpha": 1.0},
            )
        )

    emit(ProgressEvent("phase", "computing teacher outputs", {"phase": "teacher_outputs"}))
    if precomputed is not None:
        all_logits, given_eval, cache_status = _precomputed_logits(
            prep, train_spec, eval_spec, precomputed, teacher_cache_dir
        )
        eval_x, eval_y, eval_logits = _eval_split(prep, eval_spec, all_logits, None, given_eval)
    else:
        all_logits, cache_status = _train_teacher_logits(prep, train_spec, config, teacher_cache_dir, emit)
        eval_x, eval_y, eval_logits = _eval_split(prep, eval_spec, all_logits, teacher_cache_dir)

    emit(ProgressEvent("phase", "training the student", {"phase": "training"}))
    train_split, val_split = _train_val_splits(prep, all_logits, device)
    input_shape, input_dtype = prep.train.input_shape, str(prep.train.x.dtype)

    def new_student():
        torch.manual_seed(config.seed)  # the baseline starts from the very same initial weights
        student = build_student(
            config.student, input_shape, input_dtype, prep.num_classes, prep.vocab_size, prep.pad_id
        )
        return student.to(device)

    student = new_student()
    _check_student(student, train_split.x[:2].to(device), prep.num_classes)
    started = time.monotonic()
    result = train_student(
        student,
        train_split,
        val_split,
        config,
        alpha=config.alpha if labeled else 1.0,
        num_classes=prep.num_classes,
        device=device,
        teacher=prep.teacher,
        progress=emit,
        should_stop=should_stop,
        checkpoint_dir=checkpoint_dir,
        pad_id=prep.pad_id,
        mask_id=prep.mask_id,
    )
    train_seconds = time.monotonic() - started

    baseline_model = None
    if config.baseline and not labeled:
        emit(ProgressEvent("warning", "baseline needs labels and the training data has none; skipped", {}))
    elif config.baseline:
        emit(ProgressEvent("info", "training the baseline: same student, labels only (alpha = 0)", {}))
        baseline_model = new_student()
        train_student(
            baseline_model,
            train_split,
            val_split,
            config,
            alpha=0.0,
            num_classes=prep.num_classes,
            device=device,
            teacher=prep.teacher,
            progress=emit,
            should_stop=should_stop,
            checkpoint_dir=os.path.join(checkpoint_dir, "baseline") if checkpoint_dir else None,
            report_progress=False,
            pad_id=prep.pad_id,
            mask_id=prep.mask_id,
        )

    sections = evaluate_and_export(
        prep,
        student,
        baseline_model,
        config,
        out_dir,
        eval_x,
        eval_y,
        eval_logits,
        train_spec,
        eval_spec,
        emit,
    )
    report = build_report(
        device=device,
        train_seconds=train_seconds,
        eval_examples=len(eval_x),
        classes=prep.classes,
        teacher=sections["teacher"],
        student=sections["student"],
        baseline=sections["baseline"],
        teacher_outputs_cache=cache_status,
        history=result.history,
        extra={"best_epoch": result.best_epoch, "loss": config.loss, **sections["extra"]},
    )
    write_report(out_dir, report)
    return report


def _preprocessing(spec: DatasetSpec, prep: Prepared) -> dict:
    # Everything that changes the rows the teacher sees, besides the dataset file itself.
    tokenizer = ex_sha(spec.tokenizer_path)
    return {
        "format": spec.format,
        "label_column": spec.label_column,
        "text_column": spec.text_column,
        "max_length": spec.max_length,
        "tokenizer": tokenizer,
        "shape": prep.train.input_shape,
        "dtype": str(prep.train.x.dtype),
    }


def ex_sha(path: str | None) -> str | None:
    from worker.engine.data import file_sha256

    return file_sha256(path) if path else None


def _train_teacher_logits(prep, spec, config, cache_dir, emit) -> tuple[torch.Tensor, str | None]:
    """Teacher logits for every train row, or (when augmenting) only for the held-out rows."""
    if config.augmenting:
        emit(
            ProgressEvent(
                "info",
                "augmentation is on: the teacher runs on every augmented batch, so its outputs are not cached",
                {"teacher_outputs_cache": None},
            )
        )
        held_out = np.concatenate([prep.val_index] + ([prep.eval_index] if prep.eval_index is not None else []))
        logits = torch.zeros(prep.train.rows, prep.num_classes)
        logits[held_out] = compute_teacher_outputs(prep.teacher, prep.train.x[held_out])
        return logits, None
    key = cache_key(prep.teacher_sha256, prep.train_sha256, _preprocessing(spec, prep))
    return teacher_outputs(prep.teacher, prep.train.x, cache_dir, key)


def _eval_split(prep, eval_spec, train_logits, cache_dir, eval_logits=None):
    if prep.eval is None:
        index = prep.eval_index
        y = None if prep.train.y is None else prep.train.y[index]
        return prep.train.x[index], y, train_logits[index]
    if eval_logits is not None:
        return prep.eval.x, prep.eval.y, eval_logits
    key = cache_key(prep.teacher_sha256, prep.eval_sha256, _preprocessing(eval_spec, prep))
    logits, _ = teacher_outputs(prep.teacher, prep.eval.x, cache_dir, key)
    return prep.eval.x, prep.eval.y, logits


def _teacher_info_path(cache_dir: str, teacher_sha256: str) -> str:
    return os.path.join(cache_dir, f"teacher-info-{teacher_sha256}.json")


def _read_cached(path: str, rows: int) -> np.ndarray | None:
    if not os.path.exists(path):
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable teacher cache %s: %s", path, exc)
        return None
    return cached if cached.ndim == 2 and cached.shape[0] == rows else None


def _write_atomic(path: str, write) -> None:
    # Write then rename so a concurrent reader never sees half a file.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _precomputed_logits(prep, train_spec, eval_spec, precomputed, cache_dir):
    """(train logits, eval logits or None, cache status) from the cache or `precomputed`; never the teacher.

    Sets prep.num_classes / classes from the logits' width and prep.teacher_info from the outputs' info.
    """
    rows = {"train": prep.train.rows, "eval": None if prep.eval is None else prep.eval.rows}
    paths, info_path = {}, None
    if cache_dir is not None:
        key = cache_key(prep.teacher_sha256, prep.train_sha256, _preprocessing(train_spec, prep))
        paths["train"] = os.path.join(cache_dir, f"teacher-{key}.npy")
        if prep.eval is not None:
            key = cache_key(prep.teacher_sha256, prep.eval_sha256, _preprocessing(eval_spec, prep))
            paths["eval"] = os.path.join(cache_dir, f"teacher-{key}.npy")
        info_path = _teacher_info_path(cache_dir, prep.teacher_sha256)
    status = None
    logits: dict[str, np.ndarray | None] = {"train": None, "eval": None}
    info = None
    if cache_dir is not None:
        cached = {name: _read_cached(path, rows[name]) for name, path in paths.items()}
        try:
            with open(info_path) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            info = None
        widths = {c.shape[1] for c in cached.values() if c is not None}
        if info is not None and all(c is not None for c in cached.values()) and len(widths) == 1:
            logits.update(cached)
            status = "hit"
    if status is None:
        given = precomputed
        if callable(given):
            given = given(prep.train.x, None if prep.eval is None else prep.eval.x)
        logits = {"train": np.asarray(given["train"]), "eval": None}
        if prep.eval is not None:
            if given.get("eval") is None:
                raise EngineError("internal", "teacher outputs for the eval dataset are missing")
            logits["eval"] = np.asarray(given["eval"])
        info = dict(given.get("info") or {})
        width = None
        for name, value in logits.items():
            if value is None:
                continue
            if value.ndim != 2 or value.shape[0] != rows[name] or (width is not None and value.shape[1] != width):
                raise EngineError(
                    "input_mismatch",
                    f"the teacher returned logits of shape {list(value.shape)} for the {rows[name]} {name} examples",
                )
            if not np.isfinite(value).all():
                raise EngineError("invalid_model", f"the teacher returned NaN or infinite logits on {name}")
            width = value.shape[1]
        if cache_dir is not None:
            for name, path in paths.items():
                _write_atomic(path, lambda f, v=logits[name]: np.save(f, v.astype(np.float32), allow_pickle=False))
            _write_atomic(info_path, lambda f: f.write(json.dumps(info).encode()))
            status = "miss"
    set_teacher_width(prep, int(logits["train"].shape[1]))
    prep.teacher_info = info
    as_tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return as_tensor(logits["train"]), as_tensor(logits["eval"]), status


def _train_val_splits(prep: Prepared, logits: torch.Tensor, device: str) -> tuple[Split, Split]:
    x, y = torch.from_numpy(prep.train.x), None if prep.train.y is None else torch.from_numpy(prep.train.y)
    # Move the data to the device once when it fits comfortably; otherwise batches travel each step.
    storage = device
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        storage = device if x.nbytes + logits.nbytes < 0.3 * free else "cpu"

    def split(index: np.ndarray) -> Split:
        i = torch.from_numpy(index)
        return Split(x[i].to(storage), None if y is None else y[i].to(storage), logits[i].to(storage))

    return split(prep.train_index), split(prep.val_index)


def _check_student(student: torch.nn.Module, sample: torch.Tensor, num_classes: int) -> None:
    try:
        with torch.no_grad():
            out = student.eval()(sample)
    except Exception as exc:
        raise EngineError(
            "invalid_student",
            f"the student cannot take examples of shape {list(sample.shape[1:])} {sample.dtype}: {exc}",
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EngineError("invalid_student", f"the student must return [batch, {num_classes}] logits, got {shape}")
