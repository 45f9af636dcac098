"""An interrupted run resumed from its checkpoint ends with weights bitwise equal to an uninterrupted one."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.support import digits
from worker.engine import DatasetSpec, DistillConfig, EngineError, distill

ROWS = 300  # 60 eval, 24 validation, 216 train rows: 7 steps of 32 per epoch, 28 in 4 epochs
TOTAL_STEPS = 28


@pytest.fixture(scope="module")
def small_spec(tmp_path_factory):
    x, y, _, _ = digits.digits_arrays()
    path = tmp_path_factory.mktemp("resume") / "train.npz"
    return DatasetSpec(str(digits.write_npz(path, x[:ROWS], y[:ROWS])), "npz")


def make_config(augment: bool) -> DistillConfig:
    return DistillConfig.from_dict(
        {
            "recipe": "plain",
            "student": {
                "architecture": "mlp",
                "hidden_sizes": [16],
                "dropout": 0.2,
            },  # dropout uses the global RNG
            "epochs": 4,
            "batch_size": 32,
            "learning_rate": 0.01,
            "seed": 7,
            "export": ["torchscript", "safetensors"],
            "augmentation": {"noise": 0.1, "mixup": 0.3} if augment else None,
        }
    )


def assert_same_student(expected_dir, actual_dir) -> None:
    """The two runs' exported student weights are bitwise equal, tensor by tensor."""
    expected = load_file(str(expected_dir / "student.safetensors"))
    actual = load_file(str(actual_dir / "student.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def stop_after(calls: int):
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] > calls

    return should_stop


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("stop_at_call", [10, 14])  # mid-epoch 2, and exactly at the end of epoch 2
def test_resumed_run_is_bitwise_equal_to_uninterrupted_run(tmp_path, teacher_path, small_spec, augment, stop_at_call):
    config = make_config(augment)
    reference = distill(teacher_path, small_spec, None, config, str(tmp_path / "ref"))

    checkpoints = str(tmp_path / "ckpt")
    with pytest.raises(EngineError) as info:
        distill(
            teacher_path,
            small_spec,
            None,
            config,
            str(tmp_path / "first"),
            should_stop=stop_after(stop_at_call),
            checkpoint_dir=checkpoints,
        )
    assert info.value.code == "cancelled"
    saved = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert saved["global_step"] == stop_at_call

    events, polls = [], []
    resumed = distill(
        teacher_path,
        small_spec,
        None,
        config,
        str(tmp_path / "second"),
        progress=events.append,
        checkpoint_dir=checkpoints,
        should_stop=lambda: polls.append(1) or False,
    )
    assert any(e.data.get("resumed") for e in events)
    assert len(polls) == TOTAL_STEPS - stop_at_call  # only the remaining steps ran
    assert_same_student(tmp_path / "ref", tmp_path / "second")
    assert resumed["history"] == reference["history"]


def test_finished_checkpoint_is_reused_without_training(tmp_path, teacher_path, small_spec):
    config = make_config(False)
    first = distill(teacher_path, small_spec, None, config, str(tmp_path / "a"), checkpoint_dir=str(tmp_path / "c"))
    calls = []
    second = distill(
        teacher_path,
        small_spec,
        None,
        config,
        str(tmp_path / "b"),
        checkpoint_dir=str(tmp_path / "c"),
        should_stop=lambda: calls.append(1) or False,
    )
    assert calls == [] and second["history"] == first["history"]
    assert second["student"]["accuracy"] == first["student"]["accuracy"]


def test_cnn_student_trained_channels_last_resumes_bitwise(tmp_path, teacher_path):
    """Image students train in NHWC; a resume restores the optimizer's moments in that layout, bit for bit."""
    x, y, _, _ = digits.digits_arrays()
    wrapped = tmp_path / "teacher_img.pt"  # the digits teacher flattens [1, 8, 8] images itself
    inner = torch.jit.load(teacher_path)
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), inner)), str(wrapped))
    spec = DatasetSpec(str(digits.write_npz(tmp_path / "img.npz", x[:ROWS].reshape(-1, 1, 8, 8), y[:ROWS])), "npz")
    config = DistillConfig.from_dict(
        {
            "recipe": "plain",
            "student": {"architecture": "cnn", "channels": [8, 16]},
            "epochs": 4,
            "batch_size": 32,
            "learning_rate": 0.01,
            "seed": 3,
            "export": ["safetensors", "onnx"],
        }
    )
    reference = distill(str(wrapped), spec, None, config, str(tmp_path / "ref"))
    with pytest.raises(EngineError):
        distill(
            str(wrapped),
            spec,
            None,
            config,
            str(tmp_path / "first"),
            should_stop=stop_after(10),
            checkpoint_dir=str(tmp_path / "ckpt"),
        )
    resumed = distill(str(wrapped), spec, None, config, str(tmp_path / "second"), checkpoint_dir=str(tmp_path / "ckpt"))
    assert_same_student(tmp_path / "ref", tmp_path / "second")
    assert resumed["history"] == reference["history"]
    assert resumed["onnx_max_abs_diff"] < 1e-4  # exported in the ordinary layout, and it still matches
