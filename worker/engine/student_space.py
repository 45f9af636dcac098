"""The budget search's space: candidate sizes per architecture, the smallest of each, and measuring one.

A candidate is measured before it is trained: its parameter count, and its latency at batch 1 and 64 in
TorchScript on the target device (the runtime `student.pt` is exported and timed in), so that a candidate over
the budget costs milliseconds, not a training run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from worker.engine.export import quiet
from worker.engine.latency import BATCHES, cpu_device_name, cuda_device_name, latencies, setup

# A candidate fits a latency budget when its measured figure is at most this fraction of it: the final student is
# timed again after training, and a figure measured twice on a busy machine differs by a few percent.
LATENCY_MARGIN = 0.85


def _mlp(trial) -> dict:
    layers = trial.suggest_int("mlp_layers", 0, 3)
    width = trial.suggest_int("mlp_width", 8, 1024, log=True)
    return {"architecture": "mlp", "hidden_sizes": [width] * layers}


def _cnn(trial) -> dict:
    blocks = trial.suggest_int("cnn_blocks", 1, 3)
    base = trial.suggest_int("cnn_channels", 4, 64, log=True)
    return {"architecture": "cnn", "channels": [base * 2**i for i in range(blocks)]}


def _lstm(trial) -> dict:
    return {
        "architecture": "lstm",
        "embedding_dim": trial.suggest_int("lstm_embedding", 8, 128, log=True),
        "hidden_dim": trial.suggest_int("lstm_hidden", 8, 256, log=True),
        "bidirectional": trial.suggest_categorical("lstm_bidirectional", [False, True]),
    }


def _textcnn(trial) -> dict:
    return {
        "architecture": "textcnn",
        "embedding_dim": trial.suggest_int("textcnn_embedding", 8, 128, log=True),
        "num_filters": trial.suggest_int("textcnn_filters", 8, 128, log=True),
    }


def _transformer(trial) -> dict:
    d_model = trial.suggest_categorical("transformer_width", [16, 32, 64, 128])
    return {
        "architecture": "transformer",
        "d_model": d_model,
        "layers": trial.suggest_int("transformer_layers", 1, 4),
        "heads": trial.suggest_categorical("transformer_heads", [1, 2, 4]),
    }


SPACES: dict[str, Callable[[Any], dict]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "lstm": _lstm,
    "textcnn": _textcnn,
    "transformer": _transformer,
}

# The smallest candidate of each architecture: if none of these fits, no candidate can.
SMALLEST: dict[str, dict] = {
    "mlp": {"architecture": "mlp", "hidden_sizes": []},
    "cnn": {"architecture": "cnn", "channels": [4]},
    "lstm": {"architecture": "lstm", "embedding_dim": 8, "hidden_dim": 8},
    "textcnn": {"architecture": "textcnn", "embedding_dim": 8, "num_filters": 8, "kernel_sizes": [3]},
    "transformer": {"architecture": "transformer", "d_model": 8, "layers": 1, "heads": 1, "ff_dim": 16},
}


def sample_candidate(trial, architectures: list[str]) -> dict:
    """One candidate spec drawn by the trial: an architecture, then its sizes."""
    architecture = trial.suggest_categorical("architecture", architectures)
    return SPACES[architecture](trial)


def target_device(requested: str, train_device: str) -> str:
    """The device latency is measured on: "cpu", or the training GPU when the target is CUDA."""
    if requested == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        from worker.engine.errors import EngineError

        raise EngineError(
            "invalid_config", 'search.device is "cuda" but this worker has no GPU; measure on "cpu" or use a GPU worker'
        )
    return train_device if train_device.startswith("cuda") else "cuda"


def measure(
    student: nn.Module, example: torch.Tensor, device: str, max_parameters: int | None = None
) -> tuple[int, dict]:
    """(parameters, {"batch_1": ms, "batch_64": ms}) of a fresh candidate, in TorchScript on `device`.

    A candidate over `max_parameters` is not timed (its latencies are None): it cannot fit whatever its speed.
    """
    parameters = sum(p.numel() for p in student.parameters())
    if max_parameters is not None and parameters > max_parameters:
        return parameters, {key: None for key in BATCHES}
    model = student.to("cpu").eval()
    with quiet():
        try:
            scripted = torch.jit.script(model)
        except Exception:  # some modules only trace, as export_torchscript does
            scripted = torch.jit.trace(model, example[:1], check_trace=False)
    scripted = scripted.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    return parameters, latencies(lambda x: scripted(x.to(device)), example, sync)


def measured_on(device: str, example: torch.Tensor) -> dict:
    """What the candidates' latencies were measured on, in the report's latency-setup shape."""
    name = cpu_device_name() if device == "cpu" else cuda_device_name(device)
    threads = torch.get_num_threads() if device == "cpu" else None
    return setup(name, "torchscript", threads, example)


def over_budget(parameters: int, latency: dict, budget: dict) -> str | None:
    """Why a measured candidate does not fit the budget, in words; None when it fits."""
    cap = budget.get("max_parameters")
    if cap is not None and parameters > cap:
        return f"{parameters:,} parameters over the budget's {cap:,}"
    for key, limit in (budget.get("max_latency_ms") or {}).items():
        if latency[key] is not None and latency[key] > LATENCY_MARGIN * limit:
            return f"{key} {latency[key]:.4g} ms > {LATENCY_MARGIN * limit:.4g} ms ({LATENCY_MARGIN:.0%} of the budget)"
    return None


def pareto_front(candidates: list[dict], key: str) -> set[int]:
    """Trials no other candidate beats on accuracy, latency and size at once (ties do not dominate)."""

    def point(c: dict) -> tuple[float, float, float]:
        return (-c["validation_metric"], c["latency_ms"][key], float(c["parameters"]))

    def dominates(a: tuple, b: tuple) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    points = {c["trial"]: point(c) for c in candidates}
    return {t for t, p in points.items() if not any(dominates(q, p) for u, q in points.items() if u != t)}


def spec_words(spec: dict) -> str:
    """A spec in a line: `mlp hidden_sizes=[64]`."""
    return " ".join([spec["architecture"]] + [f"{k}={json.dumps(v)}" for k, v in spec.items() if k != "architecture"])


def latency_words(latency: dict) -> str:
    """Latencies in a line, or "not timed"."""
    if all(v is None for v in latency.values()):
        return "not timed"
    return ", ".join(f"{k} {v:.4g} ms" for k, v in latency.items())
