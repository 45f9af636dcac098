"""The distillation losses a job can ask for, by the name the configuration uses."""

from __future__ import annotations

from enum import StrEnum


class Loss(StrEnum):
    KL = "kl"  # Hinton et al. 2015: KL to the teacher's softened outputs, scaled by T^2
    MSE = "mse"  # mean squared error between the logits (Ba & Caruana 2014)
    DKD = "dkd"  # Decoupled KD (Zhao et al. 2022): target and non-target terms weighted by dkd_alpha / dkd_beta


LOSSES: tuple[str, ...] = tuple(loss.value for loss in Loss)
