"""The loop's choice of the epoch it keeps: best validation metric, ties to the later epoch, patience."""

import torch
from torch import nn

from worker.engine import DistillConfig
from worker.engine.loop import Split, train_student


def _separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two well-separated Gaussian blobs: any trained linear model gets every row right after one epoch."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=gen) * 0.1 + (y.float() * 2 - 1)[:, None] * 3
    return x, y


def _split(n: int, seed: int) -> Split:
    x, y = _separable(n, seed)
    return Split(x, y, nn.functional.one_hot(y, 2).float() * 5)


def _train(epochs: int, patience: int | None = None):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    config = DistillConfig.from_dict(
        {"epochs": epochs, "batch_size": 32, "learning_rate": 0.05, "patience": patience, "device": "cpu"}
    )
    result = train_student(model, _split(256, 1), _split(64, 2), config, alpha=0.5, num_classes=2, device="cpu")
    return model, result


def test_tied_epochs_keep_the_later_one():
    _, result = _train(epochs=6)
    accuracies = [h["validation_accuracy"] for h in result.history]
    assert accuracies[0] == 1.0 and set(accuracies) == {1.0}, accuracies  # every epoch ties
    assert result.best_epoch == 6


def test_ties_do_not_reset_patience():
    _, result = _train(epochs=10, patience=2)
    # Epoch 1 is already perfect; epochs 2 and 3 only tie, so patience (2) stops the run after epoch 3.
    assert len(result.history) == 3
    assert result.best_epoch == 3
