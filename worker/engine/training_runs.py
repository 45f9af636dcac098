"""The training phase of a job: the recipe's search, the student and the baseline, with what each cost."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from worker.engine.atomic import read_saved, save_json
from worker.engine.augmented_cache import AugmentedOutputs
from worker.engine.config import DistillConfig, ProgressEvent
from worker.engine.loop import Split, TrainResult, train_student
from worker.engine.ranks import SINGLE, Ranks
from worker.engine.recipe import RecipePlan
from worker.engine.search import search_distillation_settings

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"  # the search's choice, in the checkpoint folder: a resumed job does not search again


@dataclass
class Runs:
    """What the training phase produced."""

    student: nn.Module
    result: TrainResult
    baseline: nn.Module | None
    config: DistillConfig  # the configuration the student was trained with (the search's choice included)
    train_seconds: float
    recipe: dict  # the report's `recipe` section


@dataclass
class RunInputs:
    """Everything every run of one job shares."""

    train: Split
    val: Split
    new_student: Callable[[], nn.Module]
    labeled: bool
    num_classes: int
    device: str
    teacher: Callable
    augmented: AugmentedOutputs | None
    pad_id: int | None
    mask_id: int | None
    should_stop: Callable[[], bool] | None
    ranks: Ranks = SINGLE  # every run of the job trains on all of them


def train_runs(inputs: RunInputs, plan: RecipePlan, emit, checkpoint_dir: str | None) -> Runs:
    """Search (auto recipe), then train the student and (when asked or auto) the baseline."""
    seconds: dict[str, float] = {}
    config = plan.config
    trials: list[dict] = []
    started = time.monotonic()
    if plan.search:
        config, trials = _search(inputs, plan, emit, checkpoint_dir)
    seconds["search"] = time.monotonic() - started

    started = time.monotonic()
    student = inputs.new_student()
    alpha = config.alpha if inputs.labeled else 1.0
    result = _train(inputs, student, config, alpha, emit, checkpoint_dir, report_progress=True)
    seconds["student"] = time.monotonic() - started

    baseline = None
    started = time.monotonic()
    if plan.baseline and not inputs.labeled:
        emit(ProgressEvent("warning", "baseline needs labels and the training data has none; skipped", {}))
    elif plan.baseline:
        emit(ProgressEvent("info", "training the baseline: same student, labels only (alpha = 0)", {}))
        baseline = inputs.new_student()
        where = os.path.join(checkpoint_dir, "baseline") if checkpoint_dir else None
        _train(inputs, baseline, config, 0.0, emit, where, report_progress=False)
    seconds["baseline"] = time.monotonic() - started
    section = _section(plan, config, trials, seconds, inputs.augmented)
    return Runs(student, result, baseline, config, seconds["student"], section)


class _NoTeacher:
    """Zeros in the teacher's place for a labels-only run (alpha 0), whose loss never reads them."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), self.num_classes, device=x.device)


def _train(inputs: RunInputs, model, config, alpha, progress, checkpoint_dir, report_progress) -> TrainResult:
    teacher, augmented = inputs.teacher, inputs.augmented
    if alpha == 0 and config.augmenting:
        # The baseline: running the teacher on its augmented batches (or reading them from the cache, and counting
        # that as teacher time saved) would be work and a saving that the job never needed.
        teacher, augmented = _NoTeacher(inputs.num_classes), None
    return train_student(
        model,
        inputs.train,
        inputs.val,
        config,
        alpha=alpha,
        num_classes=inputs.num_classes,
        device=inputs.device,
        teacher=teacher,
        progress=progress,
        should_stop=inputs.should_stop,
        checkpoint_dir=checkpoint_dir,
        report_progress=report_progress,
        pad_id=inputs.pad_id,
        mask_id=inputs.mask_id,
        augmented=augmented,
        ranks=inputs.ranks,
    )


def train_briefly(inputs: RunInputs, model, config: DistillConfig, alpha: float, progress) -> TrainResult:
    """A short run without checkpoints whose metrics go to `progress` (a candidate of the student search)."""
    return _train(inputs, model, config, alpha, progress, None, report_progress=True)


def _search(inputs: RunInputs, plan: RecipePlan, emit, checkpoint_dir: str | None) -> tuple[DistillConfig, list]:
    """The search's choice; a resumed job reads the choice it saved instead of searching again."""
    saved = _read_choice(checkpoint_dir, plan)
    if saved is not None:
        emit(ProgressEvent("info", "resuming: the recipe's search already chose its values", saved["chosen"]))
        return dataclasses.replace(plan.config, **saved["chosen"]), saved["trials"]
    emit(ProgressEvent("info", f"recipe search: {plan.trials} trials of {plan.trial_epochs} epochs", {}))

    def train_trial(config: DistillConfig, progress) -> None:
        alpha = config.alpha if inputs.labeled else 1.0
        _train(inputs, inputs.new_student(), config, alpha, progress, None, report_progress=True)

    config, trials = search_distillation_settings(
        train_trial, plan.config, plan.search, plan.trials, plan.trial_epochs, emit
    )
    # The trials ran on every rank alike; rank 0's choice is the job's, should a rank's timings or metrics differ.
    config, trials = inputs.ranks.from_main((config, trials))  # type: ignore[misc]  # rank 0's own pair
    if inputs.ranks.main:
        _write_choice(checkpoint_dir, plan, {k: getattr(config, k) for k in plan.search}, trials)
    return config, trials


def _read_choice(checkpoint_dir: str | None, plan: RecipePlan) -> dict | None:
    saved = read_saved(checkpoint_dir, RECIPE_FILE)
    return saved if saved is not None and saved.get("plan") == plan.section() else None


def _write_choice(checkpoint_dir: str | None, plan: RecipePlan, chosen: dict, trials: list) -> None:
    save_json(checkpoint_dir, RECIPE_FILE, {"plan": plan.section(), "chosen": chosen, "trials": trials})


def _section(plan: RecipePlan, config: DistillConfig, trials: list, seconds: dict, augmented) -> dict:
    section = plan.section()
    for name in plan.search:
        section["chosen"][name] = getattr(config, name)
    section["trials"] = trials
    section["budget"]["trial_epochs_spent"] = sum(t["epochs"] for t in trials)
    section["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    section["augmented_outputs_cache"] = None if augmented is None else augmented.summary()
    return section


def student_factory(build: Callable[[], nn.Module], seed: int, device: str) -> Callable[[], nn.Module]:
    """A function that builds the student from the same initial weights every time (trials, baseline, final)."""

    def new_student() -> nn.Module:
        torch.manual_seed(seed)
        return build().to(device)

    return new_student
