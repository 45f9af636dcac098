"""distill(): the whole job, phase by phase: validating, teacher_outputs, training, evaluating, exporting."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable

import numpy as np
import torch

from contract import default_student_for
from worker.engine.augmented_cache import AugmentedOutputs
from worker.engine.config import DatasetSpec, DistillConfig, ProgressEvent
from worker.engine.errors import EngineError
from worker.engine.evaluate import evaluate_and_export
from worker.engine.limits import DataLimits
from worker.engine.loop import Split
from worker.engine.prepare import Prepared, prepare
from worker.engine.ranks import SINGLE, Ranks
from worker.engine.recipe import plan_recipe
from worker.engine.report import build_report, write_report
from worker.engine.student_search import final_check, search_for_job
from worker.engine.students import build_student
from worker.engine.teacher_pass import eval_split, job_cache_key, train_teacher_logits
from worker.engine.training_runs import RunInputs, student_factory, train_runs

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
    max_student_parameters: int | None = None,
    data_limits: DataLimits | None = None,
    ranks: Ranks = SINGLE,
) -> dict:
    """Distil the teacher into a student; write artifacts and report.json into out_dir; return the report.

    The one entry point of a job: in the service it runs inside the job's sandboxed child (worker/job_child.py),
    which alone opens the uploads; `distillery distill` calls it on the user's own files. With several `ranks`
    (worker/engine/ranks.py) each rank calls it alike; rank 0 alone evaluates, exports and returns the report
    (the others return an empty dict once trained).
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
            max_student_parameters,
            data_limits,
            ranks,
        )
    except EngineError:
        raise
    except Exception as exc:  # anything else is our bug, not the user's: say so plainly
        if is_cuda_oom(exc):
            raise EngineError(
                "cuda_oom",
                f"the GPU ran out of memory; retry with a smaller batch_size (this job used {config.batch_size})",
            ) from exc
        logger.exception("distillation failed")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EngineError("internal", f"{type(exc).__name__}: {first}") from exc


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether an exception is the GPU running out of memory."""
    return isinstance(exc, torch.OutOfMemoryError) or "CUDA out of memory" in str(exc)


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
    max_student_parameters,
    data_limits,
    ranks,
) -> dict:
    emit(ProgressEvent("phase", "validating inputs", {"phase": "validating"}))
    config.validate()
    device = ranks.device or resolve_device(config.device)
    seed_everything(config.seed)
    os.makedirs(out_dir, exist_ok=True)
    prep = prepare(teacher_path, train_spec, eval_spec, config, device, data_limits)
    if not config.student:
        config.student = default_student_for(str(prep.train.x.dtype))
    labeled = prep.train.y is not None
    if not labeled:
        _warn_unlabeled(emit)

    plan = plan_recipe(config, prep.train.x, len(prep.train_index), labeled)
    config = plan.config
    if plan.name == "auto":
        emit(ProgressEvent("info", "auto recipe: " + "; ".join(plan.reasons.values()), plan.section()))

    emit(ProgressEvent("phase", "computing teacher outputs", {"phase": "teacher_outputs"}))
    online_only = config.augmenting and plan.name == "plain"
    all_logits, cache_status = train_teacher_logits(prep, train_spec, online_only, teacher_cache_dir, emit, ranks)
    eval_x, eval_y, eval_logits = eval_split(prep, eval_spec, all_logits, teacher_cache_dir, ranks)

    emit(ProgressEvent("phase", "training the student", {"phase": "training"}))
    train_split, val_split = _train_val_splits(prep, all_logits, device)
    splits = (train_split, val_split)
    student_search = None
    if "search" in config.student:
        base = _run_inputs(prep, config, plan, train_spec, splits, device, teacher_cache_dir)
        # Single-rank, on rank 0: candidates are timed, and ranks would not agree on timings.
        limits = (checkpoint_dir, max_student_parameters)
        searched = search_for_job(prep, plan, base, emit, limits) if ranks.main else None
        config, student_search = ranks.from_main(searched)  # rank 0's pair
        plan.config = config
    inputs = _run_inputs(prep, config, plan, train_spec, splits, device, teacher_cache_dir)
    inputs.should_stop, inputs.ranks = should_stop, ranks
    _check_student(inputs.new_student(), train_split.x[:2].to(device), prep.num_classes, max_student_parameters)
    runs = train_runs(inputs, plan, emit, checkpoint_dir)
    if not ranks.main:
        return {}
    report = _evaluate_and_report(
        prep, runs, out_dir, (eval_x, eval_y, eval_logits), (train_spec, eval_spec), emit, device, cache_status
    )
    if student_search is not None:
        report["student_search"] = final_check(student_search, report, emit)
    write_report(out_dir, report)
    return report


def _warn_unlabeled(emit) -> None:
    emit(
        ProgressEvent(
            "warning",
            "the training data has no labels: the hard-label term is dropped and "
            "the student learns from the teacher's outputs only (alpha = 1)",
            {"alpha": 1.0},
        )
    )


def _evaluate_and_report(prep, runs, out_dir, eval_split, specs, emit, device, cache_status) -> dict:
    """Evaluate and export the trained student (and baseline) on the eval split; the report as a dict."""
    config, result = runs.config, runs.result
    eval_x, eval_y, eval_logits = eval_split
    train_spec, eval_spec = specs
    sections = evaluate_and_export(
        prep, runs.student, runs.baseline, config, out_dir, eval_x, eval_y, eval_logits, train_spec, eval_spec, emit
    )
    return build_report(
        device=device,
        train_seconds=runs.train_seconds,
        eval_examples=len(eval_x),
        classes=prep.classes,
        teacher=sections["teacher"],
        student=sections["student"],
        baseline=sections["baseline"],
        teacher_outputs_cache=cache_status,
        history=result.history,
        extra={"best_epoch": result.best_epoch, "loss": config.loss, "recipe": runs.recipe, **sections["extra"]},
    )


def _run_inputs(
    prep: Prepared, config, plan, train_spec, splits: tuple[Split, Split], device: str, cache_dir
) -> RunInputs:
    """What every run of the job shares: the splits, a student factory, the teacher (through the augmented-output
    cache when the auto recipe augments)."""
    input_shape, input_dtype = prep.train.input_shape, str(prep.train.x.dtype)

    def build():
        return build_student(
            config.student, input_shape, input_dtype, prep.num_classes, prep.vocab_size, prep.pad_id, prep.teacher
        )

    augmented = None
    if plan.name == "auto" and config.augmenting:
        key = _augmented_key(prep, train_spec, config)
        augmented = AugmentedOutputs(prep.teacher, prep.num_classes, key, cache_dir)
    # Every run starts from the very same initial weights: trials, the student and the baseline.
    new_student = student_factory(build, config.seed, device)
    labeled = prep.train.y is not None
    return RunInputs(
        *splits,
        new_student,
        labeled,
        prep.num_classes,
        device,
        prep.teacher,
        augmented,
        prep.pad_id,
        prep.mask_id,
        None,
    )


def _augmented_key(prep: Prepared, spec: DatasetSpec, config) -> dict:
    """What decides the augmented batches and the teacher's outputs on them (the epoch is added per epoch)."""
    return {
        "clean": job_cache_key(prep, spec, prep.train_sha256),
        "train_rows": hashlib.sha256(prep.train_index.astype(np.int64).tobytes()).hexdigest(),
        "augmentation": config.augmentation,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "pad_id": prep.pad_id,
        "mask_id": prep.mask_id,
    }


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


def _check_student(
    student: torch.nn.Module, sample: torch.Tensor, num_classes: int, max_parameters: int | None = None
) -> None:
    if max_parameters is not None:
        count = sum(p.numel() for p in student.parameters())
        if count > max_parameters:
            raise EngineError(
                "limit_exceeded",
                f"the student has {count:,} parameters, more than this server's cap of {max_parameters:,} "
                "(DISTILLERY_MAX_STUDENT_PARAMETERS); choose a smaller student",
            )
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
