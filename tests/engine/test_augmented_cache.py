"""The augmented-output cache: a second job on the same (teacher, data, recipe) runs no teacher on augmented
batches and trains the very same student."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from worker.engine import DistillConfig, distill
from worker.engine.augmented_cache import TOP_K, AugmentedOutputs, compress, decompress
from worker.engine.teachers import Teacher

# Auto recipe with a short schedule, so that the test stays fast; augmentation, search and baseline are on.
SETTINGS = {"epochs": 3, "export": []}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _job(teacher_path, train_spec, test_spec, out, cache, monkeypatch) -> tuple[dict, int]:
    """Run one job; return its report and the teacher's forward passes during training (augmented batches)."""
    phase = {"now": None}
    calls = {"training": 0}
    original = Teacher.__call__

    def counting(self, x):
        if phase["now"] == "training":
            calls["training"] += 1
        return original(self, x)

    def progress(event):
        if event.type == "phase":
            phase["now"] = event.data.get("phase")

    monkeypatch.setattr(Teacher, "__call__", counting)
    config = DistillConfig.from_dict(SETTINGS)
    report = distill(teacher_path, train_spec, test_spec, config, str(out), progress=progress, teacher_cache_dir=cache)
    monkeypatch.setattr(Teacher, "__call__", original)
    return report, calls["training"]


@pytest.mark.slow
def test_second_job_runs_no_teacher_on_augmented_batches_and_trains_the_same_student(
    teacher_path, train_spec, test_spec, tmp_path, monkeypatch
):
    cache = str(tmp_path / "cache")
    first, first_calls = _job(teacher_path, train_spec, test_spec, tmp_path / "a", cache, monkeypatch)
    second, second_calls = _job(teacher_path, train_spec, test_spec, tmp_path / "b", cache, monkeypatch)

    assert first["recipe"]["chosen"]["augmentation"], "the auto recipe augments"
    assert first_calls > 0 and first["recipe"]["augmented_outputs_cache"]["teacher_calls"] == first_calls
    assert second_calls == 0
    summary = second["recipe"]["augmented_outputs_cache"]
    assert summary["teacher_calls"] == 0 and summary["cached_batches_reused"] > 0
    # Priced at what those batches cost the first job: about all the teacher time the first job spent.
    assert summary["teacher_seconds_saved"] >= 0.9 * first["recipe"]["augmented_outputs_cache"]["teacher_seconds"]
    # Within the first job, the search, the baseline and the final run already reused the first epochs.
    assert first["recipe"]["augmented_outputs_cache"]["cached_batches_reused"] > 0
    assert first["recipe"]["augmented_outputs_cache"]["teacher_seconds_saved"] > 0
    assert _sha256(tmp_path / "a" / "student.pt") == _sha256(tmp_path / "b" / "student.pt")
    assert first["recipe"]["trials"] == second["recipe"]["trials"] or _same_trials(first, second)


def _same_trials(first: dict, second: dict) -> bool:
    strip = [{k: v for k, v in t.items() if k != "seconds"} for t in first["recipe"]["trials"]]
    return strip == [{k: v for k, v in t.items() if k != "seconds"} for t in second["recipe"]["trials"]]


def test_each_part_of_the_key_changes_the_cache_file(tmp_path):
    key = {"clean": "t-d-p", "train_rows": "r", "augmentation": {"noise": 0.1}, "seed": 0, "batch_size": 64}
    order = torch.arange(10)

    def path(key_parts: dict, epoch: int = 0, order: torch.Tensor = order) -> str:
        outputs = AugmentedOutputs(lambda x: x, 10, key_parts, str(tmp_path))
        outputs.begin_epoch(epoch, order, 1)
        return outputs.epoch_key

    base = path(key)
    changed = [path({**key, name: "other"}) for name in key]
    assert base not in changed and len(set(changed)) == len(changed)
    assert path(key, epoch=1) != base and path(key, order=order.flip(0)) != base
    assert path(dict(key)) == base


def test_top_k_storage_keeps_the_top_logits_and_the_rest_of_the_mass():
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3
    restored = decompress(compress(logits), 300)
    top = logits.topk(TOP_K, dim=1)
    assert torch.equal(restored.gather(1, top.indices), top.values)
    np.testing.assert_allclose(torch.logsumexp(restored, 1), torch.logsumexp(logits, 1), rtol=1e-5)


def test_few_classes_are_stored_whole():
    logits = torch.randn(4, 10)
    assert torch.equal(decompress(compress(logits), 10), logits)


def test_the_labels_only_baseline_neither_runs_nor_reads_the_teacher_on_augmented_batches(
    teacher_path, train_spec, test_spec, tmp_path, monkeypatch
):
    phase = {"baseline": False}
    during_baseline = {"teacher": 0, "cache": 0}
    teacher_call, cache_call = Teacher.__call__, AugmentedOutputs.__call__

    def teacher_counting(self, x):
        during_baseline["teacher"] += phase["baseline"]
        return teacher_call(self, x)

    def cache_counting(self, step, x):
        during_baseline["cache"] += phase["baseline"]
        return cache_call(self, step, x)

    def progress(event):
        if event.type == "info" and event.message.startswith("training the baseline"):
            phase["baseline"] = True
        elif event.type == "phase":
            phase["baseline"] = False

    monkeypatch.setattr(Teacher, "__call__", teacher_counting)
    monkeypatch.setattr(AugmentedOutputs, "__call__", cache_counting)
    config = DistillConfig.from_dict({**SETTINGS, "recipe": "plain", "augmentation": {"noise": 0.1}, "baseline": True})
    report = distill(teacher_path, train_spec, test_spec, config, str(tmp_path / "out"), progress=progress)
    assert report["baseline"] is not None and phase == {"baseline": False}
    assert during_baseline == {"teacher": 0, "cache": 0}
    config = DistillConfig.from_dict(SETTINGS)  # the auto recipe: its cache of augmented outputs is on
    report = distill(teacher_path, train_spec, test_spec, config, str(tmp_path / "auto"), progress=progress)
    assert report["baseline"] is not None and report["recipe"]["chosen"]["augmentation"]
    assert during_baseline == {"teacher": 0, "cache": 0}
