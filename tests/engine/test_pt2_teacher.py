"""torch.export (.pt2) teachers: recognised by content, inspected, and distilled from like any other."""

import numpy as np
import pytest
import torch

from tests.support import digits
from worker.engine import DistillConfig, distill, inspect_model
from worker.engine.teachers import load_teacher, sniff_format


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_pt2_teacher_is_recognised_and_inspected(tmp_path, dynamic_batch):
    path = digits.export_teacher_pt2(tmp_path, dynamic_batch=dynamic_batch)
    assert sniff_format(str(path)) == "pt2"
    info = inspect_model(str(path))
    assert info["format"] == "pt2"
    assert info["input"] == {"shape": [64], "dtype": "float32"}
    assert info["num_classes"] == 10
    assert info["num_parameters"] == sum(p.numel() for p in digits._trained_teacher().parameters())


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_pt2_teacher_gives_the_modules_logits_at_any_batch_size(tmp_path, dynamic_batch):
    teacher = load_teacher(str(digits.export_teacher_pt2(tmp_path, dynamic_batch=dynamic_batch)))
    x = torch.from_numpy(digits.digits_arrays()[2][:13])  # 13 is not a multiple of the static batch 8
    with torch.no_grad():
        expected = digits._trained_teacher()(x)
    torch.testing.assert_close(teacher(x), expected)


def test_pt2_teacher_distils_with_its_accuracy_in_the_report(tmp_path, train_spec, test_spec):
    config = DistillConfig.from_dict(
        {
            "student": {"architecture": "mlp", "hidden_sizes": [32]},
            "epochs": 8,
            "learning_rate": 0.005,
            "recipe": "plain",
        }
    )
    path = digits.export_teacher_pt2(tmp_path)
    report = distill(str(path), train_spec, test_spec, config, str(tmp_path / "out"))
    assert report["teacher"]["accuracy"] == pytest.approx(digits.teacher_accuracy(), abs=1e-9)
    assert report["teacher"]["num_parameters"] >= 5 * report["student"]["num_parameters"]
    assert report["student"]["accuracy"] >= 0.9 * report["teacher"]["accuracy"]
    assert np.isfinite(report["teacher"]["latency_ms"]["batch_64"])


def test_pt2_teacher_with_wrong_input_names_its_expected_shape(tmp_path, data_dir):
    from tests.engine.test_inputs import error_of
    from worker.engine import DatasetSpec

    x = np.zeros((20, 32), dtype=np.float32)
    bad = DatasetSpec(str(digits.write_npz(tmp_path / "bad.npz", x, np.zeros(20, dtype=np.int64))), "npz")
    path = digits.export_teacher_pt2(tmp_path)
    err = error_of(distill, str(path), bad, None, DistillConfig(epochs=1), str(tmp_path / "out"))
    assert err.code == "input_mismatch" and "[64]" in err.message
