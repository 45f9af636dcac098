"""The report: what a user gets to judge the student, every number reproducible from the artifacts.

`history` holds per-epoch metrics on the validation slice (held out of train for choosing the best
epoch); `teacher`, `student` and `baseline` accuracies are on the eval split, which is never used
for choosing.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

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


@torch.no_grad()
def latency_ms(
    run: Callable[[torch.Tensor], object], example: torch.Tensor, batch: int, warmup: int = 3, runs: int = 15
) -> float:
    """Median wall time in milliseconds of `run` on a batch of `batch` rows, after warmup."""
    reps = max(1, -(-batch // len(example)))
    x = example.repeat(reps, *([1] * (example.ndim - 1)))[:batch].contiguous()
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 4)


def latencies(run: Callable[[torch.Tensor], object], example: torch.Tensor) -> dict:
    """Latency at batch 1 and batch 64."""
    return {"batch_1": latency_ms(run, example, 1), "batch_64": latency_ms(run, example, 64)}


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
        "speedup": {
            k: ratio((teacher["latency_ms"] or {}).get(k), student["latency_ms"][k]) for k in ("batch_1", "batch_64")
        },
        "teacher_outputs_cache": teacher_outputs_cache,
        "history": history,
    }
    report.update(extra)
    return report


def write_report(out_dir: str, report: dict) -> str:
    """Write report.json."""
    path = os.path.join(out_dir, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return path
