"""Tests that guard the report's honesty (issue 9 point 5): each fails when the engine cheats in one known way.

- augmented training must use the teacher's outputs on the augmented batch (not cached or zero logits);
- the baseline is trained with alpha 0 (labels only), never with the teacher;
- agreement is measured against the teacher's predictions, never the labels;
- the best epoch is chosen on the validation slice of train, never on the eval split;
- how a dataset was read is part of the teacher-outputs cache key;
- a resumed run keeps the best metric and epoch it had before the interruption.

The shifted-label data makes cheating visible: labels are (digit + 1) mod 10, so a student that imitates the
teacher agrees with it and misses the labels, and a student that learns the labels does the opposite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import digits
from worker.engine import DatasetSpec, DistillConfig, EngineError, distill
from worker.engine import loop as loop_module
from worker.engine.export import load_torchscript
from worker.engine.prepare import split_indices
from worker.engine.teachers import Teacher

STUDENT = {"architecture": "mlp", "hidden_sizes": [32]}


def _config(**overrides) -> DistillConfig:
    settings = {"student": STUDENT, "epochs": 12, "learning_rate": 0.005, "recipe": "plain", **overrides}
    return DistillConfig.from_dict(settings)


def _shifted(y: np.ndarray) -> np.ndarray:
    return (y + 1) % 10


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory, teacher_path):
    """Pure KD (alpha 1) student and a baseline, on train and eval data whose labels the teacher always misses."""
    out = tmp_path_factory.mktemp("shifted")
    x, y, xe, ye = digits.digits_arrays()
    train = DatasetSpec(str(digits.write_npz(out / "train.npz", x, _shifted(y))), "npz")
    evaluation = DatasetSpec(str(digits.write_npz(out / "eval.npz", xe, _shifted(ye))), "npz")
    return distill(teacher_path, train, evaluation, _config(alpha=1.0, baseline=True), str(out / "job"))


def test_agreement_is_with_the_teacher_not_the_labels(tmp_path, teacher_path):
    """Unlabelled train data (pure KD, chosen on agreement); the eval split's labels are shifted."""
    x, _, xe, ye = digits.digits_arrays()
    train = DatasetSpec(str(digits.write_npz(tmp_path / "train.npz", x)), "npz")
    evaluation = DatasetSpec(str(digits.write_npz(tmp_path / "eval.npz", xe, _shifted(ye))), "npz")
    report = distill(teacher_path, train, evaluation, _config(), str(tmp_path / "job"))
    student = report["student"]
    assert report["teacher"]["accuracy"] < 0.1
    assert student["agreement"] >= 0.8 and student["accuracy"] <= 0.2, student
    assert report["history"][-1]["validation_agreement"] >= 0.8, report["history"]


def test_validation_agreement_on_labelled_data_is_with_the_teacher(shifted_run):
    last = shifted_run["history"][-1]
    assert last["validation_agreement"] >= 0.8 and last["validation_accuracy"] <= 0.2, last


def test_the_baseline_learns_from_labels_only(shifted_run):
    """Labels the teacher always misses: a baseline that saw the teacher would miss them too."""
    baseline = shifted_run["baseline"]
    assert baseline["accuracy"] >= 0.7 and baseline["agreement"] <= 0.2, baseline


def test_augmented_training_uses_the_teachers_outputs_on_each_augmented_batch(tmp_path, teacher_path, monkeypatch):
    """Unlabelled data (alpha 1) with noise: only the teacher's outputs on the noisy batches can teach the student."""
    seen: list[torch.Tensor] = []
    real_call = Teacher.__call__

    def recording(self, x):
        seen.append(x.detach().cpu().clone())
        return real_call(self, x)

    monkeypatch.setattr(Teacher, "__call__", recording)
    x, _, xe, ye = digits.digits_arrays()
    train = DatasetSpec(str(digits.write_npz(tmp_path / "train.npz", x)), "npz")
    evaluation = DatasetSpec(str(digits.write_npz(tmp_path / "eval.npz", xe, ye)), "npz")
    config = _config(augmentation={"noise": 0.5}, batch_size=64)
    report = distill(teacher_path, train, evaluation, config, str(tmp_path / "job"))

    clean = {row.numpy().tobytes() for row in torch.from_numpy(x)}
    noisy_batches = [b for b in seen if len(b) > 2 and not any(r.numpy().tobytes() in clean for r in b)]
    steps = config.epochs * -(-len(split_indices(len(x), config.seed, False)[0]) // config.batch_size)
    assert len(noisy_batches) >= steps, (len(noisy_batches), steps)
    assert report["student"]["agreement"] >= 0.8, report["student"]


def test_the_best_epoch_is_chosen_on_the_validation_slice_not_the_eval_split(tmp_path, teacher_path):
    """Eval labels are shifted, train labels are true: selecting on eval would show near-zero accuracies."""
    x, y, xe, ye = digits.digits_arrays()
    train = DatasetSpec(str(digits.write_npz(tmp_path / "train.npz", x, y)), "npz")
    evaluation = DatasetSpec(str(digits.write_npz(tmp_path / "eval.npz", xe, _shifted(ye))), "npz")
    config = _config(epochs=6)
    report = distill(teacher_path, train, evaluation, config, str(tmp_path / "job"))
    assert report["student"]["accuracy"] <= 0.2  # the eval split's labels are shifted
    best = report["history"][report["best_epoch"] - 1]
    assert best["validation_accuracy"] >= 0.7, report["history"]
    # The chosen weights are the ones measured on the validation slice: student.pt reproduces that number.
    _, val_index, _ = split_indices(len(x), config.seed, holdout_eval=False)
    student = load_torchscript(str(tmp_path / "job" / "student.pt"))
    with torch.no_grad():
        predictions = student(torch.from_numpy(x[val_index])).argmax(1).numpy()
    assert float(np.mean(predictions == y[val_index])) == pytest.approx(best["validation_accuracy"], abs=1e-6)


def test_how_the_data_was_read_is_part_of_the_teacher_outputs_cache_key(tmp_path, teacher_path):
    """One CSV file read two ways (label p, feature q / label q, feature p) must not share cached outputs."""
    x, y, _, _ = digits.digits_arrays()
    x, y = x[:300], y[:300]
    q = (y * 3) % 10
    path = tmp_path / "two_labels.csv"
    header = [f"f{i}" for i in range(63)] + ["p", "q"]
    lines = [",".join(header)] + [
        ",".join([repr(float(v)) for v in row[:63]] + [str(int(a)), str(int(b))])
        for row, a, b in zip(x, y, q, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    cache = str(tmp_path / "cache")
    config = _config(epochs=1)
    first = distill(
        teacher_path,
        DatasetSpec(str(path), "csv", label_column="p"),
        None,
        config,
        str(tmp_path / "a"),
        teacher_cache_dir=cache,
    )
    again = distill(
        teacher_path,
        DatasetSpec(str(path), "csv", label_column="p"),
        None,
        config,
        str(tmp_path / "b"),
        teacher_cache_dir=cache,
    )
    other = distill(
        teacher_path,
        DatasetSpec(str(path), "csv", label_column="q"),
        None,
        config,
        str(tmp_path / "c"),
        teacher_cache_dir=cache,
    )
    assert (first["teacher_outputs_cache"], again["teacher_outputs_cache"]) == ("miss", "hit")
    assert other["teacher_outputs_cache"] == "miss"


def test_a_resumed_run_keeps_the_best_epoch_it_had(tmp_path, teacher_path, monkeypatch):
    """Validation accuracy falls after epoch 1; an interruption after epoch 2 must not make epoch 3 the best."""
    scripted = iter([(0.9, 0.9), (0.5, 0.5), (0.4, 0.4), (0.9, 0.9), (0.5, 0.5), (0.4, 0.4)])
    monkeypatch.setattr(loop_module, "evaluate", lambda model, split, device, *a, **k: next(scripted))
    x, y, _, _ = digits.digits_arrays()
    train = DatasetSpec(str(digits.write_npz(tmp_path / "train.npz", x[:200], y[:200])), "npz")
    config = _config(epochs=3, batch_size=50)
    reference = distill(teacher_path, train, None, config, str(tmp_path / "ref"))
    assert reference["best_epoch"] == 1

    calls = {"n": 0}
    steps_per_epoch = -(-len(split_indices(200, config.seed, True)[0]) // config.batch_size)

    def stop_after_two_epochs() -> bool:
        calls["n"] += 1
        return calls["n"] > 2 * steps_per_epoch

    checkpoints = str(tmp_path / "ckpt")
    with pytest.raises(EngineError):
        distill(
            teacher_path,
            train,
            None,
            config,
            str(tmp_path / "first"),
            should_stop=stop_after_two_epochs,
            checkpoint_dir=checkpoints,
        )
    resumed = distill(teacher_path, train, None, config, str(tmp_path / "second"), checkpoint_dir=checkpoints)
    assert resumed["best_epoch"] == 1, resumed["history"]
