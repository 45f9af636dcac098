"""The budget search's request: `{"search": {"architectures": [...], "max_parameters": ..., "max_latency_ms": ...}}`.

Instead of naming a student, a job may ask the engine to choose one: candidates of the listed architectures are
sized by a multi-objective search, each is measured (parameters, latency on the target device), those that fit
the budget are trained briefly, and the most accurate that fits is trained in full. Plain Python: the API, the
SDK and the engine all check a request with `check_student_search`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.bounds import Bounds, as_integer, as_number
from contract.students import ARCHITECTURES

LATENCY_BATCHES: tuple[str, ...] = ("batch_1", "batch_64")  # the report's latency keys
TARGET_DEVICES: tuple[str, ...] = ("cpu", "cuda")
TRIALS = Bounds(3, 40)
DEFAULT_TRIALS = 8
PARAMETERS = Bounds(1, 10**10)
LATENCY_MS = Bounds(0, 60_000, low_open=True)
SEARCH_KEYS = ("architectures", "max_parameters", "max_latency_ms", "trials", "device")


def check_student_search(search: Any) -> dict:
    """The search request with its defaults filled in; ValueError, saying what to fix, when it cannot work."""
    if not isinstance(search, Mapping):
        raise ValueError('search must be an object such as {"architectures": ["mlp"], "max_parameters": 50000}')
    unknown = sorted(str(k) for k in search if k not in SEARCH_KEYS)
    if unknown:
        raise ValueError(f"unknown search setting(s) {unknown}; known: {list(SEARCH_KEYS)}")
    architectures = search.get("architectures")
    searchable = [a for a in ARCHITECTURES if a != "hf"]  # an hf student is sized by hand for now
    if not isinstance(architectures, list) or not architectures or not all(a in searchable for a in architectures):
        raise ValueError(f"search.architectures must be a non-empty list drawn from {searchable}")
    max_parameters = search.get("max_parameters")
    if max_parameters is not None and (as_integer(max_parameters) is None or not PARAMETERS.contains(max_parameters)):
        raise ValueError(f"search.max_parameters must be an integer in {PARAMETERS}")
    latency = search.get("max_latency_ms")
    if latency is not None:
        if not isinstance(latency, Mapping) or not latency or any(k not in LATENCY_BATCHES for k in latency):
            raise ValueError(f"search.max_latency_ms must map one or more of {list(LATENCY_BATCHES)} to milliseconds")
        for key, value in latency.items():
            number = as_number(value)
            if number is None or not LATENCY_MS.contains(number):
                raise ValueError(f"search.max_latency_ms.{key} must be a number of milliseconds in {LATENCY_MS}")
    if max_parameters is None and latency is None:
        raise ValueError("search needs a budget: give max_parameters, max_latency_ms or both")
    trials = search.get("trials", DEFAULT_TRIALS)
    if as_integer(trials) is None or not TRIALS.contains(trials):
        raise ValueError(f"search.trials must be an integer in {TRIALS}")
    device = search.get("device", "cpu")
    if device not in TARGET_DEVICES:
        raise ValueError(f"search.device (where latency is measured) must be one of {list(TARGET_DEVICES)}")
    return {
        "architectures": list(dict.fromkeys(architectures)),
        "max_parameters": max_parameters,
        "max_latency_ms": None if latency is None else {k: float(v) for k, v in latency.items()},
        "trials": trials,
        "device": device,
    }
