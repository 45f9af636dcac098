"""The job's teacher stage: code-bearing teachers (TorchScript, .pt2) run only in the sandbox child.

A TorchScript or torch.export teacher can carry code (it can read any file it can name, loop or allocate
without bound), so the worker never opens one in its own process. `sandboxed_teacher` gives the runner
what to pass to distill() as `precomputed`: a provider the engine calls (only when its teacher-outputs
cache misses) with the examples it needs; the provider writes them as .npy files into the attempt's
folder and computes the logits with worker.sandbox.compute_teacher_outputs_sandboxed. A sandbox failure
becomes an EngineError with the sandbox's code and message, so the job fails with a clear error.

With online augmentation the teacher must run on every augmented batch, in the training process: the
teacher is first run in the sandbox on a few rows (so a teacher that breaks on them, hangs or allocates
without bound fails there), then loaded in-process, and an info event says so.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from worker.engine import DatasetSpec, DistillConfig, EngineError, ProgressEvent
from worker.sandbox import SandboxError, SandboxLimits, compute_teacher_outputs_sandboxed, limits_from_env

logger = logging.getLogger(__name__)

SANDBOXED_FORMATS = ("torchscript", "pt2")  # ONNX runs in onnxruntime, which executes no user code
CHECK_ROWS = 8  # rows the augmentation check runs the teacher on


def sandbox_limits(config: DistillConfig) -> SandboxLimits:
    """Limits from the environment; the GPU when there is one and the job does not ask for the CPU."""
    import torch

    gpu = torch.cuda.is_available() and not (config.device or "").startswith("cpu")
    return limits_from_env(SandboxLimits(gpu=gpu))


def needs_sandbox(teacher_path: str) -> bool:
    """Whether the teacher file is a code-bearing format (sniffed by content, the file is not opened)."""
    from worker.engine.teachers import sniff_format

    return sniff_format(teacher_path) in SANDBOXED_FORMATS


def run_in_sandbox(
    teacher_path: str,
    arrays: dict[str, np.ndarray],
    folder: Path,
    limits: SandboxLimits,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """{"outputs": {name: logits array}, "info": {...}}; raises EngineError(sandbox code, message)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    paths = {}
    for name, x in arrays.items():
        paths[name] = folder / f"input-{name}.npy"  # inside the child's folder: no bind mount needed
        np.save(paths[name], np.ascontiguousarray(x), allow_pickle=False)
    try:
        result = compute_teacher_outputs_sandboxed(teacher_path, paths, folder, limits, should_stop=should_stop)
    except SandboxError as exc:
        # A stop asked by the job (cancel, shutdown) is the engine's own "cancelled", handled by the runner.
        raise EngineError("cancelled" if exc.code == "stopped" else exc.code, exc.message) from exc
    outputs = {name: np.load(path, allow_pickle=False) for name, path in result["outputs"].items()}
    for path in paths.values():
        path.unlink(missing_ok=True)  # the examples are the job's data; the logits are small
    return {"outputs": outputs, "info": result["info"]}


def sandboxed_teacher(
    teacher_path: str,
    train: DatasetSpec,
    config: DistillConfig,
    attempt_dir: Path,
    emit: Callable[[ProgressEvent], None],
    should_stop: Callable[[], bool] | None = None,
) -> Callable[[np.ndarray, np.ndarray | None], dict] | None:
    """What run() passes to distill() as `precomputed`; None when the teacher may run in-process.

    None for ONNX teachers, and for augmenting jobs once the sandboxed check on a few rows has passed.
    """
    if not needs_sandbox(teacher_path):
        return None
    limits = sandbox_limits(config)
    folder = Path(attempt_dir) / "teacher"
    if config.augmenting:
        from worker.engine.data import load_dataset

        rows = load_dataset(train).x[:CHECK_ROWS]
        run_in_sandbox(teacher_path, {"check": rows}, folder, limits, should_stop)
        emit(
            ProgressEvent(
                "info",
                f"augmentation is on: the teacher passed a sandboxed check on {len(rows)} examples and now "
                "runs in the worker process, on every augmented batch",
                {"teacher_in_process": True, "reason": "augmentation"},
            )
        )
        return None

    def provider(train_x: np.ndarray, eval_x: np.ndarray | None) -> dict:
        arrays = {"train": train_x} if eval_x is None else {"train": train_x, "eval": eval_x}
        emit(
            ProgressEvent(
                "info",
                "running the teacher in the sandbox (no network, only the job's folder visible)",
                {"sandbox": True, "gpu": limits.gpu},
            )
        )
        result = run_in_sandbox(teacher_path, arrays, folder, limits, should_stop)
        outputs = result["outputs"]
        return {"train": outputs["train"], "eval": outputs.get("eval"), "info": result["info"]}

    return provider
