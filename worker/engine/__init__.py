"""Distillery's distillation engine: a plain library (no web, queue or database imports)."""

from worker.engine.config import DatasetSpec, DistillConfig, ProgressEvent
from worker.engine.data import inspect_dataset
from worker.engine.distill import distill
from worker.engine.errors import EngineError
from worker.engine.teachers import inspect_model

__all__ = [
    "EngineError",
    "DatasetSpec",
    "DistillConfig",
    "ProgressEvent",
    "inspect_model",
    "inspect_dataset",
    "distill",
]
