"""The distillation losses a job can ask for, by the name the configuration uses."""

from __future__ import annotations

from enum import StrEnum


class Loss(StrEnum):
    KL = "kl"  # Hinton et al. 2015: KL to the teacher's softened outputs, scaled by T^2
    MSE = "mse"  # mean squared error between the logits (Ba & Caruana 2014)
    DKD = "dkd"  # Decoupled KD (Zhao et al. 2022): target and non-target terms weighted by dkd_alpha / dkd_beta
    # DKD as the paper trains it: CE at weight 1 (alpha is not used) plus DKD ramped up linearly over the first
    # DKD_WARMUP_FRACTION of training (20 of 240 epochs in the paper's CIFAR-100 recipe).
    DKD_PAPER = "dkd_paper"


LOSSES: tuple[str, ...] = tuple(loss.value for loss in Loss)
DKD_WARMUP_FRACTION = 20 / 240  # Zhao et al. 2022, CIFAR-100: DKD's weight reaches 1 after 20 of 240 epochs
