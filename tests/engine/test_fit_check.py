"""A teacher that does not fit the data fails with what it expects, what the data has and the likely fix,
never with the framework's own message (issue 11 point 1)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from tests.engine.test_inputs import error_of
from tests.support import digits
from worker.engine import DatasetSpec, DistillConfig, distill

TORCH_WORDS = ("mat1", "mat2", "RuntimeError", "Traceback", "scalar type", "cannot be multiplied")


def _script_teacher(path, model: nn.Module, example: torch.Tensor) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model.eval(), example), str(path))
    return str(path)


def _csv(path, rows: int, features: int, label_column: str | None) -> str:
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(features)] + ([label_column] if label_column else [])
    lines = [",".join(names)]
    for _ in range(rows):
        values = [f"{v:.3f}" for v in rng.normal(size=features)]
        lines.append(",".join(values + ([str(int(rng.integers(3)))] if label_column else [])))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _assert_no_torch_text(message: str) -> None:
    assert not any(word in message for word in TORCH_WORDS), message


def test_label_column_read_as_a_feature_names_the_fix(tmp_path):
    teacher = _script_teacher(tmp_path / "t.pt", nn.Sequential(nn.Linear(20, 8), nn.Linear(8, 3)), torch.zeros(2, 20))
    data = DatasetSpec(_csv(tmp_path / "d.csv", 30, 20, "target"), "csv")
    err = error_of(distill, teacher, data, None, DistillConfig(epochs=1), str(tmp_path / "out"))
    assert err.code == "input_mismatch", err.message
    assert "expects 20 features" in err.message and "21" in err.message, err.message
    assert "label_column" in err.message and "target" in err.message, err.message
    _assert_no_torch_text(err.message)


def test_an_extra_feature_column_is_named_as_extra(tmp_path):
    teacher = _script_teacher(tmp_path / "t.pt", nn.Linear(5, 3), torch.zeros(2, 5))
    data = DatasetSpec(_csv(tmp_path / "d.csv", 30, 7, "label"), "csv")
    err = error_of(distill, teacher, data, None, DistillConfig(epochs=1), str(tmp_path / "out"))
    assert err.code == "input_mismatch" and "expects 5 features" in err.message and "7" in err.message
    assert "2 extra column" in err.message, err.message
    _assert_no_torch_text(err.message)


def test_float_features_into_a_token_teacher_say_so(tmp_path):
    model = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(4 * 6, 3))
    teacher = _script_teacher(tmp_path / "t.pt", model, torch.zeros(2, 6, dtype=torch.long))
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    data = DatasetSpec(str(digits.write_npz(tmp_path / "d.npz", x, np.zeros(20, dtype=np.int64))), "npz")
    err = error_of(distill, teacher, data, None, DistillConfig(epochs=1), str(tmp_path / "out"))
    assert err.code == "input_mismatch" and "token ids" in err.message, err.message
    _assert_no_torch_text(err.message)


def test_too_few_features_for_the_digits_teacher_keeps_the_shape(tmp_path, teacher_path):
    x, y, _, _ = digits.digits_arrays()
    spec = DatasetSpec(str(digits.write_npz(tmp_path / "d.npz", x[:50, :32], y[:50])), "npz")
    err = error_of(distill, teacher_path, spec, None, DistillConfig(epochs=1), str(tmp_path / "out"))
    assert err.code == "input_mismatch" and "expects 64 features" in err.message and "[32]" in err.message
    _assert_no_torch_text(err.message)
