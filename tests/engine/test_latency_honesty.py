"""Latency and size figures compare like with like (issue 9 point 4): same job, same input shape, same device kind
and runtime, each figure labelled with its device, runtime and threads; ONNX counts leave out buffers."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from tests.support import digits
from worker.engine import DistillConfig, distill
from worker.engine.teachers import load_teacher

STUDENT = {"architecture": "mlp", "hidden_sizes": [16]}


def _config(**overrides) -> DistillConfig:
    return DistillConfig.from_dict({"student": STUDENT, "epochs": 1, "recipe": "plain", **overrides})


def _same_setup(report: dict, runtime: str) -> None:
    teacher, student = report["teacher"]["latency"], report["student"]["latency"]
    assert teacher["runtime"] == student["runtime"] == runtime, (teacher, student)
    assert teacher["device"] == student["device"] and teacher["device"].startswith("cpu")
    assert teacher["threads"] == student["threads"] == torch.get_num_threads()
    assert teacher["input_shape"] == student["input_shape"] == [64]


def test_onnx_teacher_and_its_student_are_timed_in_onnxruntime(tmp_path, train_spec):
    report = distill(str(digits.export_teacher_onnx()), train_spec, None, _config(), str(tmp_path))
    _same_setup(report, "onnxruntime")
    assert set(report["speedup"]) == {"batch_1", "batch_64"}


def test_torchscript_teacher_and_student_are_timed_in_torchscript(tmp_path, teacher_path, train_spec):
    report = distill(teacher_path, train_spec, None, _config(export=["torchscript", "onnx", "int8"]), str(tmp_path))
    _same_setup(report, "torchscript")
    int8 = report["int8"]["latency"]
    assert int8["runtime"] == "onnxruntime" and int8["threads"] == torch.get_num_threads()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA worker")
def test_a_cuda_worker_reports_cpu_and_gpu_latency(tmp_path, teacher_path, train_spec):
    report = distill(teacher_path, train_spec, None, _config(device="cuda"), str(tmp_path))
    for side in ("teacher", "student"):
        assert set(report[side]["latency_ms"]) == {"batch_1", "batch_64"}
        assert report[side]["latency"]["device"].startswith("cpu")
        assert set(report[side]["latency_ms_cuda"]) == {"batch_1", "batch_64"}
        assert report[side]["latency_cuda"]["device"].startswith("cuda:")
    assert set(report["speedup_cuda"]) == {"batch_1", "batch_64"}


class _WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x).reshape(x.shape[0], -1)


def test_onnx_parameter_count_leaves_out_buffers_like_torch(tmp_path):
    model = _WithBatchNorm().eval()
    model.net[1].running_mean.uniform_()  # non-trivial statistics, so the exporter keeps them
    path = tmp_path / "bn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 8),), str(path), dynamo=False, input_names=["x"])
    torch_count = sum(p.numel() for p in model.parameters())
    assert load_teacher(str(path)).num_parameters == torch_count
