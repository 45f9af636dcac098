"""The report page shows what each latency was measured with, the GPU figures, and the auto recipe."""

from __future__ import annotations

import copy

from htmlreport import render_report_html


def _cpu(runtime: str) -> dict:
    return {"device": "cpu AMD EPYC", "runtime": runtime, "threads": 2, "input_shape": [64]}


def _report() -> dict:
    return {
        "job_id": "job_r",
        "device": "cuda",
        "teacher": {
            "accuracy": 0.97,
            "latency_ms": {"batch_1": 0.41, "batch_64": 2.1},
            "latency": _cpu("onnxruntime"),
            "latency_ms_cuda": {"batch_1": 0.21, "batch_64": 0.55},
            "latency_cuda": {
                "device": "cuda:0 NVIDIA H200",
                "runtime": "torchscript",
                "threads": None,
                "input_shape": [64],
            },
        },
        "student": {
            "accuracy": 0.95,
            "agreement": 0.96,
            "latency_ms": {"batch_1": 0.05, "batch_64": 0.2},
            "latency": _cpu("onnxruntime"),
            "latency_ms_cuda": {"batch_1": 0.03, "batch_64": 0.04},
            "latency_cuda": {
                "device": "cuda:0 NVIDIA H200",
                "runtime": "torchscript",
                "threads": None,
                "input_shape": [64],
            },
        },
        "speedup": {"batch_1": 8.2, "batch_64": 10.5},
        "speedup_cuda": {"batch_1": 7.0, "batch_64": 13.75},
        "recipe": {
            "name": "auto",
            "named_by_user": ["temperature"],
            "chosen": {
                "epochs": 30,
                "learning_rate": 3e-05,
                "augmentation": {"noise": 0.1},
                "temperature": 4.0,
                "alpha": 0.7,
            },
            "why": {"epochs": "30 epochs of 20 steps", "search": "alpha chosen on the validation slice"},
            "budget": {
                "final_epochs": 30,
                "baseline_epochs": 30,
                "search_trials": 2,
                "epochs_per_trial": 6,
                "trial_epochs_spent": 8,
            },
            "trials": [
                {
                    "trial": 1,
                    "alpha": 0.5,
                    "learning_rate": 0.001,
                    "validation_metric": 0.9123,
                    "epochs": 6,
                    "pruned": False,
                    "seconds": 1.5,
                },
                {
                    "trial": 2,
                    "alpha": 0.8123,
                    "learning_rate": 3e-05,
                    "validation_metric": 0.8,
                    "epochs": 2,
                    "pruned": True,
                    "seconds": 0.5,
                },
            ],
            "seconds": {"search": 2.0, "student": 9.5, "baseline": 8.25},
            "augmented_outputs_cache": {
                "teacher_calls": 40,
                "cached_batches_reused": 120,
                "teacher_seconds": 1.2,
                "teacher_seconds_saved": 3.6,
                "on_disk": True,
            },
        },
    }


def test_latency_labels_and_gpu_rows_are_shown():
    page = render_report_html(_report())
    assert "onnxruntime on cpu AMD EPYC, 2 threads, input [64]" in page
    assert "torchscript on cuda:0 NVIDIA H200, input [64]" in page
    assert "GPU latency batch 1 (ms)" in page and "GPU speedup batch 64" in page
    assert "13.7500" in page and "0.0300" in page
    assert 'aria-label="GPU latency"' in page and page.count("<svg") == 2  # CPU and GPU latency bars


def test_skipped_gpu_teacher_says_why():
    report = _report()
    report["teacher"]["latency_ms_cuda"] = None
    report["teacher"]["latency_cuda"] = {
        **report["teacher"]["latency_cuda"],
        "runtime": "onnxruntime",
        "skipped": "no CUDA provider",
    }
    del report["speedup_cuda"]
    page = render_report_html(report)
    assert "not measured: no CUDA provider" in page
    assert "GPU speedup" not in page


def test_recipe_section_shows_choices_reasons_trials_and_timings():
    page = render_report_html(_report())
    assert "<h2>Recipe</h2>" in page
    assert "30 epochs of 20 steps" in page and "alpha chosen on the validation slice" in page
    assert "set by you" in page  # temperature, named by the user
    assert "3e-05" in page  # a learning rate keeps its digits
    assert "Search trials" in page and "0.9123" in page and "0.8123" in page
    assert "search 2.0000 s" in page and "baseline 8.2500 s" in page
    assert "teacher seconds saved by the cache" in page and "3.6000" in page
    assert "120 cached batches reused" in page


def test_an_old_report_without_the_new_keys_renders():
    report = _report()
    del report["recipe"], report["speedup_cuda"]
    for side in ("teacher", "student"):
        for key in ("latency", "latency_cuda", "latency_ms_cuda"):
            del report[side][key]
    page = render_report_html(report)
    assert "Distillation report" in page
    assert "Recipe" not in page and "Latency measured with" not in page and "GPU" not in page
    assert "Distillation report" in render_report_html({})


def test_a_partial_or_odd_recipe_never_raises():
    for recipe in (
        {"name": "plain"},
        {"name": "plain", "chosen": {"epochs": 20}, "why": {}, "trials": []},
        {"trials": [None, 3, {"trial": 1}]},
        {"chosen": None, "why": "x", "seconds": [1]},
        "auto",
        None,
    ):
        page = render_report_html({**_report(), "recipe": recipe})
        assert page.endswith("</html>")
    page = render_report_html({**_report(), "recipe": {"name": "plain", "chosen": {"epochs": 20}}})
    assert "plain" in page and "Search trials" not in page


def test_user_provided_text_is_escaped():
    report = copy.deepcopy(_report())
    report["recipe"]["why"]["epochs"] = "<script>alert(1)</script>"
    report["recipe"]["name"] = "<b>x</b>"
    report["recipe"]["trials"][0]["<img>"] = "<i>"
    report["student"]["latency"]["runtime"] = "<script>rt</script>"
    page = render_report_html(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;img&gt;" in page and "&lt;script&gt;rt&lt;/script&gt;" in page
