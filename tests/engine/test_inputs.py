"""Bad inputs fail with the EngineError code and a message a user can act on."""

import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from tests.support import digits
from worker.engine import DatasetSpec, DistillConfig, EngineError, distill, inspect_dataset, inspect_model


def error_of(call, *args, **kwargs) -> EngineError:
    with pytest.raises(EngineError) as info:
        call(*args, **kwargs)
    return info.value


def test_npz_without_x_is_invalid_dataset(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.zeros((3, 2)))
    err = error_of(inspect_dataset, DatasetSpec(str(tmp_path / "d.npz"), "npz"))
    assert err.code == "invalid_dataset" and "'x'" in err.message and "features" in err.message


def test_pickled_object_npz_is_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}, None], dtype=object))
    err = error_of(inspect_dataset, DatasetSpec(str(tmp_path / "d.npz"), "npz"))
    assert err.code == "invalid_dataset" and "pickle" in err.message


def test_csv_missing_named_label_column_names_the_columns(tmp_path):
    x, y, _, _ = digits.digits_arrays()
    path = digits.write_csv(tmp_path / "d.csv", x[:5, :3], y[:5], label_column="digit")
    err = error_of(inspect_dataset, DatasetSpec(str(path), "csv", label_column="target"))
    assert err.code == "invalid_dataset" and "'target'" in err.message and "digit" in err.message


def test_csv_with_default_label_column_is_read(tmp_path):
    x, y, _, _ = digits.digits_arrays()
    info = inspect_dataset(DatasetSpec(str(digits.write_csv(tmp_path / "d.csv", x[:20], y[:20])), "csv"))
    assert info["rows"] == 20 and info["input"] == {"shape": [64], "dtype": "float32"} and info["has_labels"]
    assert info["columns"][-1] == "label"


def test_string_labels_follow_given_classes_else_sorted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,dog\n3,4,cat\n5,6,emu\n")
    assert inspect_dataset(DatasetSpec(str(path), "csv"))["classes"] == ["cat", "dog", "emu"]
    given = inspect_dataset(DatasetSpec(str(path), "csv", classes=["emu", "dog", "cat"]))
    assert given["classes"] == ["emu", "dog", "cat"] and given["num_classes"] == 3


def test_torch_save_archive_is_refused_naming_supported_formats(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "m.pt")
    err = error_of(inspect_model, str(tmp_path / "m.pt"))
    assert err.code == "invalid_model" and "torch.save" in err.message and "TorchScript" in err.message
    assert "data.pkl" in zipfile.ZipFile(tmp_path / "m.pt").namelist()[0]


def test_raw_pickle_is_refused(tmp_path):
    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    err = error_of(inspect_model, str(tmp_path / "m.pkl"))
    assert err.code == "invalid_model" and "pickle" in err.message


def test_inspect_model_describes_torchscript_and_onnx(teacher_path):
    assert inspect_model(teacher_path)["format"] == "torchscript"
    info = inspect_model(str(digits.export_teacher_onnx()))
    assert info == {
        "format": "onnx",
        "num_parameters": 301066,
        "input": {"shape": [64], "dtype": "float32"},
        "num_classes": 10,
    }


def test_teacher_data_shape_mismatch_is_input_mismatch(tmp_path, teacher_path):
    x, y, _, _ = digits.digits_arrays()
    spec = DatasetSpec(str(digits.write_npz(tmp_path / "d.npz", x[:50, :32], y[:50])), "npz")
    err = error_of(distill, teacher_path, spec, None, DistillConfig(epochs=1), str(tmp_path / "out"))
    assert err.code == "input_mismatch" and "[32]" in err.message and "float32" in err.message


def test_more_labels_than_teacher_classes_is_class_mismatch(tmp_path, teacher_path):
    x, y, _, _ = digits.digits_arrays()
    y = y[:50].copy()
    y[0] = 11
    spec = DatasetSpec(str(digits.write_npz(tmp_path / "d.npz", x[:50], y)), "npz")
    err = error_of(distill, teacher_path, spec, None, DistillConfig(epochs=1), str(tmp_path / "out"))
    assert err.code == "class_mismatch"
    assert err.message == "teacher outputs 10 classes but the dataset has 12 labels"


@pytest.mark.parametrize(
    "settings",
    [
        {"epochs": 0},
        {"alpha": 1.5},
        {"loss": "l1"},
        {"export": ["zip"]},
        {"temperature": 0},
        {"learning_rate": "fast"},
        {"unknown": 1},
    ],
)
def test_impossible_config_is_invalid_config(settings):
    assert error_of(DistillConfig.from_dict, settings).code == "invalid_config"


@pytest.mark.parametrize(
    "student",
    [
        {"architecture": "resnet"},
        {"architecture": "mlp", "hidden_sizes": [0]},
        {"architecture": "cnn", "channels": [8]},
        {"architecture": "mlp", "depth": 3},
    ],
)
def test_bad_student_is_invalid_student(tmp_path, teacher_path, train_spec, student):
    config = DistillConfig(student=student, epochs=1)
    err = error_of(distill, teacher_path, train_spec, None, config, str(tmp_path / "out"))
    assert err.code == "invalid_student"
