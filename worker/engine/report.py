"""The report: what a user gets to judge the student, every number reproducible from the artifacts.

`history` holds per-epoch metrics on the validation slice (held out of train for choosing the best
epoch); `teacher`, `student` and `baseline` accuracies are on the eval split, which is never used
for choosing.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from worker.engine.latency import ratios

REPORT_KEYS = (
    "job_id",
    "device",
    "train_seconds",
    "eval_examples",
    "classes",
    "teacher",
    "student",
    "baseline",
    "compression_ratio",
    "speedup",
    "teacher_outputs_cache",
    "history",
)


def accuracy(predictions: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Fraction of predictions equal to the labels; None without labels."""
    if labels is None or len(labels) == 0:
        return None
    return float(np.mean(predictions == labels))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded, or None when either is missing or b is zero."""
    if a is None or not b:
        return None
    return round(a / b, 3)


def device_name(device: str) -> str:
    """ "cpu" or "cuda:0 <GPU name>"."""
    if not device.startswith("cuda"):
        return "cpu"
    index = torch.device(device).index or 0
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


def build_report(
    *,
    device: str,
    train_seconds: float,
    eval_examples: int,
    classes: list[str],
    teacher: dict,
    student: dict,
    baseline: dict | None,
    teacher_outputs_cache: str | None,
    history: list[dict],
    extra: dict,
) -> dict:
    """Assemble the report with DESIGN.md's keys (job_id is filled by the caller), plus extras."""
    report = {
        "job_id": None,
        "device": device_name(device),
        "train_seconds": round(train_seconds, 3),
        "eval_examples": eval_examples,
        "classes": classes,
        "teacher": teacher,
        "student": student,
        "baseline": baseline,
        "compression_ratio": ratio(teacher["num_parameters"], student["num_parameters"]),
        # Both sides measured in the same job, on the same input, device kind and runtime (see latency.py).
        "speedup": ratios(teacher.get("latency_ms"), student.get("latency_ms")),
        "teacher_outputs_cache": teacher_outputs_cache,
        "history": history,
    }
    if teacher.get("latency_ms_cuda") and student.get("latency_ms_cuda"):
        report["speedup_cuda"] = ratios(teacher["latency_ms_cuda"], student["latency_ms_cuda"])
    report.update(extra)
    return report


def write_report(out_dir: str, report: dict) -> str:
    """Write report.json."""
    path = os.path.join(out_dir, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return path
