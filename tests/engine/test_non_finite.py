"""NaN or infinite values during training fail the job with non_finite, naming where, instead of a NaN student."""

import pytest
import torch
from torch import nn

from tests.support import digits
from worker.engine import DatasetSpec, DistillConfig, EngineError, distill
from worker.engine.loop import Split, train_student

ROWS = 256  # with batch_size 32: 8 steps per epoch


class TurnsInfinite(nn.Module):
    """A linear student whose outputs become infinite after `after` training steps."""

    def __init__(self, after: int):
        super().__init__()
        self.linear, self.after, self.calls = nn.Linear(4, 2), after, 0

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("inf")
        return out


class NanGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NanGradientOnStep(nn.Module):
    """A linear student with finite outputs whose gradient is NaN on one training step only."""

    def __init__(self, step: int):
        super().__init__()
        self.linear, self.step, self.calls = nn.Linear(4, 2), step, 0

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls == self.step:
                out = NanGradient.apply(out)
        return out


def _train(model: nn.Module, epochs: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(ROWS, 4, generator=gen), torch.randint(0, 2, (ROWS,), generator=gen)
    split = Split(x, y, torch.randn(ROWS, 2, generator=gen))
    config = DistillConfig.from_dict({"epochs": epochs, "batch_size": 32, "device": "cpu"})
    train_student(model, split, split, config, alpha=0.5, num_classes=2, device="cpu")


def test_a_loss_that_becomes_nan_fails_the_job_naming_the_epoch():
    with pytest.raises(EngineError) as info:
        _train(TurnsInfinite(after=8), epochs=3)  # finite through epoch 1, infinite outputs from epoch 2 on
    assert info.value.code == "non_finite"
    assert info.value.message == "the training loss became NaN in epoch 2"


def test_weights_turned_nan_by_the_last_step_fail_the_job():
    # Every step's loss is finite; the epoch's last step turns the weights to NaN.
    with pytest.raises(EngineError) as info:
        _train(NanGradientOnStep(step=8), epochs=2)
    assert info.value.code == "non_finite"
    assert info.value.message == "the student's weights became NaN or infinite in epoch 1"


class NanOnAugmented(nn.Module):
    """The digits teacher, returning NaN for any row off the data's 1/16 grid (as noise puts every row)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        scaled = x * 16.0
        if bool((scaled != torch.round(scaled)).any()):
            out = out * float("nan")
        return out


def test_a_teacher_returning_nan_on_augmented_batches_fails_the_job(tmp_path, teacher_path):
    teacher = tmp_path / "teacher_nan.pt"
    torch.jit.save(torch.jit.script(NanOnAugmented(torch.jit.load(teacher_path))), str(teacher))
    x, y, _, _ = digits.digits_arrays()
    spec = DatasetSpec(str(digits.write_npz(tmp_path / "train.npz", x[:300], y[:300])), "npz")
    config = DistillConfig.from_dict(
        {
            "recipe": "plain",
            "student": {"architecture": "mlp", "hidden_sizes": [16]},
            "epochs": 2,
            "batch_size": 32,
            "augmentation": {"noise": 0.1},
            "export": ["safetensors"],
        }
    )
    with pytest.raises(EngineError) as info:
        distill(str(teacher), spec, None, config, str(tmp_path / "out"))
    assert info.value.code == "non_finite"
    assert info.value.message == "the teacher returned NaN or infinite outputs on augmented batches in epoch 1"
