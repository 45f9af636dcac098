"""Distillation objectives. Each takes tensors explicitly and returns a scalar loss.

`targets` may be class indices [N] (int64), class probabilities [N, C] (float, e.g. after mixup),
or None for unlabeled data, in which case only the teacher term is used. LOSSES maps the configuration's
loss names to them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from contract.losses import DKD_WARMUP_FRACTION
from worker.engine.errors import EngineError


def _hard_target_term(student_logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    if targets is None:
        return student_logits.new_zeros(())
    return F.cross_entropy(student_logits, targets)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch (Hinton et al. 2015)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    # T^2 keeps the soft-target gradient scale independent of T (Hinton et al. 2015, section 2).
    return kl * temperature**2


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Knowledge distillation, Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).

    (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)); without targets alpha is 1.
    """
    if targets is None:
        alpha = 1.0
    soft = soft_kl(student_logits, teacher_logits, temperature) if alpha > 0 else student_logits.new_zeros(())
    hard = _hard_target_term(student_logits, targets) if alpha < 1 else student_logits.new_zeros(())
    return (1 - alpha) * hard + alpha * soft


def mse_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None, alpha: float
) -> torch.Tensor:
    """Logit matching, Ba & Caruana, "Do Deep Nets Really Need to be Deep?" (NeurIPS 2014).

    (1 - alpha) * CE(s, y) + alpha * mean squared error between student and teacher logits.
    """
    if targets is None:
        alpha = 1.0
    hard = _hard_target_term(student_logits, targets) if alpha < 1 else student_logits.new_zeros(())
    return (1 - alpha) * hard + alpha * F.mse_loss(student_logits, teacher_logits)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None,
    temperature: float,
    alpha: float,
    dkd_alpha: float = 1.0,
    dkd_beta: float = 8.0,
) -> torch.Tensor:
    """Decoupled KD, Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022).

    DKD = T^2 * (dkd_alpha * TCKD + dkd_beta * NCKD), where TCKD is the binary KL of target vs. rest
    and NCKD the KL among the non-target classes. The loss is (1 - alpha) * CE(s, y) + alpha * DKD.
    Without labels the teacher's argmax is the target class and alpha is 1.
    """
    if targets is None:
        target_class = teacher_logits.argmax(dim=1)
        alpha = 1.0
    else:
        target_class = targets.argmax(dim=1) if targets.ndim == 2 else targets
    gt_mask = F.one_hot(target_class, student_logits.shape[1]).bool()
    batch = student_logits.shape[0]
    t = temperature
    # Target vs. all other classes, as two-way distributions, in log space: log p_t = z_t - logsumexp(z) and
    # log(1 - p_t) = logsumexp(z without t) - logsumexp(z). Clamping probabilities instead would zero the
    # target-class gradient of a student that is confident and wrong, the case that most needs it.
    log_b_student = _log_target_vs_rest(student_logits / t, gt_mask)
    log_b_teacher = _log_target_vs_rest(teacher_logits / t, gt_mask)
    tckd = F.kl_div(log_b_student, log_b_teacher, reduction="sum", log_target=True) / batch
    # Among non-target classes only: push the target logit far down, as the paper's code does.
    log_q_student = F.log_softmax(student_logits / t - 1000.0 * gt_mask, dim=1)
    q_teacher = F.softmax(teacher_logits / t - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_q_student, q_teacher, reduction="sum") / batch
    dkd = (dkd_alpha * tckd + dkd_beta * nckd) * t**2
    hard = _hard_target_term(student_logits, targets) if alpha < 1 else student_logits.new_zeros(())
    return (1 - alpha) * hard + alpha * dkd


def _log_target_vs_rest(logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """[N, 2]: log P(target class) and log P(any other class) under softmax(logits), without rounding to 0."""
    log_total = torch.logsumexp(logits, dim=1)
    log_target = torch.logsumexp(logits.masked_fill(~target_mask, float("-inf")), dim=1)
    log_rest = torch.logsumexp(logits.masked_fill(target_mask, float("-inf")), dim=1)
    return torch.stack([log_target, log_rest], dim=1) - log_total[:, None]


def dkd_paper_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None,
    temperature: float,
    dkd_alpha: float = 1.0,
    dkd_beta: float = 8.0,
    progress: float = 1.0,
) -> torch.Tensor:
    """DKD with the recipe of Zhao et al. (CVPR 2022): CE(s, y) at weight 1 + warm-up * DKD.

    The warm-up factor min(1, progress / DKD_WARMUP_FRACTION) ramps DKD in over the first part of training
    (`progress`: the fraction of training steps done), as the paper's min(epoch / 20, 1) does over 240 epochs;
    without the ramp, DKD's large early gradients (beta 8, T^2) swamp the hard labels. Without labels only DKD.
    """
    warm = min(1.0, max(progress, 0.0) / DKD_WARMUP_FRACTION)
    dkd = dkd_loss(student_logits, teacher_logits, targets, temperature, 1.0, dkd_alpha, dkd_beta)
    return _hard_target_term(student_logits, targets) + warm * dkd


# name -> loss(student_logits, teacher_logits, targets, temperature, alpha, dkd_alpha, dkd_beta, progress); each
# entry passes on the settings its loss uses. `progress` is the fraction of training steps done.
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "kl": lambda s, t, y, temperature, alpha, dkd_alpha, dkd_beta, progress: kd_loss(s, t, y, temperature, alpha),
    "mse": lambda s, t, y, temperature, alpha, dkd_alpha, dkd_beta, progress: mse_loss(s, t, y, alpha),
    "dkd": lambda s, t, y, temperature, alpha, dkd_alpha, dkd_beta, progress: dkd_loss(
        s, t, y, temperature, alpha, dkd_alpha, dkd_beta
    ),
    "dkd_paper": lambda s, t, y, temperature, alpha, dkd_alpha, dkd_beta, progress: dkd_paper_loss(
        s, t, y, temperature, dkd_alpha, dkd_beta, progress
    ),
}


def distillation_loss(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None,
    temperature: float,
    alpha: float,
    dkd_alpha: float = 1.0,
    dkd_beta: float = 8.0,
    progress: float = 1.0,
) -> torch.Tensor:
    """The loss named in the configuration (contract.LOSSES); an unknown name is invalid_config."""
    loss = LOSSES.get(name)
    if loss is None:
        raise EngineError("invalid_config", f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return loss(student_logits, teacher_logits, targets, temperature, alpha, dkd_alpha, dkd_beta, progress)
