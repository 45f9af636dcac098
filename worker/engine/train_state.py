"""Where a training run stands. With the model and the optimizer it is the checkpoint, resumable bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from worker.engine import checkpoint as ckpt
from worker.engine.config import DistillConfig


@dataclass
class TrainState:
    """Epochs done, steps done in the current one, the history, the best epoch so far and patience.

    `generator`, `perm` and `loss_sum` are the current epoch's shuffle, random stream and running loss;
    a checkpoint keeps them only mid-epoch (step > 0), since a new epoch draws them afresh from its seed.
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_tiebreak: float = 0.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_epochs: int = 0
    finished: bool = False
    generator: torch.Generator | None = None
    perm: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None

    @classmethod
    def start(cls, model: nn.Module) -> TrainState:
        """A fresh run; until an epoch ends, the best weights are the initial ones."""
        return cls(best_state=snapshot(model))

    def to_checkpoint(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, config: DistillConfig
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, meta) for checkpoint.save_checkpoint: this state, the weights, the optimizer, every RNG."""
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        optim_tensors, groups = ckpt.optimizer_tensors(optimizer)
        rng_tensors, rng_meta = ckpt.rng_state()
        tensors.update(optim_tensors)
        tensors.update(rng_tensors)
        if self.step > 0:
            assert self.generator is not None  # set with the first step
            tensors.update({"generator": self.generator.get_state(), "perm": self.perm, "loss_sum": self.loss_sum})
        meta = {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "history": self.history,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_tiebreak": self.best_tiebreak,
            "bad_epochs": self.bad_epochs,
            "finished": self.finished,
            "optimizer_groups": groups,
            "rng": rng_meta,
            "config": config.to_dict(),
        }
        return tensors, meta

    @classmethod
    def from_checkpoint(
        cls,
        tensors: dict[str, torch.Tensor],
        meta: dict,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: str,
    ) -> TrainState:
        """Inverse of to_checkpoint: loads the weights, the optimizer and every RNG in place; returns the state."""
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        ckpt.restore_optimizer(optimizer, tensors, meta["optimizer_groups"])
        ckpt.restore_rng(tensors, meta["rng"])
        state = cls(
            epoch=meta["epoch"],
            step=meta["step"],
            global_step=meta["global_step"],
            history=[_renamed(row) for row in meta["history"]],
            best_metric=meta["best_metric"],
            best_tiebreak=meta.get("best_tiebreak", 0.0),  # absent from checkpoints of older versions
            best_epoch=meta["best_epoch"],
            best_state=best_state,
            bad_epochs=meta["bad_epochs"],
            finished=meta["finished"],
        )
        if state.step > 0:  # stopped mid-epoch: continue the same shuffle and random stream
            state.generator = torch.Generator().manual_seed(0)
            state.generator.set_state(tensors["generator"])
            state.perm, state.loss_sum = tensors["perm"], tensors["loss_sum"].to(device)
        return state


def _renamed(row: dict) -> dict:
    # Checkpoints written before the rename name the validation slice's numbers eval_accuracy / eval_agreement.
    old = {"eval_accuracy": "validation_accuracy", "eval_agreement": "validation_agreement"}
    return {old.get(k, k): v for k, v in row.items()}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights that later training steps leave alone."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
