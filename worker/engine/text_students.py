"""Built-in text students (lstm, textcnn, transformer) over int64 token ids [B, L]."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from contract.students import ARCHITECTURES, TEXT_ARCHITECTURES

logger = logging.getLogger(__name__)

# Each text architecture's size parameters and their defaults, from the contract's table.
_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {p.name: p.default for p in ARCHITECTURES[name].parameters} for name in TEXT_ARCHITECTURES
}
_COMMON = {"architecture", "pad_id"}


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class LSTMStudent(nn.Module):
    """Embedding + LSTM with pad-aware pooling (masked mean or last valid state; right padding).

    `length_margin` tells the training loop how many pad columns past the longest sequence of a batch
    the output depends on: 0 for a forward LSTM (trailing padding never reaches earlier states), -1
    (never trim) for a bidirectional one, whose backward pass starts in the padding.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        pad_id: int,
        embedding_dim: int,
        hidden_dim: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        pooling: str,
    ):
        super().__init__()
        self.pad_id = pad_id
        self.length_margin = -1 if bidirectional else 0
        self.last = pooling == "last"
        self.hidden_dim = hidden_dim
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x != self.pad_id
        out, _ = self.lstm(self.embedding(x))
        if self.last:
            idx = (mask.sum(1) - 1).clamp(min=0)
            idx = idx.view(-1, 1, 1).expand(-1, 1, out.shape[2])
            pooled = out.gather(1, idx).squeeze(1)
            if self.bidirectional:
                pooled = torch.cat([pooled[:, : self.hidden_dim], out[:, 0, self.hidden_dim :]], dim=1)
        else:
            pooled = _masked_mean(out, mask)
        return self.head(self.dropout(pooled))


class TextCNNStudent(nn.Module):
    """Kim (2014) CNN: parallel 1-D convolutions, masked max-over-time pooling.

    A window that starts on a real token may reach max(kernel_sizes) - 1 columns into the padding.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        pad_id: int,
        embedding_dim: int,
        num_filters: int,
        kernel_sizes: list[int],
        dropout: float,
    ):
        super().__init__()
        self.pad_id = pad_id
        self.length_margin = max(kernel_sizes) - 1
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, num_filters, k) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_filters * len(kernel_sizes), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x).transpose(1, 2)
        valid = (x != self.pad_id).to(e.dtype)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(e))  # [B, F, L-k+1]; ReLU >= 0, so zeroing masks windows out
            start_valid = valid[:, : h.shape[2]].unsqueeze(1)
            pooled.append((h * start_valid).amax(dim=2))
        return self.head(self.dropout(torch.cat(pooled, dim=1)))


class _EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block with hand-written masked attention."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, seq, d = h.shape
        qkv = self.qkv(self.norm1(h)).view(b, seq, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).masked_fill(pad, -1e4)
        att = self.dropout(torch.softmax(scores, dim=-1)) @ v  # [B, H, L, Dh]
        h = h + self.dropout(self.proj(att.transpose(1, 2).reshape(b, seq, d)))
        return h + self.dropout(self.ff(self.norm2(h)))


class TransformerStudent(nn.Module):
    """Small transformer encoder: learned positions, padding mask, masked mean pool (pad keys masked,
    so trailing padding can be trimmed: length_margin 0)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        pad_id: int,
        max_length: int,
        d_model: int,
        layers: int,
        heads: int,
        ff_dim: int,
        dropout: float,
    ):
        super().__init__()
        self.pad_id = pad_id
        self.length_margin = 0
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.positions = nn.Parameter(torch.randn(1, max_length, d_model) * 0.02)
        self.blocks = nn.ModuleList(_EncoderBlock(d_model, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x != self.pad_id
        # Pad keys get score -1e4 (not -inf): all-pad rows stay finite, and fp16/bf16 can hold it.
        pad = (~mask).view(x.shape[0], 1, 1, x.shape[1])
        h = self.dropout(self.embedding(x) + self.positions[:, : x.shape[1]])
        for block in self.blocks:
            h = block(h, pad)
        return self.head(_masked_mean(self.norm(h), mask))


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def resolve_text_student(spec: dict) -> dict:
    """Fill defaults into a text student spec and check its keys and values."""
    arch = spec.get("architecture")
    if arch not in _DEFAULTS:
        raise ValueError(f"unknown text architecture {arch!r}; choose one of {list(TEXT_ARCHITECTURES)}")
    unknown = sorted(set(spec) - set(_DEFAULTS[arch]) - _COMMON)
    if unknown:
        raise ValueError(f"unknown {arch} parameter(s) {unknown}; allowed: {sorted(_DEFAULTS[arch])}")
    p = {**_DEFAULTS[arch], **{k: v for k, v in spec.items() if k != "architecture"}}
    p["pad_id"] = _check_int("pad_id", p.get("pad_id", 0), 0)
    p["dropout"] = _check_dropout(p["dropout"])
    if arch == "lstm":
        for k in ("embedding_dim", "hidden_dim", "num_layers"):
            _check_int(k, p[k])
        if not isinstance(p["bidirectional"], bool):
            raise ValueError(f"bidirectional must be true or false, got {p['bidirectional']!r}")
        if p["pooling"] not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {p['pooling']!r}")
    elif arch == "textcnn":
        for k in ("embedding_dim", "num_filters"):
            _check_int(k, p[k])
        ks = p["kernel_sizes"]
        if not isinstance(ks, (list, tuple)) or not ks:
            raise ValueError(f"kernel_sizes must be a non-empty list of integers, got {ks!r}")
        p["kernel_sizes"] = [_check_int("kernel_sizes entry", k) for k in ks]
    else:
        for k in ("d_model", "layers", "heads"):
            _check_int(k, p[k])
        if p["d_model"] % p["heads"]:
            raise ValueError(f"d_model ({p['d_model']}) must be divisible by heads ({p['heads']})")
        p["ff_dim"] = _check_int("ff_dim", 4 * p["d_model"] if p["ff_dim"] is None else p["ff_dim"])
    return {"architecture": arch, **p}


def build_text_student(spec: dict, input_shape: list[int], num_classes: int, vocab_size: int) -> nn.Module:
    """Build a text student taking int64 ids [B, L] and returning logits [B, num_classes]."""
    p = resolve_text_student(spec)
    if not input_shape:
        raise ValueError("text students need an input shape [max_length]")
    length = _check_int("max_length (input_shape[-1])", int(input_shape[-1]))
    _check_int("num_classes", num_classes)
    _check_int("vocab_size", vocab_size)
    if p["pad_id"] >= vocab_size:
        raise ValueError(f"pad_id {p['pad_id']} is outside the vocabulary of {vocab_size} ids")
    arch, pad = p["architecture"], p["pad_id"]
    if arch == "lstm":
        model: nn.Module = LSTMStudent(
            vocab_size,
            num_classes,
            pad,
            p["embedding_dim"],
            p["hidden_dim"],
            p["num_layers"],
            p["bidirectional"],
            p["dropout"],
            p["pooling"],
        )
    elif arch == "textcnn":
        if max(p["kernel_sizes"]) > length:
            raise ValueError(f"kernel size {max(p['kernel_sizes'])} is longer than max_length {length}")
        model = TextCNNStudent(
            vocab_size,
            num_classes,
            pad,
            p["embedding_dim"],
            p["num_filters"],
            p["kernel_sizes"],
            p["dropout"],
        )
    else:
        model = TransformerStudent(
            vocab_size,
            num_classes,
            pad,
            length,
            p["d_model"],
            p["layers"],
            p["heads"],
            p["ff_dim"],
            p["dropout"],
        )
    logger.debug("built %s text student with %d parameters", arch, sum(t.numel() for t in model.parameters()))
    return model
