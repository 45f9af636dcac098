"""Pickle-free checkpoints: tensors in checkpoint.safetensors, everything else in checkpoint.json."""

from __future__ import annotations

import json
import logging
import os
import random
from typing import cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from worker.engine.atomic import atomic_write

logger = logging.getLogger(__name__)

TENSORS = "checkpoint.safetensors"
META = "checkpoint.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state_dict into flat tensors and JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value)
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of optimizer_tensors."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    # Saved tensors come back contiguous; moments of a channels_last parameter take its layout again, so the
    # resumed run's optimizer runs on the same strides as the uninterrupted one (strided and vectorised
    # kernels need not round alike).
    for group in optimizer.param_groups:
        for param in group["params"]:
            entries = optimizer.state.get(param, {})
            for name, value in entries.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    entries[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """All RNG states: torch's as tensors, numpy's and Python's as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of rng_state."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(directory: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write both files atomically; the JSON names the tensor file's generation so a torn pair is detected."""
    os.makedirs(directory, exist_ok=True)
    generation = f"{meta['epoch']}.{meta['step']}.{meta['global_step']}"
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(
        os.path.join(directory, TENSORS), lambda path: save_file(flat, path, metadata={"generation": generation})
    )
    atomic_write(os.path.join(directory, META), json.dumps({**meta, "generation": generation}).encode())


def load_checkpoint(directory: str | None) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Read a checkpoint written by save_checkpoint, or None when there is none (or a torn one)."""
    if not directory:
        return None
    tensor_path, meta_path = os.path.join(directory, TENSORS), os.path.join(directory, META)
    if not (os.path.exists(tensor_path) and os.path.exists(meta_path)):
        return None
    from safetensors import safe_open

    with open(meta_path) as f:
        meta = json.load(f)
    with safe_open(tensor_path, framework="pt") as f:
        generation = (f.metadata() or {}).get("generation")
    if generation != meta.get("generation"):
        logger.warning(
            "checkpoint in %s is torn (generation %s vs %s); starting over",
            directory,
            generation,
            meta.get("generation"),
        )
        return None
    return load_file(tensor_path), meta
