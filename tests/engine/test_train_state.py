"""TrainState is the checkpoint: it round-trips through checkpoint.py's files under the keys older versions wrote."""

import torch
from torch import nn

from worker.engine import DistillConfig
from worker.engine.checkpoint import load_checkpoint, save_checkpoint
from worker.engine.train_state import TrainState

# Written by every version since resumable checkpoints; a checkpoint from before TrainState must still load.
META_KEYS = {
    "epoch",
    "step",
    "global_step",
    "history",
    "best_metric",
    "best_epoch",
    "best_tiebreak",
    "bad_epochs",
    "finished",
    "optimizer_groups",
    "rng",
    "config",
    "generation",
}


def _trained_pair(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def _mid_epoch_state(model: nn.Module) -> TrainState:
    generator = torch.Generator().manual_seed(5)
    perm = torch.randperm(10, generator=generator)
    state = TrainState.start(model)
    state.epoch, state.step, state.global_step = 2, 3, 13
    state.history = [{"epoch": 1, "train_loss": 0.5, "validation_accuracy": 0.75, "validation_agreement": 0.5}]
    state.best_metric, state.best_tiebreak, state.best_epoch, state.bad_epochs = 0.75, 0.5, 1, 1
    state.generator, state.perm, state.loss_sum = generator, perm, torch.tensor(1.25)
    return state


def test_a_mid_epoch_state_round_trips_with_weights_optimizer_and_shuffle(tmp_path):
    config = DistillConfig()
    model, optimizer = _trained_pair(0)
    state = _mid_epoch_state(model)
    save_checkpoint(str(tmp_path), *state.to_checkpoint(model, optimizer, config))

    tensors, meta = load_checkpoint(str(tmp_path))
    assert set(meta) == META_KEYS
    assert {k.split(".")[0] for k in tensors} == {"model", "best", "optim", "rng", "generator", "perm", "loss_sum"}

    other, other_optimizer = _trained_pair(1)
    restored = TrainState.from_checkpoint(tensors, meta, other, other_optimizer, "cpu")
    for name in ("epoch", "step", "global_step", "history", "best_metric", "best_tiebreak", "best_epoch"):
        assert getattr(restored, name) == getattr(state, name), name
    assert (restored.bad_epochs, restored.finished) == (state.bad_epochs, state.finished)
    assert torch.equal(restored.perm, state.perm) and torch.equal(restored.loss_sum, state.loss_sum)
    assert torch.equal(restored.generator.get_state(), state.generator.get_state())
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value) and torch.equal(restored.best_state[key], value)
    saved_moments, restored_moments = optimizer.state_dict()["state"], other_optimizer.state_dict()["state"]
    assert saved_moments.keys() == restored_moments.keys()
    for index, entries in saved_moments.items():
        for name, value in entries.items():
            assert torch.equal(restored_moments[index][name], value), (index, name)


def test_an_epoch_end_state_leaves_the_shuffle_out(tmp_path):
    model, optimizer = _trained_pair(0)
    state = _mid_epoch_state(model)
    state.epoch, state.step = 3, 0
    tensors, meta = state.to_checkpoint(model, optimizer, DistillConfig())
    assert not {"generator", "perm", "loss_sum"} & set(tensors)
    restored = TrainState.from_checkpoint(tensors, meta, model, optimizer, "cpu")
    assert restored.generator is None and restored.perm is None and restored.loss_sum is None
