"""The auto recipe: settings a user who is not a distillation expert should get, chosen from the data.

Beyer et al. 2022 ("Knowledge distillation: A good teacher is patient and consistent"): the teacher labels
every augmented example it is shown (consistent), and the student trains long (patient). Temperature and alpha
are chosen on the validation slice by a small budgeted search (worker/engine/search.py); the no-teacher
baseline trains on the same budget so that the report says whether distillation helped.

A hyperparameter whose value differs from its plain default counts as named by the user and is kept as is:
the service stores every job's hyperparameters with their defaults filled in, so a value equal to the default
cannot be told apart from one left out (a user who wants exactly the defaults asks for "recipe": "plain").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.hyperparameters import DEFAULTS
from worker.engine.config import DistillConfig

# The schedule: at least MIN_STEPS optimizer steps, in MIN_EPOCHS to MAX_EPOCHS epochs. Small data gets more
# epochs (its epochs are cheap next to a job's fixed costs); large data keeps the plain job's 10.
MIN_STEPS = 260
MIN_EPOCHS, MAX_EPOCHS = 10, 30
LEARNING_RATE = 3e-3  # the first trial's: the plain 1e-3 leaves small students undertrained in short schedules
SEARCHED = ("temperature", "alpha", "learning_rate")
SEARCH_TRIALS = 6
TEXT_AUGMENTATION = {"token_dropout": 0.1}
MIXUP = 0.2
NOISE_OF_FEATURE_STD = 0.1  # Gaussian noise at a tenth of the typical feature's spread


@dataclass
class RecipePlan:
    """What the auto recipe decided before training, and why; `config` is the configuration to train with."""

    name: str
    config: DistillConfig
    named: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    search: list[str] = field(default_factory=list)  # hyperparameters the search chooses
    trials: int = 0
    trial_epochs: int = 0
    baseline: bool = False

    def section(self) -> dict:
        """The report's `recipe` section before the search and timings are added."""
        names = ("epochs", "learning_rate", "augmentation", "temperature", "alpha")
        chosen = {k: getattr(self.config, k) for k in names}
        return {
            "name": self.name,
            "named_by_user": self.named,
            "chosen": chosen,
            "why": self.reasons,
            "budget": {
                "final_epochs": self.config.epochs,
                "baseline_epochs": self.config.epochs if self.baseline else 0,
                "search_trials": self.trials,
                "epochs_per_trial": self.trial_epochs,
            },
        }


def named_hyperparameters(config: DistillConfig) -> list[str]:
    """Hyperparameters whose value differs from the plain default: the ones the user chose."""
    values = config.hyperparameters()
    return sorted(k for k, v in values.items() if k != "recipe" and v != DEFAULTS[k])


def plan_recipe(config: DistillConfig, x: np.ndarray, train_rows: int, labeled: bool) -> RecipePlan:
    """The configuration to train with under config.recipe; "plain" changes nothing."""
    named = named_hyperparameters(config)
    if config.recipe == "plain":
        return RecipePlan("plain", config, named, baseline=config.baseline)
    changes: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    if "augmentation" not in named:
        changes["augmentation"], reasons["augmentation"] = _augmentation(x)
    steps_per_epoch = math.ceil(train_rows / config.batch_size)
    if "epochs" not in named:
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))
        changes["epochs"] = epochs
        reasons["epochs"] = (
            f"{epochs} epochs of {steps_per_epoch} steps: at least {MIN_STEPS} steps, {MIN_EPOCHS} to "
            f"{MAX_EPOCHS} epochs (a student learns from augmented teacher outputs for longer)"
        )
    if "learning_rate" not in named:
        changes["learning_rate"] = LEARNING_RATE  # the search's first trial; the search may choose another
    resolved = dataclasses.replace(config, **changes)
    search = [k for k in SEARCHED if k not in named and (k != "alpha" or labeled)]
    if not labeled:
        reasons["alpha"] = "no labels: the student learns from the teacher only (alpha 1)"
    plan = RecipePlan("auto", resolved, named, reasons, search, baseline=labeled or config.baseline)
    if search:
        # Short trials, and no more trial epochs than 1.5 times the final run's: a job that names few epochs
        # (a quick test) gets a small search, not a fixed one that dwarfs it.
        plan.trial_epochs = max(1, resolved.epochs // 5)
        plan.trials = min(SEARCH_TRIALS, max(2, (3 * resolved.epochs) // (2 * plan.trial_epochs)))
        reasons["search"] = (
            f"{', '.join(search)} chosen on the validation slice: {plan.trials} trials of "
            f"{plan.trial_epochs} epochs (Optuna TPE, successive-halving pruner); the first trial is the plain "
            f"temperature and alpha at learning rate {LEARNING_RATE}"
        )
    if labeled:
        reasons["baseline"] = "the same student trained on labels alone, same epochs and augmentation"
    return plan


def _augmentation(x: np.ndarray) -> tuple[dict[str, float], str]:
    if not np.issubdtype(x.dtype, np.floating):
        return dict(TEXT_AUGMENTATION), "token ids: token dropout, as word dropout regularises text classifiers"
    sample = x[: min(len(x), 4096)].reshape(min(len(x), 4096), -1).astype(np.float64)
    spread = float(np.median(sample.std(axis=0)))
    noise = round(min(1.0, max(0.0, NOISE_OF_FEATURE_STD * spread)), 4)
    kind = "images" if x.ndim == 4 else "features"
    why = f"{kind}: Gaussian noise at {NOISE_OF_FEATURE_STD} of the median feature std ({spread:.3g}) and mixup {MIXUP}"
    augmentation = {"mixup": MIXUP}
    if noise > 0:
        augmentation["noise"] = noise
    return augmentation, why
