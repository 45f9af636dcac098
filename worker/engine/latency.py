"""Latency of teacher and student, measured in the same job, on the same input, device kind and runtime.

Each figure travels with what it was measured on ({"device", "runtime", "threads", "input_shape"}), so a
speedup compares like with like: an ONNX teacher runs in onnxruntime and so does its student (exported to
ONNX for the measurement); a TorchScript or torch.export teacher runs in torch, and the student in TorchScript.
On a CUDA worker both are also measured on the GPU.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

BATCHES = {"batch_1": 1, "batch_64": 64}
_TORCH_RUNTIMES = {"torchscript": "torchscript", "pt2": "torch.export", "hf": "transformers (eager)"}


@torch.no_grad()
def latency_ms(
    run: Callable[[torch.Tensor], object],
    example: torch.Tensor,
    batch: int,
    warmup: int = 3,
    runs: int = 15,
    sync: Callable[[], None] | None = None,
) -> float:
    """Median wall time in milliseconds of `run` on a batch of `batch` rows, after warmup.

    `sync` waits for queued GPU work, so that a CUDA figure is the kernels' time, not the launch's.
    """
    reps = max(1, -(-batch // len(example)))
    x = example.repeat(reps, *([1] * (example.ndim - 1)))[:batch].contiguous()
    wait = sync or (lambda: None)
    for _ in range(warmup):
        run(x)
    wait()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        wait()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 4)


def latencies(run: Callable[[torch.Tensor], object], example: torch.Tensor, sync=None) -> dict:
    """Latency at batch 1 and batch 64."""
    return {name: latency_ms(run, example, rows, sync=sync) for name, rows in BATCHES.items()}


def setup(device: str, runtime: str, threads: int | None, example: torch.Tensor) -> dict:
    """What a latency figure was measured on."""
    return {"device": device, "runtime": runtime, "threads": threads, "input_shape": list(example.shape[1:])}


def cpu_device_name() -> str:
    """ "cpu" and the processor's name when the platform says it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"cpu {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return "cpu"


def cuda_device_name(device: str) -> str:
    """ "cuda:N <GPU name>"."""
    index = torch.device(device).index or 0
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


def ort_session(path: str, threads: int, providers: list[str] | None = None):
    """An onnxruntime session with the same intra-op thread count as torch, so the runtimes compare fairly."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])


def ort_runner(session) -> Callable[[torch.Tensor], object]:
    """`run(x)` for an onnxruntime session, feeding the input in the session's dtype."""
    name = session.get_inputs()[0].name
    dtype = {"tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(
        session.get_inputs()[0].type, None
    )

    def run(x: torch.Tensor):
        array = x.numpy()
        return session.run(None, {name: array if dtype is None else array.astype(dtype, copy=False)})

    return run


def measure_pair(teacher, student: nn.Module, student_path: str, example: torch.Tensor, device: str) -> dict:
    """{"teacher": {...}, "student": {...}}: latency_ms and latency (its setup) per side, plus the CUDA figures.

    `student` is the trained module on the CPU; `student_path` the exported TorchScript file.
    """
    threads = torch.get_num_threads()
    cpu = cpu_device_name()
    if teacher.format == "onnx":
        teacher_run = ort_runner(ort_session(teacher.path, threads))
        student_run, student_runtime = _student_in_onnxruntime(student, example, threads)
        teacher_runtime = "onnxruntime"
    else:
        teacher_run = _torch_teacher_on(teacher, "cpu")
        teacher_runtime = _TORCH_RUNTIMES.get(teacher.format, "torch.export")
        student_run, student_runtime = _torchscript_on(student_path, "cpu"), "torchscript"
    out = {
        "teacher": {
            "latency_ms": latencies(teacher_run, example),
            "latency": setup(cpu, teacher_runtime, threads, example),
        },
        "student": {
            "latency_ms": latencies(student_run, example),
            "latency": setup(cpu, student_runtime, threads, example),
        },
    }
    if device.startswith("cuda"):
        _add_cuda(out, teacher, student_path, example, device)
    return out


def _add_cuda(out: dict, teacher, student_path: str, example: torch.Tensor, device: str) -> None:
    """GPU figures beside the CPU ones; the teacher's is null, with the reason, when it cannot run there."""
    name = cuda_device_name(device)
    sync = torch.cuda.synchronize
    student_run = _torchscript_on(student_path, device)
    out["student"]["latency_ms_cuda"] = latencies(lambda x: student_run(x.to(device)), example, sync)
    out["student"]["latency_cuda"] = setup(name, "torchscript", None, example)
    if teacher.format == "onnx":
        out["teacher"]["latency_ms_cuda"] = None
        out["teacher"]["latency_cuda"] = {**setup(name, "onnxruntime", None, example), "skipped": _ONNX_GPU}
        return
    teacher_run = _torch_teacher_on(teacher, device)
    runtime = _TORCH_RUNTIMES.get(teacher.format, "torch.export")
    out["teacher"]["latency_ms_cuda"] = latencies(lambda x: teacher_run(x.to(device)), example, sync)
    out["teacher"]["latency_cuda"] = setup(name, runtime, None, example)


_ONNX_GPU = "the ONNX teacher is timed in onnxruntime, whose CUDA provider this worker does not have"


def _torch_teacher_on(teacher, device: str) -> Callable[[torch.Tensor], object]:
    from worker.engine.teachers import load_teacher

    return teacher if teacher.device == device else load_teacher(teacher.path, device)


def _torchscript_on(path: str, device: str) -> Callable[[torch.Tensor], object]:
    from worker.engine.export import quiet

    with quiet():
        module = torch.jit.load(path, map_location=device)
    return module.eval()


def _student_in_onnxruntime(student: nn.Module, example: torch.Tensor, threads: int):
    """(run, "onnxruntime") for the student exported to ONNX, else (TorchScript run, "torchscript")."""
    from worker.engine.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = export_onnx(student, example, tmp)
            session = ort_session(path, threads)  # reads the file now; the folder may go
        except Exception as exc:  # labelled instead: the report says the runtimes differ
            logger.warning("cannot time the student in onnxruntime (%s); timing it in eager torch", exc)
            return student.eval(), "torch (eager)"
    return ort_runner(session), "onnxruntime"


def ratios(teacher: dict | None, student: dict | None) -> dict | None:
    """teacher / student per batch size, or None when either side was not measured."""
    if not teacher or not student:
        return None
    return {k: _ratio(teacher.get(k), student.get(k)) for k in BATCHES}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)
