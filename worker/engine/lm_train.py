"""Training a causal-LM student: SFT (the baseline and sequence-level KD), online logit KD against the live
teacher, and offline logit KD against the cached top-k + tail signal.

The loss is on completion tokens only. Logit KD mixes the next-token cross-entropy and the token-level
divergence: ce_weight * CE + (1 - ce_weight) * D, D as in worker/engine/lm_losses.py. Every method keeps the
weights of its epoch with the lowest validation loss (next-token NLL on rows held out from training), so that
the baseline and the distilled students are chosen the same way.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
from dataclasses import dataclass

import torch

from worker.engine.errors import EngineError
from worker.engine.lm_data import LMBatch, length_batches
from worker.engine.lm_losses import OBJECTIVES, masked_token_ce, token_kd_loss, topk_kd_loss
from worker.engine.lm_onpolicy import SAMPLED, BatchTally, OnPolicy, sampled_loss
from worker.engine.lm_resume import PhaseCheckpoint, Resumed

logger = logging.getLogger(__name__)

METHODS = ("sft", "seq_kd", *OBJECTIVES, "offline", "on_policy")
LIVE_TEACHER = (*OBJECTIVES, "on_policy")  # the methods that run the teacher on every batch


@dataclass
class LMTrainSettings:
    """How a student trains; `objective` is the divergence that `offline` uses."""

    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-3
    ce_weight: float = 0.5
    temperature: float = 1.0
    beta: float = 0.5
    objective: str = "forward_kl"
    seed: int = 0
    # Batches of rows of similar length, so that trimming each batch to its longest row removes most padding.
    length_bucketing: bool = True
    # Recompute each layer's activations in the backward pass: less memory for long sequences, about a third
    # more compute.
    gradient_checkpointing: bool = False
    # on_policy (GKD): the fraction of batches that are the student's own samples (GKD's lambda), their divergence,
    # and the epochs of forward KL on the data before them.
    on_policy_fraction: float = 0.5
    on_policy_objective: str = "reverse_kl"
    warm_start_epochs: int = 1


def next_token_logits(model, batch: LMBatch, skip: int = 0) -> torch.Tensor:
    """Next-token logits [N, L-1-skip, V] at positions skip..L-2 (the first `skip` are never in the loss)."""
    keep = batch.ids.shape[1] - skip
    # The vocabulary projection of positions no loss reads is skipped where the model can (transformers'
    # logits_to_keep): on short completions after long prompts it is a good part of the step.
    extra = {"logits_to_keep": keep} if skip and "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    logits = model(input_ids=batch.ids, attention_mask=batch.attention.long(), **extra).logits
    return logits[:, -keep:-1]


def first_loss_position(batch: LMBatch) -> int:
    """The first next-token position any row of the batch learns (0 when none does)."""
    learnt = batch.targets()[1].any(0)
    return int(learnt.int().argmax()) if bool(learnt.any()) else 0


def _step_loss(method, student, batch, settings, teacher, signal, rows, skip: int = 0) -> torch.Tensor:
    if method == SAMPLED:  # the student's own samples: the divergence alone, on the sampled tokens
        return sampled_loss(student, teacher, batch, settings)
    logits = next_token_logits(student, batch, skip)
    targets, mask = (t[:, skip:] for t in batch.targets())
    ce = masked_token_ce(logits, targets, mask)
    if method in ("sft", "seq_kd"):
        return ce
    if method == "offline":
        end = skip + logits.shape[1]
        indices = signal["indices"][rows, skip:end].long().to(logits.device)
        log_probs = signal["log_probs"][rows, skip:end].to(logits.device)
        kd = topk_kd_loss(logits, indices, log_probs, mask, settings.objective, settings.temperature, settings.beta)
    else:
        with torch.no_grad():
            teacher_logits = next_token_logits(teacher, batch, skip)
        kd = token_kd_loss(logits, teacher_logits, mask, method, settings.temperature, settings.beta)
    return settings.ce_weight * ce + (1 - settings.ce_weight) * kd


@torch.no_grad()
def mean_nll(model, data: LMBatch, batch_size: int = 64) -> float:
    """Mean next-token negative log-likelihood over the completion tokens (log-perplexity)."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = data.rows(torch.arange(start, min(start + batch_size, len(data))))
        batch = LMBatch(batch.ids.to(device), batch.attention.to(device), batch.completion.to(device))
        targets, mask = batch.targets()
        if not bool(mask.any()):
            continue
        logits = next_token_logits(model, batch).float()
        nll = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
        total += float(nll)
        count += int(mask.sum())
    return total / max(1, count)


def autocast(device: torch.device):
    """bf16 autocast on a CUDA device that supports it (the losses are computed in fp32); else nothing."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _checkpointing(model, on: bool) -> None:
    """Turn a transformers model's activation (gradient) checkpointing on or off."""
    # transformers 5.x renamed gradient_checkpointing_* to activation_checkpointing_* (the old names warn); the
    # non-reentrant form is the one that needs no input that requires grad.
    if hasattr(model, "activation_checkpointing_enable") and on:
        model.activation_checkpointing_enable({"use_reentrant": False})
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _epoch_batches(data: LMBatch, settings: LMTrainSettings, generator: torch.Generator) -> list:
    if settings.length_bucketing:
        return length_batches(data.attention.sum(1), settings.batch_size, generator)
    return list(torch.randperm(len(data), generator=generator).split(settings.batch_size))


def _train_epoch(method, student, data, settings, teacher, signal, optimizer, generator, on_policy) -> torch.Tensor:
    """One pass over the rows; the loss's mean over the epoch's tokens, on the device (no host sync per step)."""
    device = next(student.parameters()).device
    total = torch.zeros((), device=device)
    batches = _epoch_batches(data, settings, generator)
    per_batch = max(1, int(data.targets()[1].sum())) / len(batches)
    for rows in batches:
        batch = data.rows(rows)
        skip = first_loss_position(batch)  # on the host copy: no wait for the device
        # Each batch's loss is a mean over its tokens, weighted by its share of the epoch's tokens: every token then
        # counts the same, as held-out perplexity counts them; else length-bucketed batches of short rows would
        # weigh each of their tokens more (LM fixture, offline: held-out perplexity 76.78 unweighted, 76.22 weighted).
        weight = float(batch.targets()[1].sum()) / per_batch
        batch = LMBatch(batch.ids.to(device), batch.attention.to(device), batch.completion.to(device))
        try:
            with autocast(device):
                step, stepped = on_policy.next_batch(student, batch) if on_policy else (method, batch)
                skip = skip if stepped is batch else 0  # another batch (the student's samples): its own positions
                batch = stepped
                loss = _step_loss(step, student, batch, settings, teacher, signal, rows, skip)
                loss = loss if step == SAMPLED else loss * weight  # a sampled batch is not the data's
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()  # its first call allocates the optimizer's state: it can run out of memory too
        except torch.OutOfMemoryError:
            raise EngineError(
                "cuda_oom",
                f"the GPU ran out of memory on a batch of {len(rows)} rows of up to {batch.ids.shape[1]} tokens "
                f"(batch_size {settings.batch_size}, longest sequence {data.ids.shape[1]} tokens): lower "
                "batch_size or max_length, or turn on gradient_checkpointing",
            ) from None
        total += loss.detach().float()
    return total / len(batches)


def train_lm(
    student, data: LMBatch, validation: LMBatch, method: str, settings: LMTrainSettings, teacher=None, signal=None,
    on_epoch=None, max_new_tokens: int = 32, resume: PhaseCheckpoint | None = None, tally: BatchTally | None = None,
) -> list[dict]:  # fmt: skip
    """Train `student` in place by `method`; its best epoch's weights are kept; the per-epoch history (each entry
    also handed to `on_epoch` as it ends). With `resume`, each epoch is checkpointed and a saved one continued;
    on_policy counts its batches by source into `tally`."""
    if method not in METHODS:
        raise EngineError("invalid_config", f"unknown method {method!r}; one of {METHODS}")
    if method in LIVE_TEACHER and teacher is None:
        raise EngineError("invalid_config", f"online {method} needs the teacher")
    if method == "offline" and signal is None:
        raise EngineError("invalid_config", "offline KD needs the teacher's cached signal")
    checkpointing = settings.gradient_checkpointing and getattr(student, "supports_gradient_checkpointing", False)
    if checkpointing:
        _checkpointing(student, True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    generator = torch.Generator().manual_seed(settings.seed)
    on_policy = OnPolicy(settings, max_new_tokens, tally) if method == "on_policy" else None
    start = resume.restore(student, optimizer, generator, on_policy) if resume is not None else Resumed()
    best, history = start.best, start.history
    best_state = start.best_state if start.best_state is not None else copy.deepcopy(student.state_dict())
    for epoch in range(start.epoch, settings.epochs):
        student.train()
        if on_policy is not None:
            on_policy.epoch = epoch
        loss = float(_train_epoch(method, student, data, settings, teacher, signal, optimizer, generator, on_policy))
        if not math.isfinite(loss):
            # Checked once an epoch: a per-step check would wait for the GPU at every step.
            raise EngineError("non_finite", f"the {method} loss became {loss} in epoch {epoch + 1}")
        validation_nll = mean_nll(student, validation)
        history.append({"epoch": epoch + 1, "loss": loss, "validation_nll": validation_nll})
        logger.info("%s epoch %d: %s", method, epoch + 1, history[-1])
        if validation_nll < best:
            best, best_state = validation_nll, copy.deepcopy(student.state_dict())
        if resume is not None:  # before the epoch's events: the worker copies the checkpoint on its metrics event
            resume.save(epoch + 1, student, optimizer, generator, on_policy, best, best_state, history)
        if on_epoch is not None:
            on_epoch(history[-1])
    if checkpointing:
        _checkpointing(student, False)
    student.load_state_dict(best_state)
    student.eval()
    return history
