"""The auto recipe: what it decides, that named values and "plain" are kept, and that its students win by default.

The quality tests run on data the engine was never tuned on: sklearn's digits (images as 64 pixels) and real text
from this machine (tests/support/real_text.py: docstrings of installed libraries, labelled by library).
"""

from __future__ import annotations

import numpy as np
import pytest

from contract.hyperparameters import DEFAULTS
from tests.support import digits
from worker.engine import DatasetSpec, DistillConfig, distill
from worker.engine.recipe import plan_recipe

PLAIN_JOB_EPOCHS = 10
TEXT_STUDENT = {"architecture": "lstm", "embedding_dim": 16, "hidden_dim": 16, "bidirectional": True}


def _features(rows: int = 100) -> np.ndarray:
    return np.random.default_rng(0).random((rows, 64), dtype=np.float32)


def test_plain_recipe_changes_nothing():
    config = DistillConfig.from_dict({"recipe": "plain"})
    plan = plan_recipe(config, _features(), 1000, labeled=True)
    assert plan.config == config and not plan.search and not plan.baseline
    assert {k: getattr(plan.config, k) for k in DEFAULTS if k != "recipe"} == {
        k: v for k, v in DEFAULTS.items() if k != "recipe"
    }


def test_auto_recipe_keeps_what_the_user_named_and_fills_the_rest():
    config = DistillConfig.from_dict({"epochs": 3, "temperature": 2.0})
    plan = plan_recipe(config, _features(), 1000, labeled=True)
    assert plan.config.epochs == 3 and plan.config.temperature == 2.0
    assert plan.named == ["epochs", "temperature"]
    assert plan.search == ["alpha", "learning_rate"] and plan.trials > 0 and plan.baseline
    assert set(plan.config.augmentation) == {"noise", "mixup"}


def test_auto_recipe_fits_augmentation_to_the_data():
    tokens = np.random.default_rng(0).integers(1, 50, (100, 16))
    text = plan_recipe(DistillConfig(), tokens, 1000, labeled=True).config.augmentation
    assert set(text) == {"token_dropout"}
    scaled = plan_recipe(DistillConfig(), _features() * 100, 1000, labeled=True).config.augmentation
    small = plan_recipe(DistillConfig(), _features(), 1000, labeled=True).config.augmentation
    assert scaled["noise"] > small["noise"] > 0  # noise follows the features' spread


def test_auto_recipe_without_labels_searches_no_alpha_and_trains_no_baseline():
    plan = plan_recipe(DistillConfig(), _features(), 1000, labeled=False)
    assert "alpha" not in plan.search and not plan.baseline


def test_auto_schedule_is_longer_for_small_data_and_plain_length_for_large():
    small = plan_recipe(DistillConfig(), _features(), 1000, labeled=True).config.epochs
    large = plan_recipe(DistillConfig(), _features(), 1_000_000, labeled=True).config.epochs
    assert small > PLAIN_JOB_EPOCHS and large == PLAIN_JOB_EPOCHS


@pytest.mark.parametrize("epochs", [1, 2, 5, 14, 30])
def test_search_budget_scales_with_the_final_run(epochs):
    plan = plan_recipe(DistillConfig.from_dict({"epochs": epochs}), _features(), 1000, labeled=True)
    assert plan.trials >= 2 and plan.trial_epochs >= 1
    assert plan.trials * plan.trial_epochs <= max(2, 1.5 * epochs)


def _check_default_student_wins(report: dict) -> None:
    teacher, student, baseline = report["teacher"], report["student"], report["baseline"]
    assert teacher["num_parameters"] >= 5 * student["num_parameters"]
    assert student["accuracy"] >= 0.97 * teacher["accuracy"], (student, teacher)
    assert baseline is not None and student["agreement"] > baseline["agreement"], (student, baseline)
    recipe = report["recipe"]
    assert recipe["name"] == "auto" and recipe["named_by_user"] == []
    assert all(t["validation_metric"] is not None for t in recipe["trials"])
    assert set(recipe["seconds"]) == {"search", "student", "baseline"}
    # The budget the recipe accounts for: each trial within its epochs, and all student epochs together within
    # five plain jobs' (the benchmark tests/benchmarks/bench_recipe.py measures the wall time).
    budget = recipe["budget"]
    assert all(t["epochs"] <= budget["epochs_per_trial"] for t in recipe["trials"])
    assert len(recipe["trials"]) == budget["search_trials"]
    spent = budget["final_epochs"] + budget["baseline_epochs"] + budget["trial_epochs_spent"]
    assert spent <= 5 * PLAIN_JOB_EPOCHS


@pytest.mark.slow
def test_default_recipe_wins_on_digits(teacher_path, train_spec, test_spec, tmp_path):
    report = distill(teacher_path, train_spec, test_spec, DistillConfig.from_dict({}), str(tmp_path))
    assert report["teacher"]["accuracy"] == pytest.approx(digits.teacher_accuracy())
    _check_default_student_wins(report)


@pytest.mark.slow
def test_default_recipe_wins_on_real_text(tmp_path):
    from tests.support.real_text import real_text_fixture

    files = real_text_fixture()

    def spec(name: str) -> DatasetSpec:
        return DatasetSpec(str(files[name]), "csv", tokenizer_path=str(files["tokenizer"]), max_length=32)

    config = DistillConfig.from_dict({"student": TEXT_STUDENT})
    report = distill(str(files["teacher"]), spec("train"), spec("eval"), config, str(tmp_path))
    _check_default_student_wins(report)


@pytest.mark.slow
def test_a_resumed_auto_job_reuses_its_search(teacher_path, train_spec, test_spec, tmp_path):
    checkpoints = str(tmp_path / "checkpoints")
    config = {"epochs": 2, "export": []}
    first = distill(
        teacher_path,
        train_spec,
        test_spec,
        DistillConfig.from_dict(config),
        str(tmp_path / "a"),
        checkpoint_dir=checkpoints,
    )
    events = []
    again = distill(
        teacher_path,
        train_spec,
        test_spec,
        DistillConfig.from_dict(config),
        str(tmp_path / "b"),
        checkpoint_dir=checkpoints,
        progress=events.append,
    )
    assert any("search already chose" in e.message for e in events)
    assert not any("recipe trial" in e.message for e in events)
    assert again["recipe"]["chosen"] == first["recipe"]["chosen"]
    assert again["recipe"]["trials"] == first["recipe"]["trials"]
