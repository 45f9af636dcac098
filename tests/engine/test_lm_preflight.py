"""The causal-LM preflight (issue 12, point 5) on a tiny GPT-2 built from a config: a smoke step and the teacher's
cost stated before the first teacher pass, per-epoch progress of both models, and an online method that does not
fit in memory falling back to offline KD with the teacher freed before the students train."""

from __future__ import annotations

import json
import random

import pytest
import torch

from htmlreport import render_report_html
from tests.support import hf_folders as hf
from worker.engine.lm_distill import LMConfig, distill_lm
from worker.engine.lm_preflight import memory_check
from worker.engine.lm_train import LMTrainSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-lm")
    folder, _ = hf.gpt2_lm(out / "teacher")
    rng = random.Random(0)

    def rows(path, n):
        lines = [{"prompt": " ".join(f"w{rng.randrange(60)}" for _ in range(3)),
                  "completion": " ".join(f"w{rng.randrange(60)}" for _ in range(4))} for _ in range(n)]  # fmt: skip
        path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
        return str(path)

    return str(hf.zip_folder(folder, out / "teacher.zip")), rows(out / "train.jsonl", 48), rows(out / "eval.jsonl", 12)


def _run(tiny, out, method: str, memory_bytes: int | None) -> tuple[dict, list]:
    teacher, train, eval_ = tiny
    events: list = []
    config = LMConfig(method=method, student={"architecture": "hf", "num_hidden_layers": 1}, speed=False,
                      train=LMTrainSettings(epochs=2, batch_size=16), max_length=16, max_new_tokens=4,
                      generation_prompts=4, memory_bytes=memory_bytes)  # fmt: skip
    report = distill_lm(teacher, train, eval_, config, str(out / "job"), str(out / "cache"), progress=events.append)
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
