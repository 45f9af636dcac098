"""End-to-end distillation on digits: quality, report, artifacts, baseline, ONNX teacher, cache."""

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from tests.support import digits
from worker.engine import DatasetSpec, DistillConfig, distill
from worker.engine import teacher_outputs as teacher_outputs_module
from worker.engine.report import REPORT_KEYS
from worker.engine.students import build_student

SMALL_STUDENT = {"architecture": "mlp", "hidden_sizes": [32]}
ALL_EXPORTS = ["torchscript", "safetensors", "onnx", "pt2", "int8"]


def config(**overrides) -> DistillConfig:
    settings = {
        "recipe": "plain",
        "student": SMALL_STUDENT,
        "epochs": 30,
        "learning_rate": 0.005,
        "batch_size": 64,
        **overrides,
    }
    return DistillConfig.from_dict(settings)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, teacher_path, train_spec, test_spec):
    out = tmp_path_factory.mktemp("full")
    events = []
    report = distill(
        teacher_path,
        train_spec,
        test_spec,
        config(export=ALL_EXPORTS, baseline=True),
        str(out),
        progress=events.append,
    )
    return report, out, events


def test_student_is_5x_smaller_and_reaches_95_percent_of_teacher_accuracy(full_run):
    report, _, _ = full_run
    assert report["teacher"]["num_parameters"] >= 5 * report["student"]["num_parameters"]
    assert report["compression_ratio"] >= 5
    assert report["student"]["accuracy"] >= 0.95 * report["teacher"]["accuracy"]
    assert report["teacher"]["accuracy"] >= 0.97


def test_report_has_the_design_keys_and_matches_report_json(full_run):
    report, out, _ = full_run
    assert set(REPORT_KEYS) <= set(report)
    assert json.loads((out / "report.json").read_text()) == report
    assert report["eval_examples"] == 450 and report["classes"] == [str(i) for i in range(10)]
    on_gpu = torch.cuda.is_available()  # the engine picks CUDA when there is one (the GPU check runs this file)
    assert report["device"].startswith("cuda") if on_gpu else report["device"] == "cpu", report["device"]
    assert report["teacher_outputs_cache"] is None
    for side in ("teacher", "student"):
        assert set(report[side]["latency_ms"]) == {"batch_1", "batch_64"}
        assert report[side]["size_bytes"] > 0
    assert set(report["history"][0]) == {"epoch", "train_loss", "validation_accuracy", "validation_agreement"}
    assert len(report["history"]) == 30 and 1 <= report["best_epoch"] <= 30


def test_report_accuracy_is_reproduced_from_the_downloaded_student(full_run):
    report, out, _ = full_run
    _, _, x_test, y_test = digits.digits_arrays()
    student = torch.jit.load(str(out / "student.pt"), map_location="cpu").eval()
    with torch.no_grad():
        pred = student(torch.from_numpy(x_test)).argmax(1).numpy()
    assert float(np.mean(pred == y_test)) == report["student"]["accuracy"]


def test_all_artifacts_and_manifest_are_written(full_run):
    report, out, _ = full_run
    for name in (
        "student.pt",
        "student.safetensors",
        "student.json",
        "student.onnx",
        "student.pt2",
        "student.int8.onnx",
        "manifest.json",
        "report.json",
    ):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == report["classes"] and manifest["input"] == {
        "shape": [64],
        "dtype": "float32",
    }
    assert len(manifest["teacher_sha256"]) == 64 and len(manifest["dataset_sha256"]["train"]) == 64
    assert manifest["config"]["student"] == SMALL_STUDENT
    assert {"torch", "numpy", "onnxruntime", "python"} <= set(manifest["versions"])


def test_safetensors_and_json_rebuild_the_same_student(full_run):
    _, out, _ = full_run
    spec = json.loads((out / "student.json").read_text())
    model = build_student(spec["student"], spec["input"]["shape"], spec["input"]["dtype"], spec["num_classes"])
    model.load_state_dict(load_file(str(out / "student.safetensors")))
    x = torch.from_numpy(digits.digits_arrays()[2][:16])
    scripted = torch.jit.load(str(out / "student.pt"))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), scripted(x))


def test_onnx_export_matches_torch_within_1e_4(full_run):
    report, out, _ = full_run
    assert report["onnx_max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    x = digits.digits_arrays()[2][:5]
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (5, 10)  # dynamic batch


def test_int8_accuracy_within_3_points_of_float(full_run):
    report, _, _ = full_run
    int8 = report["int8"]
    assert abs(report["student"]["accuracy"] - int8["accuracy"]) <= 0.03
    assert int8["size_bytes"] > 0 and set(int8["latency_ms"]) == {"batch_1", "batch_64"}


def test_pt2_export_loads_and_runs(full_run):
    _, out, _ = full_run
    program = torch.export.load(str(out / "student.pt2"))
    assert program.module()(torch.zeros(3, 64)).shape == (3, 10)


def test_baseline_reports_both_accuracies(full_run):
    report, _, events = full_run
    assert 0 < report["baseline"]["accuracy"] <= 1 and 0 < report["baseline"]["agreement"] <= 1
    phases = [e.data["phase"] for e in events if e.type == "phase"]
    assert phases == ["validating", "teacher_outputs", "training", "evaluating", "exporting"]
    assert any(e.type == "metrics" for e in events) and any(e.type == "progress" for e in events)


def test_unlabeled_training_data_still_distils_well(tmp_path, teacher_path, data_dir, test_spec):
    events = []
    unlabeled = DatasetSpec(str(data_dir / "train_unlabeled.npz"), "npz")
    report = distill(teacher_path, unlabeled, test_spec, config(baseline=True), str(tmp_path), progress=events.append)
    assert report["student"]["accuracy"] >= 0.95 * report["teacher"]["accuracy"]
    assert report["baseline"] is None
    warnings = [e.message for e in events if e.type == "warning"]
    assert any("no labels" in w for w in warnings) and any("baseline" in w for w in warnings)
    assert (
        report["history"][0]["validation_accuracy"] is None and report["history"][0]["validation_agreement"] is not None
    )


def test_onnx_teacher_distils_and_holds_out_eval_from_train(tmp_path, train_spec):
    onnx_teacher = str(digits.export_teacher_onnx())
    report = distill(onnx_teacher, train_spec, None, config(epochs=20, loss="dkd"), str(tmp_path))
    assert report["eval_examples"] == round(0.2 * 1347)
    assert report["student"]["accuracy"] >= 0.9 * report["teacher"]["accuracy"]


def test_second_run_with_the_same_cache_dir_does_not_call_the_teacher(
    tmp_path, monkeypatch, teacher_path, train_spec, test_spec
):
    calls = []
    real = teacher_outputs_module.compute_teacher_outputs
    monkeypatch.setattr(
        teacher_outputs_module,
        "compute_teacher_outputs",
        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs),
    )
    cache = str(tmp_path / "cache")
    first = distill(teacher_path, train_spec, test_spec, config(epochs=1), str(tmp_path / "a"), teacher_cache_dir=cache)
    assert first["teacher_outputs_cache"] == "miss" and len(calls) == 2  # train and eval, once each
    second = distill(
        teacher_path, train_spec, test_spec, config(epochs=1), str(tmp_path / "b"), teacher_cache_dir=cache
    )
    assert second["teacher_outputs_cache"] == "hit" and len(calls) == 2
    assert second["teacher"]["accuracy"] == first["teacher"]["accuracy"]


def test_augmentation_runs_the_teacher_online(tmp_path, teacher_path, train_spec, test_spec):
    events = []
    report = distill(
        teacher_path,
        train_spec,
        test_spec,
        config(epochs=2, augmentation={"noise": 0.05, "mixup": 0.2}),
        str(tmp_path),
        progress=events.append,
        teacher_cache_dir=str(tmp_path / "cache"),
    )
    assert report["teacher_outputs_cache"] is None
    assert any(e.type == "info" and "augmented" in e.message for e in events)


def test_cnn_student_on_image_shaped_data(tmp_path, teacher_path):
    x, y, _, _ = digits.digits_arrays()
    # The teacher flattens its input, so [1, 8, 8] images feed both it and a CNN student.
    wrapped = tmp_path / "teacher_img.pt"
    inner = torch.jit.load(teacher_path)
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), inner)), str(wrapped))
    spec = DatasetSpec(str(digits.write_npz(tmp_path / "img.npz", x[:400].reshape(-1, 1, 8, 8), y[:400])), "npz")
    cnn = {"architecture": "cnn", "channels": [8, 16]}
    report = distill(str(wrapped), spec, None, config(student=cnn, epochs=2), str(tmp_path / "out"))
    assert report["student"]["num_parameters"] < report["teacher"]["num_parameters"]


def test_uploaded_torchscript_student_is_fine_tuned(tmp_path, teacher_path, train_spec, test_spec):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 24), torch.nn.ReLU(), torch.nn.Linear(24, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(tmp_path / "student_in.pt"))
    student = {"model_path": str(tmp_path / "student_in.pt")}
    report = distill(teacher_path, train_spec, test_spec, config(student=student, epochs=10), str(tmp_path / "out"))
    assert report["student"]["num_parameters"] == 64 * 24 + 24 + 24 * 10 + 10
    assert report["student"]["accuracy"] >= 0.9
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["student"] == {"uploaded": "student_in.pt"}  # no server paths in artifacts
