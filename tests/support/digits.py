"""Digits fixtures shared by engine and integration tests: data, a trained teacher, file writers.

Everything is cached per session (one temporary folder) because several tests need the same teacher.
"""

from __future__ import annotations

import csv
import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

TEACHER_HIDDEN = (512, 512)


@functools.cache
def digits_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train float32 [N, 64] in [0, 1], y_train, x_test, y_test) from sklearn's bundled digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def _teacher_module() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, TEACHER_HIDDEN[0]),
        nn.ReLU(),
        nn.Linear(*TEACHER_HIDDEN),
        nn.ReLU(),
        nn.Linear(TEACHER_HIDDEN[1], 10),
    )


@functools.lru_cache(maxsize=1)
def _trained_teacher() -> nn.Module:
    """A 64-512-512-10 MLP (~300k parameters) trained on the CPU in a few seconds to >= 97% test accuracy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread, and CI machines are shared
    try:
        return _train_teacher()
    finally:
        torch.set_num_threads(threads)


def _train_teacher() -> nn.Module:
    torch.manual_seed(0)
    x_train, y_train, _, _ = digits_arrays()
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model = _teacher_module()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        for index in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            # Label smoothing keeps the logits moderate, like most teachers people actually upload.
            nn.functional.cross_entropy(model(x[index]), y[index], label_smoothing=0.1).backward()
            optimizer.step()
    return model.eval()


@functools.lru_cache(maxsize=1)
def _cache_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="distillery-digits-"))


def teacher_accuracy() -> float:
    """Test accuracy of the cached teacher."""
    _, _, x_test, y_test = digits_arrays()
    with torch.no_grad():
        pred = _trained_teacher()(torch.from_numpy(x_test)).argmax(1).numpy()
    return float(np.mean(pred == y_test))


def train_digits_teacher(out_dir: str | Path | None = None) -> Path:
    """Path to teacher.pt (TorchScript) in out_dir (default: a session cache folder)."""
    path = Path(out_dir or _cache_dir()) / "teacher.pt"
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(_trained_teacher()), str(path))
    return path


def export_teacher_onnx(out_dir: str | Path | None = None) -> Path:
    """Path to teacher.onnx (dynamic batch) in out_dir (default: a session cache folder)."""
    path = Path(out_dir or _cache_dir()) / "teacher.onnx"
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _trained_teacher(),
                (torch.zeros(2, 64),),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    return path


def export_teacher_pt2(out_dir: str | Path | None = None, dynamic_batch: bool = True) -> Path:
    """Path to teacher.pt2 (torch.export.save; dynamic batch, or a static batch of 8) in out_dir."""
    name = "teacher.pt2" if dynamic_batch else "teacher-static.pt2"
    path = Path(out_dir or _cache_dir()) / name
    if not path.exists():
        example = (torch.zeros(8, 64),)
        shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(_trained_teacher(), example, dynamic_shapes=shapes)
            torch.export.save(program, str(path))
    return path


def write_npz(path: str | Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    """Write x (and y when given) to an .npz file."""
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(path, **arrays)
    return Path(path)


def write_csv(path: str | Path, x: np.ndarray, y: np.ndarray | None = None, label_column: str = "label") -> Path:
    """Write feature columns f0..fN (and the label column when y is given) to a CSV file."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{i}" for i in range(x.shape[1])] + ([label_column] if y is not None else []))
        for i, row in enumerate(x):
            writer.writerow([repr(float(v)) for v in row] + ([int(y[i])] if y is not None else []))
    return Path(path)
