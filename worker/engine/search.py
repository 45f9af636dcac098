"""The auto recipe's search: temperature, alpha and learning rate chosen on the validation slice by Optuna.

Each trial trains a fresh student for a few epochs (a short schedule of its own) and reports its validation
metric after every epoch; the successive-halving pruner stops trials that trail. The augmented batches of a
trial's epochs are the first epochs of every run, so trials after the first, the baseline and the final run
read the teacher's outputs on them from the augmented-output cache instead of running the teacher again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from worker.engine.config import DistillConfig, ProgressEvent

logger = logging.getLogger(__name__)

# The space: temperature and learning rate log-uniform, alpha uniform.
RANGES = {"temperature": (0.5, 8.0, True), "alpha": (0.5, 1.0, False), "learning_rate": (1e-3, 3e-2, True)}


class _Prune(Exception):
    """Raised from the progress hook to stop a trial the pruner gave up on."""


def search_distillation_settings(
    train_trial: Callable[[DistillConfig, Callable[[ProgressEvent], None]], object],
    config: DistillConfig,
    names: list[str],
    trials: int,
    trial_epochs: int,
    emit: Callable[[ProgressEvent], None],
) -> tuple[DistillConfig, list[dict]]:
    """The config with the best trial's values of `names`, and every trial (values, metric, epochs, seconds).

    `train_trial(config, progress)` trains a fresh student under `config`; `progress` receives its metrics events.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=3)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    study.enqueue_trial({k: getattr(config, k) for k in names})  # today's defaults are always among the trials
    records: list[dict] = []

    for number in range(trials):
        trial = study.ask()
        values: dict[str, Any] = {
            name: trial.suggest_float(name, low, high, log=log) for name, (low, high, log) in _space(names)
        }
        record = _run_trial(train_trial, trial, dataclasses.replace(config, epochs=trial_epochs, **values))
        record = {"trial": number + 1, **{k: float(f"{v:.4g}") for k, v in values.items()}, **record}
        records.append(record)
        state = optuna.trial.TrialState.PRUNED if record["pruned"] else optuna.trial.TrialState.COMPLETE
        study.tell(trial, record["validation_metric"] if not record["pruned"] else None, state=state)
        emit(ProgressEvent("info", _describe(record), {"recipe_trial": record}))
    completed = [r for r in records if not r["pruned"] and r["validation_metric"] is not None]
    best = max(completed, key=lambda r: r["validation_metric"]) if completed else None
    if best is None:
        return config, records
    return dataclasses.replace(config, **{k: best[k] for k in names}), records


def trial_metric(row: dict) -> float | None:
    """A trial's objective from one epoch's validation metrics: the mean of accuracy and agreement with the
    teacher (agreement alone without labels). Agreement counts because the student is meant to stand in for
    the teacher; accuracy because that is what the user measures it by."""
    accuracy = row.get("validation_accuracy", row.get("eval_accuracy"))
    agreement = row.get("validation_agreement", row.get("eval_agreement"))
    if accuracy is None or agreement is None:
        return agreement if accuracy is None else accuracy
    return (accuracy + agreement) / 2


def _space(names: list[str]) -> list[tuple[str, tuple[float, float, bool]]]:
    return [(name, RANGES[name]) for name in RANGES if name in names]


def _run_trial(train_trial, trial, config: DistillConfig) -> dict:
    """Train one trial, reporting each epoch's validation metric to Optuna; its record."""
    history: list[float] = []

    def progress(event: ProgressEvent) -> None:
        if event.type != "metrics":
            return
        metric = trial_metric(event.data)
        if metric is None:
            return
        history.append(metric)
        trial.report(metric, len(history))
        if trial.should_prune():
            raise _Prune()

    started, pruned = time.monotonic(), False
    try:
        train_trial(config, progress)
    except _Prune:
        pruned = True
    return {
        "validation_metric": max(history) if history else None,
        "epochs": len(history),
        "pruned": pruned,
        "seconds": round(time.monotonic() - started, 3),
    }


def _describe(record: dict) -> str:
    values = ", ".join(f"{k} {record[k]}" for k in RANGES if k in record)
    metric = record["validation_metric"]
    shown = "n/a" if metric is None else f"{metric:.4f}"
    ending = f"pruned after {record['epochs']} epochs" if record["pruned"] else f"{record['epochs']} epochs"
    return f"recipe trial {record['trial']}: {values}: validation {shown} ({ending})"
