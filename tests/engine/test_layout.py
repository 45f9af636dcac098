"""Image students train in channels_last (NHWC) and come out of the loop in the ordinary layout."""

import torch

from worker.engine import DistillConfig
from worker.engine.loop import Split, train_student, wants_channels_last
from worker.engine.students import build_student


def _cnn():
    return build_student({"architecture": "cnn", "channels": [4, 8]}, [3, 8, 8], "float32", 5, None, None)


def test_which_students_train_channels_last():
    images = torch.zeros(2, 3, 8, 8)
    assert wants_channels_last(_cnn(), images)
    assert not wants_channels_last(build_student({"architecture": "mlp"}, [3, 8, 8], "float32", 5, None, None), images)
    assert not wants_channels_last(_cnn(), torch.zeros(2, 192))
    assert not wants_channels_last(torch.jit.script(_cnn()), images)  # uploaded students keep their own layout


def test_training_runs_nhwc_and_hands_back_contiguous_weights():
    model = _cnn()
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_pre_hook(
        lambda module, args: seen.append(
            module.training
            and args[0].is_contiguous(memory_format=torch.channels_last)
            and module.weight.is_contiguous(memory_format=torch.channels_last)
        )
    )
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8, generator=gen), torch.randint(0, 5, (64,), generator=gen)
    split = Split(x, y, torch.randn(64, 5, generator=gen))
    config = DistillConfig.from_dict({"epochs": 1, "batch_size": 16, "device": "cpu", "recipe": "plain"})
    train_student(model, split, split, config, alpha=0.5, num_classes=5, device="cpu")
    assert seen and all(seen[:4]), seen  # every training step's batch and weights were NHWC
    assert all(p.is_contiguous() for p in model.parameters())
