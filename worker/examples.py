"""`distillery example DIR`: a trained teacher and data on which distillation visibly matters.

The story is a common one. The teacher (a 64-512-512-10 MLP, about 300k parameters) was trained elsewhere on
plenty of clean data and scores about 95% on eval.npz. What you have to distil with, train.npz, is small
(1,500 rows) and its labels came from a quick annotation pass: a fifth of them are wrong. eval.npz's labels
are right. A student of 2,410 parameters (the README's Quickstart: mlp hidden_sizes [32], 20 epochs) learns
mostly from the teacher's outputs and keeps about 99% of its accuracy at about 125x fewer parameters, while
the same student trained on the labels alone (`"baseline": true`) lands about five points lower.

Everything is generated in code from fixed seeds (no download) and takes a few seconds on a CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

FEATURES = 64
CLASSES = 10
TEACHER_HIDDEN = 512
TEACHER_ROWS = 10_000  # the teacher's own (clean) training data: not written out
TRAIN_ROWS = 1_500
EVAL_ROWS = 2_000
WRONG_LABELS = 0.2  # the fraction of train.npz's labels that are wrong


def make_blobs(
    n: int, seed: int, features: int = FEATURES, classes: int = CLASSES, noise: float = 2.2
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded classification problem: one Gaussian cloud per class around fixed centres, overlapping enough
    that even the best classifier errs on about one example in twenty."""
    centres = np.random.default_rng(1234).normal(0, 1.0, size=(classes, features))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(0, noise, size=(n, features))
    return x.astype(np.float32), y.astype(np.int64)


def corrupt_labels(y: np.ndarray, fraction: float, seed: int, classes: int = CLASSES) -> np.ndarray:
    """A copy of y in which `fraction` of the labels (chosen at random, seeded) name another class."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) < fraction
    noisy = y.copy()
    noisy[wrong] = (y[wrong] + rng.integers(1, classes, size=int(wrong.sum()))) % classes
    return noisy


def train_teacher(x_train: np.ndarray, y_train: np.ndarray, epochs: int = 10) -> nn.Module:
    """The teacher: an MLP trained with label smoothing (its logits stay moderate, as most teachers' do)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread (and a busy machine stays fast)
    try:
        return _train_teacher(x_train, y_train, epochs)
    finally:
        torch.set_num_threads(threads)


def _train_teacher(x_train: np.ndarray, y_train: np.ndarray, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Linear(FEATURES, TEACHER_HIDDEN),
        nn.ReLU(),
        nn.Linear(TEACHER_HIDDEN, TEACHER_HIDDEN),
        nn.ReLU(),
        nn.Linear(TEACHER_HIDDEN, CLASSES),
    )
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(teacher(x[idx]), y[idx], label_smoothing=0.1).backward()
            opt.step()
    return teacher.eval()


def write_example(out_dir: Path) -> dict[str, Path]:
    """Train the teacher (TorchScript) and write teacher.pt, train.npz, eval.npz and train.csv (train.npz's rows,
    with a `label` column)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_teacher, y_teacher = make_blobs(TEACHER_ROWS, seed=0)
    x_train, y_clean = make_blobs(TRAIN_ROWS, seed=1)
    y_train = corrupt_labels(y_clean, WRONG_LABELS, seed=7)
    x_eval, y_eval = make_blobs(EVAL_ROWS, seed=2)
    teacher = train_teacher(x_teacher, y_teacher)
    with torch.no_grad():
        accuracy = (teacher(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean()
    logger.info(
        "example teacher accuracy on eval.npz: %.3f; train.npz: %d rows, %.0f%% of their labels wrong",
        accuracy,
        TRAIN_ROWS,
        100 * (y_train != y_clean).mean(),
    )
    paths = {
        "teacher": out_dir / "teacher.pt",
        "train": out_dir / "train.npz",
        "eval": out_dir / "eval.npz",
        "csv": out_dir / "train.csv",
    }
    torch.jit.script(teacher).save(str(paths["teacher"]))
    np.savez(paths["train"], x=x_train, y=y_train)
    np.savez(paths["eval"], x=x_eval, y=y_eval)
    header = ",".join([f"f{i}" for i in range(x_train.shape[1])] + ["label"])
    rows = np.column_stack([x_train, y_train]).astype(object)
    rows[:, -1] = y_train
    np.savetxt(paths["csv"], rows, delimiter=",", header=header, comments="", fmt="%s")
    return paths
