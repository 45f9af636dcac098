"""Batch augmentations. All randomness comes from the per-epoch generator so runs stay reproducible."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def augment_batch(
    x: torch.Tensor,
    y: torch.Tensor | None,
    num_classes: int,
    settings: dict,
    generator: torch.Generator,
    pad_id: int = 0,
    mask_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply noise / mixup (float inputs) or token dropout / masking (token ids).

    y becomes soft targets after mixup. Token dropout turns a real token into padding (the students
    pool over real tokens only, so the word is gone); token masking writes `mask_id` ([MASK], else the
    unknown token) in its place. Random draws happen on the CPU generator and travel without a sync.
    """
    if x.is_floating_point():
        noise = float(settings.get("noise", 0.0))
        if noise > 0:
            x = x + noise * torch.randn(x.shape, generator=generator).to(x.device, x.dtype, non_blocking=True)
        mixup = float(settings.get("mixup", 0.0))
        if mixup > 0 and x.shape[0] > 1:
            # Beta draw seeded from our generator, which torch.distributions cannot take.
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            lam = float(np.random.default_rng(seed).beta(mixup, mixup))
            order = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)
            x = lam * x + (1 - lam) * x[order]
            if y is not None:
                one_hot = F.one_hot(y, num_classes).float() if y.ndim == 1 else y
                y = lam * one_hot + (1 - lam) * one_hot[order]
    else:
        real = x != pad_id  # padding stays padding
        rate = float(settings.get("token_dropout", 0.0))
        if rate > 0:
            drop = (torch.rand(x.shape, generator=generator) < rate).to(x.device, non_blocking=True) & real
            x = x.masked_fill(drop, pad_id)
        rate = float(settings.get("token_mask", 0.0))
        if rate > 0:
            fill = pad_id if mask_id is None else mask_id
            mask = (torch.rand(x.shape, generator=generator) < rate).to(x.device, non_blocking=True) & real
            x = x.masked_fill(mask & (x != pad_id), fill)
    return x, y
