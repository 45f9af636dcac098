"""The causal-LM preflight (issue 12, point 5) on a tiny GPT-2 built from a config: a smoke step and the teacher's
cost stated before the first teacher pass, per-epoch progress of both models, an online method that does not fit
in memory falling back to offline KD with the teacher freed before the students train (on_policy, which needs the
live teacher, failing instead), and the smoke step's teacher forwards counted apart from the signal's."""

from __future__ import annotations

import json

import pytest
import torch

from htmlreport import render_report_html
from tests.support.lm_tiny import tiny_lm_job
from worker.engine import lm_distill
from worker.engine.errors import EngineError
from worker.engine.lm_distill import LMConfig, distill_lm
from worker.engine.lm_preflight import memory_check
from worker.engine.lm_train import LMTrainSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_lm_job(tmp_path_factory.mktemp("tiny-lm"))


def _run(tiny, out, method: str, memory_bytes: int | None, job="job", events=None) -> tuple[dict, list]:
    teacher, train, eval_ = tiny
    events = [] if events is None else events
    config = LMConfig(method=method, student={"architecture": "hf", "num_hidden_layers": 1}, speed=False,
                      train=LMTrainSettings(epochs=2, batch_size=16), max_length=16, max_new_tokens=4,
                      generation_prompts=4, memory_bytes=memory_bytes)  # fmt: skip
    report = distill_lm(teacher, train, eval_, config, str(out / job), str(out / "cache"), progress=events.append)
    return report, events


def test_the_preflight_and_the_estimate_come_before_training_and_every_epoch_is_told(tiny, tmp_path):
    report, events = _run(tiny, tmp_path, "forward_kl", None)
    kinds = [(e.type, next(iter(e.data), None)) for e in events]
    assert kinds[:2] == [("info", "preflight"), ("info", "estimate")], kinds
    epochs = [(e.data["model"], e.data["epoch"]) for e in events if e.type == "progress"]
    assert epochs == [("baseline", 1), ("baseline", 2), ("student", 1), ("student", 2)]
    assert [e.data["fraction"] for e in events if e.type == "progress"] == [0.25, 0.5, 0.75, 1.0]
    assert all(e.data["validation_nll"] > 0 for e in events if e.type == "metrics")
    checks = report["preflight"]
    print(json.dumps(checks["estimate"]), checks["smoke"])
    assert report["method"] == "forward_kl" and checks["fallback"] is None and checks["memory"]["fits"]
    assert checks["smoke"]["rows"] == 4 and checks["smoke"]["teacher_forward_seconds"] > 0
    assert checks["estimate"]["signal_bytes"] > 0 and checks["estimate"]["teacher_seconds"] > 0
    assert checks["estimate"]["actual"]["teacher_seconds"] > 0
    assert checks["estimate"]["actual"]["signal_bytes"] == report["teacher_signal"]["bytes_written"]


def test_an_online_method_that_does_not_fit_falls_back_to_offline_with_the_teacher_freed(tiny, tmp_path):
    report, events = _run(tiny, tmp_path, "reverse_kl", memory_bytes=1)
    warnings = [e for e in events if e.type == "warning"]
    assert len(warnings) == 1 and warnings[0].data["fallback"]["from"] == "reverse_kl", warnings
    assert report["method"] == "offline" and report["settings"]["train"]["objective"] == "reverse_kl"
    assert report["preflight"]["fallback"] == {**warnings[0].data["fallback"], "to": "offline"}
    assert not report["preflight"]["memory"]["fits"]
    # The signals were computed once before the teacher was freed; the students trained and were measured after.
    assert report["teacher_signal"]["cache_misses"] == 3 and report["teacher_signal"]["cache_hits"] == 0
    assert report["student"]["perplexity"] > 1 and report["teacher"]["perplexity"] > 1
    assert [e.data["model"] for e in events if e.type == "progress"] == ["baseline"] * 2 + ["student"] * 2
    page = render_report_html(report)
    assert "reverse_kl fell back to offline" in page and "estimate before the run" in page
    assert "Training, per epoch" in page


def test_the_memory_check_counts_teacher_student_baseline_and_optimizer_state():
    teacher, student = torch.nn.Linear(100, 100), torch.nn.Linear(10, 10)  # 40,400 and 440 bytes of float32
    check = memory_check(teacher, student, limit=10**6)
    assert check["needed_bytes"] == 40_400 + 5 * 440 and check["fits"]
    assert not memory_check(teacher, student, limit=50_000)["fits"]  # within the limit, but not its 80%
    assert memory_check(teacher, student)["available_bytes"] > 0  # measured on this machine


def test_on_policy_that_does_not_fit_fails_before_training_naming_the_memory_and_offline(tiny, tmp_path):
    events: list = []
    with pytest.raises(EngineError) as failed:
        _run(tiny, tmp_path, "on_policy", memory_bytes=1, events=events)
    print(failed.value.message)
    # It needs the live teacher for the student's own samples: no fallback to a cached signal, a clear failure.
    assert failed.value.code == "limit_exceeded"
    assert "on_policy" in failed.value.message and "method offline" in failed.value.message
    assert "need" in failed.value.message and "of the 1 bytes available on cpu" in failed.value.message
    assert [(e.type, next(iter(e.data))) for e in events] == [("info", "preflight")]  # no training, no estimate
    assert not (tmp_path / "cache").exists()  # no teacher signal made


@pytest.mark.parametrize(("method", "misses"), [("offline", 3), ("seq_kd", 6)])
def test_a_job_that_does_not_fit_caches_the_teachers_outputs_and_frees_the_teacher(
    tiny, tmp_path, monkeypatch, method, misses
):
    freed: list = []
    real = lm_distill._Job.release_teacher
    monkeypatch.setattr(lm_distill._Job, "release_teacher", lambda job: (freed.append(job.cache.misses), real(job)))
    report, events = _run(tiny, tmp_path, method, memory_bytes=1)
    # offline: the training and held-out signals and the generations; seq_kd: its 4 seeds' samples of the training
    # prompts instead of the training signal. Then the teacher went, and nothing asked for it again.
    assert freed == [misses] and report["teacher_signal"]["cache_misses"] == misses
    assert report["method"] == method and report["preflight"]["fallback"] is None
    assert report["teacher"]["perplexity"] > 1 and report["student"]["perplexity"] > 1
    assert any("cached first" in e.message for e in events if e.type == "warning")


def test_the_report_counts_every_teacher_forward_the_preflight_apart(tiny, tmp_path, monkeypatch):
    forwards: list = []
    load = lm_distill.load_causal_lm

    def counted(path, device="cpu", role="teacher"):
        lm = load(path, device, role)
        lm.model.register_forward_hook(lambda *_: forwards.append(role))
        return lm

    monkeypatch.setattr(lm_distill, "load_causal_lm", counted)
    for run in ("first", "second"):  # the second student finds every signal in the cache
        forwards.clear()
        report, _ = _run(tiny, tmp_path, "offline", None, job=run)
        counts = report["teacher_signal"]
        print(run, counts, len(forwards))
        assert counts["preflight_forward_passes"] == report["preflight"]["smoke"]["teacher_forward_passes"] == 2
        assert counts["forward_passes"] + counts["preflight_forward_passes"] == len(forwards)
    assert counts["forward_passes"] == 0 and counts["cache_misses"] == 0
