"""The training loop: one student, AdamW + warmup/cosine, checkpoints each epoch, resumable bitwise.

Best-epoch choice and early stopping use a validation slice held out of the training data; the
history's validation_accuracy / validation_agreement are measured on that slice, never on the report's
eval split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from worker.engine import checkpoint as ckpt
from worker.engine.augmented_cache import AugmentedOutputs
from worker.engine.config import DistillConfig, ProgressEvent
from worker.engine.errors import EngineError
from worker.engine.losses import distillation_loss
from worker.engine.ranks import SINGLE, Ranks, data_parallel
from worker.engine.train_state import TrainState, snapshot
from worker.engine.training_steps import Batches, ProgressClock, evaluate, lr_at, maybe_compile, same_run

logger = logging.getLogger(__name__)


@dataclass
class Split:
    """Examples, optional labels and teacher logits (None when the teacher runs online), on one device."""

    x: torch.Tensor
    y: torch.Tensor | None
    teacher_logits: torch.Tensor | None


@dataclass
class TrainResult:
    history: list[dict]
    best_epoch: int
    best_metric: float | None


def train_student(
    model: nn.Module,
    train: Split,
    val: Split,
    config: DistillConfig,
    *,
    alpha: float,
    num_classes: int,
    device: str,
    teacher: Callable | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | None = None,
    report_progress: bool = True,
    pad_id: int | None = None,
    mask_id: int | None = None,
    augmented: AugmentedOutputs | None = None,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """Train `model` in place (on every rank alike: ranks.py) and leave it holding the best epoch's weights."""
    emit = progress if (progress and report_progress) else (lambda event: None)
    channels_last = _channels_last(model, train.x)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    batches = Batches(
        train,
        model,
        config,
        device,
        teacher=teacher,
        num_classes=num_classes,
        pad_id=pad_id,
        mask_id=mask_id,
        channels_last=channels_last,
        augmented=augmented,
        ranks=ranks,
    )
    clock = ProgressClock(emit, config.epochs, config.epochs * batches.per_epoch)
    select_by = "accuracy" if val.y is not None else "agreement"

    def save(state: TrainState) -> bool:
        if checkpoint_dir and ranks.main:
            ckpt.save_checkpoint(checkpoint_dir, *state.to_checkpoint(model, optimizer, config))
        return bool(checkpoint_dir)

    state = resume_or_start(model, optimizer, config, checkpoint_dir, device, progress, ranks)
    forward = maybe_compile(data_parallel(model, ranks), config, progress)
    while state.epoch < config.epochs and not state.finished:
        train_loss = run_epoch(state, model, forward, optimizer, batches, config, alpha, should_stop, save, clock)
        row = _close_epoch(state, model, val, device, train_loss, select_by, config, emit)
        save(state)  # before the metrics event: a client that sees epoch N can count on its checkpoint
        clock.epoch_end(state.epoch - 1, state.global_step)
        emit(ProgressEvent("metrics", f"epoch {state.epoch}: train loss {train_loss:.4f}", row))

    model.load_state_dict(state.best_state)
    if channels_last:  # exports (safetensors, ONNX) and users expect the ordinary layout
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # the stub lacks memory_format
    model.eval()
    return TrainResult(state.history, state.best_epoch, state.best_metric)


def _channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """Put the model in NHWC when it trains faster so; whether it did."""
    # Convolutions train 1.6-2x faster on CPU in NHWC (oneDNN), and NHWC is what cuDNN's tensor-core kernels
    # want; set before the optimizer exists so that its moments take the same layout.
    channels_last = wants_channels_last(model, x)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks memory_format
    return channels_last


def _close_epoch(state: TrainState, model, val: Split, device, train_loss: float, select_by, config, emit) -> dict:
    """Measure the epoch on the validation slice and keep the best weights; the epoch's history row."""
    accuracy, agreement = evaluate(model, val, device)
    row = dict(
        epoch=state.epoch + 1, train_loss=train_loss, validation_accuracy=accuracy, validation_agreement=agreement
    )
    if end_epoch(state, model, row, select_by, config):
        message = f"early stop: no better validation {select_by} for {state.bad_epochs} epochs"
        emit(ProgressEvent("info", message, {"epoch": state.epoch}))
    return dict(row)


def resume_or_start(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: DistillConfig,
    checkpoint_dir: str | None,
    device: str,
    progress: Callable[[ProgressEvent], None] | None,
    ranks: Ranks = SINGLE,
) -> TrainState:
    """The state of the checkpoint in `checkpoint_dir` (loading model, optimizer and RNGs), else a fresh one."""
    saved = ckpt.load_checkpoint(checkpoint_dir)
    if saved is not None and same_run(saved[1], config):
        state = TrainState.from_checkpoint(*saved, model, optimizer, device)
        if state.loss_sum is not None and not ranks.main:
            state.loss_sum.zero_()  # the checkpoint's running loss is all ranks' sum: counted once, by rank 0
        if progress:
            message = f"resuming from epoch {state.epoch + 1}, step {state.step}"
            progress(ProgressEvent("info", message, {"epoch": state.epoch, "step": state.step, "resumed": True}))
        return state
    if saved is not None and progress:
        progress(ProgressEvent("warning", "ignoring a checkpoint written with other settings", {}))
    return TrainState.start(model)


def run_epoch(
    state: TrainState,
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    config: DistillConfig,
    alpha: float,
    should_stop: Callable[[], bool] | None,
    save: Callable[[TrainState], bool],
    clock: ProgressClock,
) -> float:
    """Train from state.step to the end of the epoch; return the epoch's mean training loss.

    Raises cancelled (after saving where the run stands) when should_stop says so, and non_finite when the
    loss, the online teacher's outputs or the weights were NaN or infinite.
    """
    if state.step == 0:
        state.generator, state.perm = batches.shuffle(state.epoch)
        state.loss_sum = torch.zeros((), device=batches.device)
    # Set just above, or by the checkpoint the run resumed from (which has step > 0).
    assert state.generator is not None and state.perm is not None and state.loss_sum is not None
    batches.begin_epoch(state.epoch, state.perm)
    # Indices live beside the data: no host-to-device copy (and no implicit sync) per step.
    perm_on_storage = state.perm.to(batches.train.x.device)
    # Like loss_sum, kept on the device and read once, at the end of the epoch.
    teacher_finite = torch.ones((), dtype=torch.bool, device=batches.device)
    model.train()
    ranks = batches.ranks
    while state.step < batches.per_epoch:
        if ranks.agree_to_stop(should_stop, state.step):
            state.loss_sum = ranks.sum(state.loss_sum)  # the checkpoint holds every rank's running loss
            where = f"stopped at epoch {state.epoch + 1}, step {state.step}; a checkpoint was saved"
            raise EngineError("cancelled", where if save(state) else "stopped on request")
        rows = slice(state.step * config.batch_size, (state.step + 1) * config.batch_size)
        x, y, teacher_logits, weight = batches.batch(
            state.perm[rows], perm_on_storage[rows], state.generator, state.step
        )
        if config.augmenting:
            teacher_finite &= torch.isfinite(teacher_logits).all()
        lr = lr_at(state.global_step, clock.total_steps, config.learning_rate, config.warmup_fraction)
        progress = state.global_step / max(1, clock.total_steps)  # the paper's DKD warms up over training
        loss = train_step(model, forward, optimizer, x, y, teacher_logits, lr, config, alpha, progress, weight)
        # Accumulate on the device: reading .item() every step would synchronise the GPU.
        state.loss_sum += loss.detach() * (len(x) if weight else 0)
        state.step += 1
        state.global_step += 1
        clock.step(state.epoch, state.global_step)
    # One read per epoch: the mean loss, and whether the teacher's outputs and the weights stayed finite.
    weights_finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    ends = torch.stack([state.loss_sum, (~teacher_finite).float(), (~weights_finite).float()])
    loss_sum, teacher_bad, weights_bad = ranks.sum(ends).tolist()  # any rank's bad outputs fail them all
    train_loss = loss_sum / batches.rows
    check_finite(train_loss, teacher_bad == 0.0, weights_bad == 0.0, state.epoch)
    return train_loss


def train_step(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor | None,
    teacher_logits: torch.Tensor,
    lr: float,
    config: DistillConfig,
    alpha: float,
    progress: float = 1.0,
    weight: float = 1.0,
) -> torch.Tensor:
    """One optimizer step on one batch, its loss scaled by `weight` (a rank's share); returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        student_logits = forward(x)
    loss = distillation_loss(
        config.loss,
        student_logits.float(),
        teacher_logits,
        y,
        config.temperature,
        alpha,
        config.dkd_alpha,
        config.dkd_beta,
        progress,
    )
    optimizer.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss


def check_finite(train_loss: float, teacher_finite: bool, weights_finite: bool, epoch: int) -> None:
    """Raise non_finite, naming where, when the epoch's teacher outputs, loss or resulting weights were not finite."""
    if not teacher_finite:
        where = f"the teacher returned NaN or infinite outputs on augmented batches in epoch {epoch + 1}"
        raise EngineError("non_finite", where)
    if not math.isfinite(train_loss):
        what = "NaN" if math.isnan(train_loss) else "infinite"
        raise EngineError("non_finite", f"the training loss became {what} in epoch {epoch + 1}")
    if not weights_finite:  # a last step can turn the weights to NaN after a finite loss
        raise EngineError("non_finite", f"the student's weights became NaN or infinite in epoch {epoch + 1}")


def end_epoch(state: TrainState, model: nn.Module, row: dict, select_by: str, config: DistillConfig) -> bool:
    """Record the finished epoch: history, best weights, patience. True when patience has run out."""
    state.history.append(row)
    accuracy, agreement = row["validation_accuracy"], row["validation_agreement"]
    metric = accuracy if select_by == "accuracy" else agreement
    tiebreak = (agreement if select_by == "accuracy" else None) or 0.0
    improved = metric is not None and (state.best_metric is None or metric > state.best_metric)
    # A small validation slice ties often (135 rows move in steps of 0.7%). Among tied epochs keep the one that
    # agrees more with the teacher, then the later one: it has trained longer at a lower learning rate.
    tied = metric is not None and metric == state.best_metric and tiebreak >= state.best_tiebreak
    if improved or tied:
        state.best_metric, state.best_tiebreak, state.best_epoch = metric, tiebreak, state.epoch + 1
        state.best_state = snapshot(model)
    # Patience counts epochs without a strictly better primary metric: ties are not progress.
    state.bad_epochs = 0 if improved else state.bad_epochs + 1
    state.epoch, state.step = state.epoch + 1, 0
    out_of_patience = config.patience is not None and state.bad_epochs >= config.patience
    state.finished = state.finished or out_of_patience or state.epoch >= config.epochs
    return out_of_patience


def wants_channels_last(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether to train in NHWC: float image batches [N, C, H, W] into a built-in student with 2-D convolutions."""
    if x.ndim != 4 or not x.is_floating_point() or isinstance(model, torch.jit.ScriptModule):
        return False
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
