"""Batch augmentations. All randomness comes from the per-epoch generator so runs stay reproducible."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def augment_batch(
    x: torch.Tensor, y: torch.Tensor | None, num_classes: int, settings: dict, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply noise / mixup (float inputs) or token dropout (token ids); y becomes soft targets after mixup."""
    if x.is_floating_point():
        noise = float(settings.get("noise", 0.0))
        if noise > 0:
            x = x + noise * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        mixup = float(settings.get("mixup", 0.0))
        if mixup > 0 and x.shape[0] > 1:
            # Beta draw seeded from our generator, which torch.distributions cannot take.
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            lam = float(np.random.default_rng(seed).beta(mixup, mixup))
            order = torch.randperm(x.shape[0], generator=generator).to(x.device)
            x = lam * x + (1 - lam) * x[order]
            if y is not None:
                one_hot = F.one_hot(y, num_classes).float() if y.ndim == 1 else y
                y = lam * one_hot + (1 - lam) * one_hot[order]
    else:
        rate = float(settings.get("token_dropout", 0.0))
        if rate > 0:
            # Drop real tokens to the pad id 0; padding stays padding.
            drop = (torch.rand(x.shape, generator=generator) < rate).to(x.device) & (x != 0)
            x = x.masked_fill(drop, 0)
    return x, y
