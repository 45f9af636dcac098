"""Causal language models distilled (issue 12, points 3, 4, 6, 7), at engine level: a 6-layer Llama trained here
on real text (docstrings on this machine) into a 2-layer student from its layers, by forward KL, generalised
JSD and sequence-level KD, each against the SFT baseline trained in the same job."""

from __future__ import annotations

import html
import json

import pytest

from htmlreport import fmt, render_report_html
from tests.support.lm_text import lm_fixture, unzip
from worker.engine.errors import EngineError
from worker.engine.lm_distill import LMConfig, distill_lm
from worker.engine.lm_train import LMTrainSettings

pytestmark = pytest.mark.slow
STUDENT = {"architecture": "hf", "num_hidden_layers": 2, "init": "teacher_layers"}


def _job(method: str, out, cache, student=None, speed=False, **train) -> dict:
    files = lm_fixture()
    config = LMConfig(
        method=method, student=student or STUDENT, train=LMTrainSettings(epochs=3, **train), speed=speed,
        generation_prompts=24,
    )  # fmt: skip
    return distill_lm(str(files["teacher"]), str(files["train"]), str(files["eval"]), config, str(out), str(cache))


def _figures(report: dict) -> str:
    def one(name: str) -> str:
        f = report[name]
        rouge = f.get("generations", {}).get("rouge_l", 1.0)
        return (
            f"{name}: ppl {f['perplexity']:.2f}, top1 {f.get('top1_agreement', float('nan')):.4f}, "
            f"fKL {f.get('forward_kl', float('nan')):.4f}, rougeL {rouge:.3f}"
        )

    gap = report["gap_recovered"]["value"]
    return f"{report['method']}: " + "; ".join(one(n) for n in ("teacher", "student", "baseline")) + f"; gap {gap}"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    cache = tmp_path_factory.mktemp("lm-cache")
    out = tmp_path_factory.mktemp("lm-jobs")
    return {
        method: _job(method, out / method, cache, speed=method == "forward_kl")
        for method in ("forward_kl", "jsd", "seq_kd")
    } | {"_out": out}


@pytest.mark.parametrize("method", ["forward_kl", "jsd", "seq_kd"])
def test_a_distilled_student_beats_the_sft_baseline_of_the_same_job(reports, method):
    report = reports[method]
    print(_figures(report))
    teacher, student, baseline = report["teacher"], report["student"], report["baseline"]
    assert student["num_parameters"] * 2 <= teacher["num_parameters"]
    assert teacher["perplexity"] < baseline["perplexity"], "the fixture teacher must know more than the baseline"
    assert student["perplexity"] < baseline["perplexity"]
    assert student["top1_agreement"] > baseline["top1_agreement"]
    assert report["gap_recovered"]["value"] > 0
    assert report["gap_recovered"]["on"].startswith("log-perplexity")
    assert 0 <= student["generations"]["rouge_l"] <= 1 and student["generations"]["samples"]


def test_sequence_level_kd_brings_the_student_generations_closer_to_the_teacher(reports):
    report = reports["seq_kd"]
    print(_figures(report), report["student"]["generations"]["exact_match"], report["baseline"]["generations"])
    student, baseline = report["student"]["generations"], report["baseline"]["generations"]
    assert student["rouge_l"] > baseline["rouge_l"] and student["exact_match"] >= baseline["exact_match"]


def test_the_report_states_speed_and_teacher_cost(reports):
    report = reports["forward_kl"]
    speed = report["student"]["speed"]
    assert speed["tokens_per_second_batch_1"] > 0 and speed["tokens_per_second_batch_32"] > 0
    assert speed["latency_ms_p50"] <= speed["latency_ms_p95"]
    assert report["teacher"]["speed"]["device"] == "cpu"
    # Online KD runs the teacher on every training batch: the job counts those passes.
    assert report["teacher_signal"]["forward_passes"] > 0
    saved = json.loads((reports["_out"] / "forward_kl" / "report.json").read_text())
    assert saved["student"]["perplexity"] == report["student"]["perplexity"]
    page = render_report_html(saved)
    assert "<h2>Language model</h2>" in page and fmt(report["student"]["perplexity"]) in page
    assert fmt(report["gap_recovered"]["value"]) in page
    assert html.escape(report["student"]["generations"]["samples"][0]["student"], quote=True) in page


def test_a_second_student_reuses_the_cached_teacher_signal(tmp_path):
    first = _job("offline", tmp_path / "first", tmp_path / "cache", speed=True)
    print(_figures(first), first["teacher_signal"], "planned", first["planned_signal_bytes"])
    assert first["teacher_signal"]["forward_passes"] > 0 and first["teacher_signal"]["cache_misses"] > 0
    assert first["planned_signal_bytes"] > 0
    assert first["student"]["perplexity"] < first["baseline"]["perplexity"]
    other = {**STUDENT, "num_hidden_layers": 1}
    second = _job("offline", tmp_path / "second", tmp_path / "cache", student=other, speed=True)
    print(_figures(second), second["teacher_signal"])
    assert second["teacher_signal"]["forward_passes"] == 0  # counted by a hook on the teacher's forward
    assert second["teacher_signal"]["preflight_forward_passes"] == 2  # the smoke step's, counted apart
    assert second["teacher_signal"]["cache_misses"] == 0 and second["teacher_signal"]["bytes_written"] == 0
    assert second["teacher"]["perplexity"] == first["teacher"]["perplexity"]


def test_logit_kd_refuses_another_vocabulary_and_sequence_level_kd_works_across_it(tmp_path):
    other = {"path": str(lm_fixture()["other_student"])}
    for method in ("forward_kl", "offline"):
        with pytest.raises(EngineError, match="seq_kd") as refused:
            _job(method, tmp_path / method, tmp_path / "cache", student=other)
        assert refused.value.code == "invalid_student" and "tokenizer" in refused.value.message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # no teacher pass made
    report = _job("seq_kd", tmp_path / "seq", tmp_path / "cache", student=other)
    print(_figures(report))
    assert "top1_agreement" not in report["student"]  # token-level comparisons need one vocabulary
    assert report["gap_recovered"]["value"] is None  # perplexities over different tokenizers do not compare
    assert report["student"]["generations"]["rouge_l"] > report["baseline"]["generations"]["rouge_l"]
    assert report["teacher_signal"]["forward_passes"] > 0


def test_the_exported_student_loads_with_transformers_alone_and_generates(reports, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = reports["forward_kl"]
    folder = unzip(reports["_out"] / "forward_kl" / report["exports"]["hf"], tmp_path / "student")
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert sum({id(p): p.numel() for p in model.parameters()}.values()) == report["student"]["num_parameters"]
    sample = report["student"]["generations"]["samples"][0]
    ids = tokenizer(sample["prompt"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert text and text == sample["student"]  # the report's own greedy generation, reproduced
