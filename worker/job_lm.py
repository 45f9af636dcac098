"""The job child's causal-LM path: a request whose `task` is "causal_lm" (the worker takes it from the teacher's
validated info, never from the job's own settings) runs worker/engine/lm_distill.py's distill_lm.

The settings are the job's `lm` object (contract/wire/lm.py), the student its `student` (a smaller copy of the
teacher's family, or an uploaded hf causal LM). The engine's report gets the keys every job's report has
(contract/wire/report.py: device, train_seconds, eval_examples, classes, compression_ratio, speedup, history),
so that the API, the dashboard and the CLI read it as they read a classifier's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from worker.lm_metrics import lm_metrics

STOP_SAVE_WAIT_S = 60.0  # the longest a stop waits for a checkpoint being written (the supervisor's grace is longer)


def lm_config(request: dict):
    """The engine's LMConfig from the request's config (its `lm` settings, student, export and device)."""
    from contract.wire import LMOptions
    from worker.engine.lm_distill import LMConfig
    from worker.engine.lm_train import LMTrainSettings

    config = request.get("config") or {}
    options = LMOptions.model_validate(config.get("lm") or {})
    spec = dict(config.get("student") or {"architecture": "hf"})
    student = {"path": spec["model_path"]} if spec.get("model_path") else spec
    fields = options.model_dump(exclude={"method", *options.train_fields()})
    return LMConfig(
        method=options.method,
        student=student,
        train=LMTrainSettings(**options.train_fields()),
        export=True,  # the student's Hugging Face folder is what an LM job delivers
        onnx="onnx" in (config.get("export") or []),
        device=lm_device(request),
        checkpoint_dir=request.get("checkpoint_dir"),  # both trainings' epochs: a handed-back job resumes there
        **fields,
    )


def lm_device(request: dict) -> str:
    """CUDA when the job's process sees a GPU (as a classifier job's device), else the CPU; a job given GPUs that
    it cannot see fails with a message naming the worker's declaration, not deep inside torch."""
    import torch

    from worker.engine.errors import EngineError

    if torch.cuda.is_available():
        return "cuda"
    if request.get("gpus"):
        raise EngineError(
            "invalid_config",
            f"the worker gave this job {request['gpus']} GPU(s) but CUDA is not available in the job's process: "
            "check the worker's DISTILLERY_WORKER_GPUS, its CUDA_VISIBLE_DEVICES and the GPU driver",
        )
    return "cpu"


def watch_stop(should_stop: Callable[[], bool], emit: Callable[[dict], None], poll_s: float = 0.2) -> None:
    """Answer `stopped` and end the process once the parent asks: distill_lm has no stop check of its own. Its
    trainings checkpoint every epoch (a handed-back job resumes from there), but there is no student to salvage
    for a cancel (a daemon thread; the answer is the process's last line)."""

    def watch() -> None:
        while not should_stop():
            time.sleep(poll_s)
        from worker.engine.lm_resume import SAVING

        SAVING.acquire(timeout=STOP_SAVE_WAIT_S)  # a checkpoint being written is finished first; never released
        emit({"stopped": {"reason": getattr(should_stop, "reason", None) or "stop", "salvaged": False}})
        os._exit(0)

    threading.Thread(target=watch, name="lm-stop", daemon=True).start()


def run_lm(request: dict, emit: Callable[[dict], None], should_stop: Callable[[], bool] | None = None) -> dict:
    """Run one causal-LM job; its report, shaped as every job's report (EngineError when the job cannot run)."""
    from worker.engine.errors import EngineError
    from worker.engine.lm_distill import distill_lm

    if should_stop is not None:
        watch_stop(should_stop, emit)

    def phase(name: str, message: str) -> None:
        emit({"event": {"type": "phase", "message": message, "data": {"phase": name}}})

    def progress(event) -> None:  # the engine's preflight, estimate and per-epoch events, as they happen
        emit({"event": {"type": event.type, "message": event.message, "data": event.data}})

    if not request.get("eval"):
        raise EngineError("invalid_config", "a causal-LM job needs an eval dataset with completions (eval_dataset_id)")
    config = lm_config(request)
    phase("training", f"distilling the language model ({config.method}) beside its SFT baseline")
    started = time.monotonic()
    report = distill_lm(
        request["teacher"], request["train"]["path"], request["eval"]["path"], config, request["out_dir"],
        request["cache_dir"], progress=progress,
    )  # fmt: skip
    seconds = time.monotonic() - started
    phase("exporting", "the student is exported as a Hugging Face folder")
    metrics = lm_metrics(report)
    message = "held-out perplexity: " + ", ".join(
        f"{name} {metrics[f'{name}_perplexity']:.3f}" for name in ("teacher", "student", "baseline")
        if isinstance(metrics[f"{name}_perplexity"], float)
    )  # fmt: skip
    emit({"event": {"type": "metrics", "message": message, "data": metrics}})
    return as_job_report(report, config.device, seconds, _eval_rows(request["eval"]))


def as_job_report(report: dict, device: str, seconds: float, eval_examples: int) -> dict:
    """The engine's LM report with the keys every job's report has; the LM's own figures are kept as they are."""
    teacher, student = report.get("teacher") or {}, report.get("student") or {}
    t_params, s_params = teacher.get("num_parameters"), student.get("num_parameters")
    ratio = t_params / s_params if isinstance(t_params, int) and isinstance(s_params, int) and s_params else None
    exports = report.get("exports") or {}
    return {
        **report,
        "device": device,
        "train_seconds": round(seconds, 3),
        "eval_examples": eval_examples,
        "classes": [],
        "compression_ratio": ratio,
        "speedup": {},
        "history": [],
        "exports": {k: v for k, v in exports.items() if k in ("hf", "onnx", "onnx_check", "onnx_error")},
    }


def _eval_rows(spec: dict) -> int:
    """How many held-out rows the figures were measured on: those of the eval dataset with a completion."""
    from worker.engine.config import DatasetSpec
    from worker.engine.lm_inspect import describe_prompts

    return int(describe_prompts(DatasetSpec(path=spec["path"], format="jsonl"))["with_completion"])
