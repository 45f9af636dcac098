"""The teacher's outputs on augmented batches, cached (FKD, Shen and Xing 2022, "A Fast Knowledge Distillation
Framework for Visual Recognition").

An augmented batch is a pure function of (seed, epoch, the epoch's order of rows, step, augmentation settings):
the loop seeds its generator per epoch. So the teacher's outputs on it can be stored once and reused by later
trials of the recipe's search, the baseline, the final run and later jobs on the same (teacher, data, recipe).
Few classes are stored as full float32 logits; many as the top-k logits plus one fill value per row that keeps
the rest of the probability mass. Every run trains on the stored form, so a run that fills the cache and a run
that reads it train on the very same numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from worker.engine.atomic import atomic_write

logger = logging.getLogger(__name__)

FULL_LOGITS_MAX_CLASSES = 100  # up to this many classes a row's logits are stored whole
TOP_K = 20
MAX_EPOCH_BYTES = 256 << 20  # an epoch's outputs larger than this are kept in memory only
CACHE_FORMAT = 1


def compress(logits: torch.Tensor) -> dict[str, np.ndarray]:
    """The stored form of a batch's logits: whole when the classes are few, else top-k with a fill value."""
    logits = logits.float().cpu()
    if logits.shape[1] <= FULL_LOGITS_MAX_CLASSES:
        return {"logits": logits.numpy()}
    values, indices = logits.topk(TOP_K, dim=1)
    # The other classes share the probability mass the top k leave, evenly, in logit space.
    total = torch.logsumexp(logits, dim=1)
    rest = (1 - torch.exp(torch.logsumexp(values, dim=1) - total)).clamp(min=1e-12)
    fill = torch.log(rest / (logits.shape[1] - TOP_K)) + total
    return {"values": values.numpy(), "indices": indices.int().numpy(), "fill": fill.numpy()}


def decompress(stored: dict[str, np.ndarray], num_classes: int) -> torch.Tensor:
    """[rows, num_classes] float32 logits from the stored form."""
    if "logits" in stored:
        return torch.from_numpy(stored["logits"])
    fill = torch.from_numpy(stored["fill"]).unsqueeze(1).expand(-1, num_classes).clone()
    return fill.scatter_(1, torch.from_numpy(stored["indices"]).long(), torch.from_numpy(stored["values"]))


class AugmentedOutputs:
    """The teacher on augmented batches, through the cache; counts teacher calls and the time they took."""

    def __init__(self, teacher: Callable, num_classes: int, key_parts: dict, cache_dir: str | None):
        self.teacher, self.num_classes, self.cache_dir = teacher, num_classes, cache_dir
        blob = json.dumps({"format": CACHE_FORMAT, **key_parts}, sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()
        self.epochs: dict[str, dict[int, dict[str, np.ndarray]]] = {}
        self.epoch_key: str | None = None
        self.steps_per_epoch = 0
        self.teacher_calls = 0  # forward passes of the teacher on augmented batches
        self.teacher_seconds = 0.0
        self.hits = 0
        self.saved_seconds = 0.0  # teacher time the reused batches cost when they were computed
        self.batch_seconds: dict[str, float] = {}  # per epoch: the teacher's mean seconds per batch

    def begin_epoch(self, epoch: int, order: torch.Tensor, steps: int) -> None:
        """Select the epoch whose batches follow; `order` is its order of rows (part of the key)."""
        digest = hashlib.sha256(order.cpu().numpy().astype(np.int64).tobytes()).hexdigest()[:16]
        self.epoch_key, self.steps_per_epoch = f"{self.key[:32]}-e{epoch}-{digest}", steps
        if self.epoch_key not in self.epochs:
            self.epochs[self.epoch_key] = self._read(self.epoch_key) or {}
            self.batch_seconds.setdefault(self.epoch_key, 0.0)

    def __call__(self, step: int, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for augmented batch `step` of the current epoch (x is that batch)."""
        assert self.epoch_key is not None  # begin_epoch came first
        steps = self.epochs[self.epoch_key]
        stored = steps.get(step)
        if stored is None:
            started = time.perf_counter()
            with torch.no_grad():
                stored = compress(self.teacher(x))
            elapsed = time.perf_counter() - started
            self.teacher_seconds += elapsed
            self.teacher_calls += 1
            steps[step] = stored
            # A running mean over this epoch's computed batches, written with the epoch for later jobs.
            self.batch_seconds[self.epoch_key] += (elapsed - self.batch_seconds[self.epoch_key]) / len(steps)
            if len(steps) == self.steps_per_epoch:
                self._write(self.epoch_key, steps)
        else:
            self.hits += 1
            self.saved_seconds += self.batch_seconds[self.epoch_key]
        return decompress(stored, self.num_classes).to(x.device)

    def summary(self) -> dict:
        """Teacher calls made and saved, and the teacher time the cache saved (what those batches cost to compute)."""
        return {
            "teacher_calls": self.teacher_calls,
            "cached_batches_reused": self.hits,
            "teacher_seconds": round(self.teacher_seconds, 3),
            "teacher_seconds_saved": round(self.saved_seconds, 3),
            "on_disk": self.cache_dir is not None,
        }

    def _path(self, epoch_key: str) -> str | None:
        return None if self.cache_dir is None else os.path.join(self.cache_dir, f"augmented-{epoch_key}.npz")

    def _read(self, epoch_key: str) -> dict[int, dict[str, np.ndarray]] | None:
        path = self._path(epoch_key)
        if path is None or not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring an unreadable augmented-output cache %s: %s", path, exc)
            return None
        offsets = arrays.pop("offsets")
        self.batch_seconds[epoch_key] = float(arrays.pop("batch_seconds", np.zeros(1))[0])
        return {
            step: {name: a[offsets[step] : offsets[step + 1]] for name, a in arrays.items()}
            for step in range(len(offsets) - 1)
        }

    def _write(self, epoch_key: str, steps: dict[int, dict[str, np.ndarray]]) -> None:
        path = self._path(epoch_key)
        if path is None:
            return
        ordered = [steps[i] for i in range(len(steps))]
        arrays: dict[str, Any] = {name: np.concatenate([s[name] for s in ordered]) for name in ordered[0]}
        if sum(a.nbytes for a in arrays.values()) > MAX_EPOCH_BYTES:
            return
        arrays["offsets"] = np.cumsum([0] + [len(next(iter(s.values()))) for s in ordered])
        arrays["batch_seconds"] = np.array([self.batch_seconds[epoch_key]])

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare path
                np.savez(f, **arrays)

        assert self.cache_dir is not None  # _path gave a path
        os.makedirs(self.cache_dir, exist_ok=True)
        atomic_write(path, write)  # a concurrent job never reads half an epoch
