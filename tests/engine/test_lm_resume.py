"""A causal-LM training checkpointed at every epoch resumes where it stopped, to the same weights bit for bit
(on the CPU), for the data's methods and for on-policy KD (whose coin and samples draw from random states); and
what the job child hands the LM engine (its checkpoint folder, its device)."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.engine.test_lm_train import _data, _llama
from worker.engine.lm_resume import PhaseCheckpoint
from worker.engine.lm_train import LMTrainSettings, train_lm


class _Killed(Exception):
    pass


def _stop_after(epochs: int):
    def hook(entry: dict) -> None:
        if entry["epoch"] == epochs:
            raise _Killed

    return hook


@pytest.mark.parametrize("method", ["sft", "forward_kl", "on_policy"])
def test_a_training_stopped_after_an_epoch_resumes_to_the_same_weights(tmp_path, method):
    settings = LMTrainSettings(epochs=3, batch_size=5, warm_start_epochs=1, on_policy_fraction=0.5)
    teacher = _llama(seed=1).eval()
    data, validation = _data(), _data(8)
    fingerprint = {"method": method, "settings": settings.__dict__}

    straight = _llama()
    whole = train_lm(straight, data, validation, method, settings, teacher=teacher, max_new_tokens=4)

    torch.manual_seed(123)  # the kill leaves the process's random state elsewhere; the checkpoint holds its own
    first = _llama()
    with pytest.raises(_Killed):
        train_lm(first, data, validation, method, settings, teacher=teacher, on_epoch=_stop_after(2),
                 max_new_tokens=4, resume=PhaseCheckpoint(str(tmp_path), "student", fingerprint))  # fmt: skip
    torch.manual_seed(456)
    resumed = _llama(seed=7)  # another machine: fresh weights, overwritten by the checkpoint's
    epochs = []
    history = train_lm(resumed, data, validation, method, settings, teacher=teacher, on_epoch=epochs.append,
                       max_new_tokens=4, resume=PhaseCheckpoint(str(tmp_path), "student", fingerprint))  # fmt: skip
    assert [e["epoch"] for e in epochs] == [3]  # only the epoch the first run did not finish
    assert history == whole
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    settings = LMTrainSettings(epochs=2, batch_size=6)
    data = _data()
    with pytest.raises(_Killed):
        train_lm(_llama(), data, data, "sft", settings, on_epoch=_stop_after(1),
                 resume=PhaseCheckpoint(str(tmp_path), "baseline", {"epochs": 2}))  # fmt: skip
    epochs = []
    model = _llama()
    initial = copy.deepcopy(model.state_dict())
    other = PhaseCheckpoint(str(tmp_path), "baseline", {"epochs": 2, "lr": 0})
    settings = LMTrainSettings(epochs=2, batch_size=6, learning_rate=0.0)
    train_lm(model, data, data, "sft", settings, on_epoch=epochs.append, resume=other)
    assert [e["epoch"] for e in epochs] == [1, 2]  # started over
    assert all(torch.equal(model.state_dict()[k], v) for k, v in initial.items())  # learning rate 0: its own weights


def test_a_job_stopped_in_its_student_training_resumes_without_training_the_baseline_again(tmp_path):
    """distill_lm with a checkpoint folder, stopped after the student's second epoch, then run again: the
    baseline (finished) and the student's first two epochs are not trained again, and the report is the
    uninterrupted job's."""
    from tests.support.lm_tiny import tiny_lm_job
    from worker.engine.lm_distill import LMConfig, distill_lm

    teacher, train, eval_ = tiny_lm_job(tmp_path / "inputs")

    def run(out: str, checkpoints: str | None, progress=None) -> dict:
        config = LMConfig(method="forward_kl", student={"architecture": "hf", "num_hidden_layers": 1}, speed=False,
                          train=LMTrainSettings(epochs=3, batch_size=16), max_length=16, max_new_tokens=4,
                          generation_prompts=4, export=False, checkpoint_dir=checkpoints)  # fmt: skip
        return distill_lm(teacher, train, eval_, config, str(tmp_path / out), str(tmp_path / "cache"), progress)

    whole = run("whole", None)

    def killed(event) -> None:
        if event.type == "metrics" and event.data.get("model") == "student" and event.data.get("epoch") == 2:
            raise _Killed

    with pytest.raises(_Killed):
        run("first", str(tmp_path / "checkpoints"), killed)
    events: list = []
    again = run("again", str(tmp_path / "checkpoints"), events.append)
    assert [(e.data["model"], e.data["epoch"]) for e in events if e.type == "progress"] == [("student", 3)]
    resumed = [(e.data["model"], e.data["epoch"]) for e in events if e.data.get("resumed")]
    assert resumed == [("baseline", 3), ("student", 2)]
    assert again["lm_history"] == whole["lm_history"]
    for model in ("student", "baseline"):
        assert again[model]["perplexity"] == whole[model]["perplexity"], model


def test_the_job_child_hands_the_jobs_checkpoint_folder_to_the_lm_engine():
    from worker.job_lm import lm_config

    config = lm_config({"config": {"lm": {"method": "offline"}}, "checkpoint_dir": "/job/checkpoints"})
    assert config.checkpoint_dir == "/job/checkpoints" and config.method == "offline"


def test_an_lm_job_given_gpus_its_process_cannot_see_fails_naming_the_workers_declaration(monkeypatch):
    from worker.engine.errors import EngineError
    from worker.job_lm import lm_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lm_device({}) == "cpu"
    with pytest.raises(EngineError) as raised:
        lm_device({"gpus": 1})
    assert raised.value.code == "invalid_config" and "DISTILLERY_WORKER_GPUS" in raised.value.message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lm_device({}) == "cuda" and lm_device({"gpus": 1}) == "cuda"
