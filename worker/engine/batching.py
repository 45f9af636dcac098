"""How batches are drawn and moved: length bucketing and trimming for token ids, pinned host copies.

Text batches padded to max_length spend most of their compute on padding (short descriptions average a
handful of tokens). When the student says how far past the last real token its output can look
(`length_margin`), each batch is cut to its longest sequence plus that margin, and batches are formed
from rows of similar length: within shuffled chunks of BUCKET_CHUNK batches the rows are sorted by
length, cut into batches, and the full batches are shuffled. All of it is a function of the epoch's
permutation and generator, so runs stay reproducible and resumable bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

BUCKET_CHUNK = 50  # batches per sorted chunk: similar lengths, yet still a random mix across the epoch
WIDTH_MULTIPLE = 8  # round trimmed widths up: fewer distinct shapes for cuDNN and torch.compile


def trim_margin(model: nn.Module, x: torch.Tensor, pad_id: int | None) -> int | None:
    """Pad columns past the longest real sequence that `model` still reads, or None: do not trim."""
    if pad_id is None or x.is_floating_point() or x.ndim != 2:
        return None
    margin = getattr(model, "length_margin", None)
    if not isinstance(margin, int) or isinstance(margin, bool) or margin < 0:
        return None  # uploaded students and bidirectional recurrences see every column
    return margin


def used_lengths(x: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Per row, one past the last non-pad column (right padding; interior pads count as used), on the CPU."""
    positions = torch.arange(1, x.shape[1] + 1, device=x.device)
    return ((x != pad_id) * positions).amax(1).cpu()


def bucket_by_length(
    perm: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Reorder `perm` so that consecutive batch_size slices hold rows of similar length.

    Rows are sorted by length within chunks of BUCKET_CHUNK batches (stable, so ties keep the shuffled
    order); the full batches are then shuffled with `generator`, and a final partial batch stays last.
    """
    chunk = batch_size * BUCKET_CHUNK
    batches: list[torch.Tensor] = []
    for start in range(0, len(perm), chunk):
        part = perm[start : start + chunk]
        order = torch.sort(lengths[part], stable=True).indices
        batches.extend(part[order].split(batch_size))
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return torch.cat(shuffled + tail) if shuffled or tail else perm


def batch_width(
    lengths: torch.Tensor, index: torch.Tensor, margin: int, full: int, multiple: int = WIDTH_MULTIPLE
) -> int:
    """Columns a batch needs: its longest row plus the margin, rounded up, at most the full width."""
    longest = max(1, int(lengths[index].max()) + margin)
    return min(full, -(-longest // multiple) * multiple)


def fetch(source: torch.Tensor, index: torch.Tensor, device: str, width: int | None = None) -> torch.Tensor:
    """Rows `index` of `source` (first `width` columns) on `device`.

    Data kept on the host is gathered into pinned memory and copied without blocking the host.
    """
    rows = source[index] if width is None else source[index, :width]
    if rows.device.type == "cpu" and str(device).startswith("cuda"):
        return rows.pin_memory().to(device, non_blocking=True)
    return rows.to(device, non_blocking=True)
