"""Held-out figures of a causal-LM student against its teacher and its SFT baseline.

Perplexity is exp of the mean next-token NLL over the held-out completions' tokens. "Gap recovered" is
(distilled - baseline) / (teacher - baseline) on log-perplexity (the mean NLL), so 1 means the student reached
the teacher and 0 means distillation did no better than fine-tuning. Agreement and KL compare next-token
distributions at the same completion positions against the teacher's cached top-k + tail signal: top-1
agreement is exact; the KLs are over the teacher's top-k tokens plus one tail bucket (a lower bound of the
full-vocabulary KL, equal to it when k covers the vocabulary).
"""

from __future__ import annotations

import math

import torch

from worker.engine.lm_data import LMBatch
from worker.engine.lm_losses import divergence, fold_onto_topk
from worker.engine.lm_train import mean_nll


def perplexity_figures(nll: float) -> dict:
    """The mean NLL and its perplexity."""
    return {"nll": nll, "perplexity": math.exp(min(nll, 700.0))}


def gap_recovered(student_nll: float, baseline_nll: float, teacher_nll: float) -> float | None:
    """(student - baseline) / (teacher - baseline) on log-perplexity; None when the teacher is no better."""
    if teacher_nll >= baseline_nll:
        return None
    return (student_nll - baseline_nll) / (teacher_nll - baseline_nll)


@torch.no_grad()
def agreement_with_teacher(model, data: LMBatch, signal: dict[str, torch.Tensor], batch_size: int = 64) -> dict:
    """Top-1 agreement and forward/reverse KL (over the teacher's top-k + tail) at the completion positions."""
    model.eval()
    device = next(model.parameters()).device
    agree, forward, reverse, count = 0, 0.0, 0.0, 0
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        batch = data.rows(rows)
        _, mask = batch.targets()
        if not bool(mask.any()):
            continue
        length = mask.shape[1]
        logits = model(input_ids=batch.ids.to(device), attention_mask=batch.attention.long().to(device)).logits
        logits = logits[:, :-1].float().cpu()[mask]
        indices = signal["indices"][rows, :length].long()[mask]
        teacher = signal["log_probs"][rows, :length].float()[mask]
        agree += int((logits.argmax(-1) == indices[:, 0]).sum())
        student = fold_onto_topk(logits, indices)
        forward += float(divergence(student, teacher, "forward_kl").sum())
        reverse += float(divergence(student, teacher, "reverse_kl").sum())
        count += int(mask.sum())
    k = int(signal["indices"].shape[-1])
    return {
        "top1_agreement": agree / max(1, count),
        "forward_kl": forward / max(1, count),
        "reverse_kl": reverse / max(1, count),
        "kl_buckets": f"teacher top-{k} + tail",
        "tokens": count,
    }


def student_figures(model, eval_data: LMBatch, signal: dict | None) -> dict:
    """Held-out perplexity of a trained model, and its agreement with the teacher when the vocabularies match."""
    figures = perplexity_figures(mean_nll(model, eval_data))
    figures["num_parameters"] = sum({id(p): p.numel() for p in model.parameters()}.values())
    if signal is not None:
        figures.update(agreement_with_teacher(model, eval_data, signal))
    return figures
