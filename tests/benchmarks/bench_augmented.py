"""The augmented-KD rows of bench_engine.py: the tutorial loop running the teacher on every augmented batch
against the engine's auto recipe with its cache of the teacher's outputs on augmented batches.

(a-aug) the tutorial loop (fp32, Adam with cosine decay, loss.item() every step) with the engine's own
    augment_batch (mixup and noise for images, token dropout for text, at the settings the auto recipe picks
    for the data), the teacher's forward pass on every augmented batch, every step.
(c-aug) worker.engine.distill() under "recipe": "auto" with epochs, learning rate, temperature and alpha named
    (values other than the plain defaults are kept as given, so nothing is searched and the schedule is the
    tutorial's), run twice on the same teacher cache folder. The cold job computes the teacher's outputs on
    every augmented batch and stores them (augmented_cache.py); the warm job is a later job on the same
    teacher, data and settings: its augmented batches are the same, their outputs are read, not computed.
    Timed by phase from progress events: the clean teacher pass (eval split included) plus the student's
    training (validation each epoch included) is the job figure; the baseline the auto recipe trains on
    labelled data (labels only, the same epochs) and the evaluation and export are shown apart, not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from worker.engine import DistillConfig, distill
from worker.engine.augment import augment_batch
from worker.engine.recipe import named_hyperparameters, plan_recipe

# Other than the plain defaults (4.0, 0.9): named, so the auto recipe keeps them and searches nothing.
TEMPERATURE, ALPHA = 3.0, 0.8


@dataclass
class AugmentedEngineRun:
    """One distill() job under the auto recipe with augmentation; samples/s are training examples."""

    teacher_pass_s: float  # the clean teacher pass over train and eval rows (a disk-cache hit when warm)
    student_s: float  # the student's training: every epoch, the teacher on augmented batches when cold
    baseline_s: float  # the labels-only baseline the auto recipe adds (not counted)
    job: float  # samples/s over teacher pass + student training: the figure the ratios use
    training: float  # samples/s over the student's training alone
    end_to_end: float  # samples/s over everything distill() did
    accuracy: float
    cache: dict  # the report's augmented_outputs_cache: teacher calls made and batches reused
    report: dict


def augmentation_for(w) -> dict:
    """The augmentation the auto recipe picks for the workload's training data."""
    config = DistillConfig.from_dict({"student": w.student})
    return dict(plan_recipe(config, w.x_train, len(w.x_train), labeled=True).config.augmentation or {})


def run_tutorial_augmented(
    w, device: str, student: torch.nn.Module, loss_fn: Callable, augmentation: dict
) -> tuple[float, torch.nn.Module]:
    """(samples/s, trained student) of the tutorial loop with augmentation: the teacher on every augmented batch."""
    opt = torch.optim.Adam(student.parameters(), lr=w.learning_rate)
    x, y = torch.from_numpy(w.x_train), torch.from_numpy(w.y_train)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=w.epochs * math.ceil(len(x) / w.batch_size))
    seen, losses = 0, []
    sync(device)
    start = time.perf_counter()
    for epoch in range(w.epochs):
        gen = torch.Generator().manual_seed(epoch)  # one generator per epoch orders and augments, as the engine's
        student.train()
        for idx in torch.randperm(len(x), generator=gen).split(w.batch_size):
            xb, yb = x[idx].to(device), y[idx].to(device)
            xb, yb = augment_batch(xb, yb, w.num_classes, augmentation, gen, w.pad_id or 0)
            with torch.no_grad():
                t = w.teacher(xb)
            loss = loss_fn(student(xb), t, yb, TEMPERATURE, ALPHA)  # yb: soft targets after mixup
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            seen += len(idx)
    sync(device)
    return seen / (time.perf_counter() - start), student


def engine_config(w, device: str, augmentation: dict) -> DistillConfig:
    """The auto recipe with the tutorial's schedule named; raises if the recipe would still search or re-pick."""
    config = DistillConfig.from_dict(
        {
            "student": w.student,
            "recipe": "auto",
            "epochs": w.epochs,
            "batch_size": w.batch_size,
            "learning_rate": w.learning_rate,
            "temperature": TEMPERATURE,
            "alpha": ALPHA,
            "export": [],
            "device": device,
        }
    )
    plan = plan_recipe(config, w.x_train, len(w.x_train), labeled=True)
    if plan.search or plan.config.augmentation != augmentation or plan.config.epochs != w.epochs:
        named = named_hyperparameters(config)
        raise SystemExit(f"the auto recipe would not train the tutorial's schedule: named {named}, {plan.section()}")
    return config


def run_engine_augmented(w, config: DistillConfig, out: Path, cache_dir: Path) -> AugmentedEngineRun:
    """Run distill() once with `cache_dir` as its teacher cache folder and time its phases."""
    marks: dict[str, float] = {}
    epoch_ends: list[float] = []

    def progress(event):
        # Each epoch's metrics event follows its validation pass; the baseline trains silently after the student.
        now = time.perf_counter()
        if event.type == "phase":
            marks[event.data["phase"]] = now
        elif event.type == "metrics":
            epoch_ends.append(now)
        elif event.type == "info" and event.message.startswith("training the baseline"):
            marks["baseline"] = now

    start = time.perf_counter()
    report = distill(
        str(w.teacher_path),
        w.train_spec,
        w.eval_spec,
        config,
        str(out),
        progress=progress,
        teacher_cache_dir=str(cache_dir),
    )
    total = time.perf_counter() - start
    examples = len(epoch_ends) * math.ceil(0.9 * len(w.x_train))  # the engine trains on train minus its 10%
    teacher_s = marks["training"] - marks["teacher_outputs"]
    student_s = epoch_ends[-1] - marks["training"]
    baseline_s = marks["evaluating"] - marks["baseline"] if "baseline" in marks else 0.0
    return AugmentedEngineRun(
        teacher_pass_s=teacher_s,
        student_s=student_s,
        baseline_s=baseline_s,
        job=examples / (teacher_s + student_s),
        training=examples / student_s,
        end_to_end=examples / total,
        accuracy=report["student"]["accuracy"],
        cache=report["recipe"]["augmented_outputs_cache"],
        report=report,
    )


def augmented_rows(w, device: str, work: Path, new_student: Callable, accuracy: Callable, loss_fn: Callable) -> tuple:
    """Run (a-aug) and (c-aug) cold and warm and print their rows; (tutorial, cold job, warm job) samples/s and
    the three accuracies."""
    augmentation = augmentation_for(w)
    config = engine_config(w, device, augmentation)
    a_speed, student = run_tutorial_augmented(w, device, new_student(w, device), loss_fn, augmentation)
    a_acc = accuracy(student, w, device)
    cache_dir = work / f"aug-cache-{w.name}"
    cold = run_engine_augmented(w, config, work / f"aug-cold-{w.name}", cache_dir)
    warm = run_engine_augmented(w, config, work / f"aug-warm-{w.name}", cache_dir)
    print(f"\naugmented KD: {augmentation}, temperature {TEMPERATURE}, alpha {ALPHA}, the auto recipe's search off")
    print(f"{'way':<52}{'samples/s':>12}{'accuracy':>10}")
    print(f"{'(a-aug) tutorial loop, teacher every augmented step':<52}{a_speed:>12,.0f}{a_acc:>10.3f}")
    for label, run in (("cold cache (first job)", cold), ("warm cache (a later job)", warm)):
        print(f"{'(c-aug) engine, ' + label + ': the job':<52}{run.job:>12,.0f}{run.accuracy:>10.3f}")
        print(f"{'    student training alone':<52}{run.training:>12,.0f}")
        print(f"{'    distill() end to end (with baseline, evaluation)':<52}{run.end_to_end:>12,.0f}")
        print(
            f"    seconds: teacher pass {run.teacher_pass_s:.2f}, student {run.student_s:.2f} (counted); "
            f"baseline {run.baseline_s:.2f} (not counted); augmented cache {run.cache}"
        )
    share = cold.cache["teacher_seconds"] / cold.student_s
    print(
        f"the teacher on augmented batches: {cold.cache['teacher_seconds']:.2f} s of the cold job's "
        f"{cold.student_s:.2f} s of student training ({100 * share:.0f}%), what the warm cache can save at most"
    )
    spread = max(a_acc, cold.accuracy, warm.accuracy) - min(a_acc, cold.accuracy, warm.accuracy)
    print(
        f"augmented ratios: (c-aug cold)/(a-aug) {cold.job / a_speed:.2f}x, (c-aug warm)/(a-aug) "
        f"{warm.job / a_speed:.2f}x; accuracy spread {100 * spread:.1f} points"
        + ("" if spread <= 0.01 else " (more than one point: the speed comparison is void)")
    )
    return a_speed, cold.job, warm.job, (a_acc, cold.accuracy, warm.accuracy)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
