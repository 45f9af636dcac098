"""`distillery example DIR`: a small trained teacher and data, so that a new user can try the service."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def make_blobs(n: int, seed: int, features: int = 20, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, learnable classification problem: noisy clusters around fixed centres."""
    centres = np.random.default_rng(1234).normal(0, 1.5, size=(classes, features))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(0, 1.6, size=(n, features))
    return x.astype(np.float32), y.astype(np.int64)


def write_example(out_dir: Path) -> dict[str, Path]:
    """Train a small MLP teacher (TorchScript) and write train.npz, eval.npz and train.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_blobs(3000, seed=1)
    x_eval, y_eval = make_blobs(1000, seed=2)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 5))
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(15):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(teacher(x[idx]), y[idx]).backward()
            opt.step()
    teacher.eval()
    with torch.no_grad():
        accuracy = (teacher(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean()
    logger.info("example teacher accuracy on eval: %.3f", accuracy)
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
