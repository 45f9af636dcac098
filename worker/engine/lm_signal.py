"""The teacher's signal, computed once per (teacher, data, settings) and reused by every later student.

Stored under the cache folder by a key that hashes the teacher archive's sha256, the data's content and the
settings that shape the signal: per-token top-k log-probabilities plus the tail mass (safetensors, never a
pickle), the teacher's generations (JSON), and the teacher's held-out figures. Every teacher forward pass goes
through a counting hook, so a job can say how many it made: zero when everything came from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable

import torch

from worker.engine.atomic import save_json
from worker.engine.lm_data import LMBatch
from worker.engine.lm_losses import topk_of_log_probs
from worker.engine.lm_train import first_loss_position, next_token_logits

logger = logging.getLogger(__name__)


class ForwardCounter:
    """Counts forward passes of a module (each generated token's step is one) through a forward hook."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_args) -> None:
        self.count += 1


def signal_key(teacher_sha256: str, kind: str, content: object, settings: dict) -> str:
    """A hex key for one signal: the teacher, what kind, the data it covers and the settings that shape it."""
    text = json.dumps([teacher_sha256, kind, content, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SignalCache:
    """A folder of signals by key; `hits`, `misses` and `bytes_written` say what this job used and spent."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.bytes_written = 0

    def _path(self, key: str, suffix: str) -> str:
        return os.path.join(self.root, key + suffix)

    def json(self, key: str, compute: Callable[[], object]):
        """The JSON value stored under `key`, computed and stored first when absent."""
        path = self._path(key, ".json")
        if os.path.exists(path):
            self.hits += 1
            with open(path, encoding="utf-8") as f:
                return json.load(f)["value"]
        self.misses += 1
        value = compute()
        save_json(self.root, key + ".json", {"value": value})
        self.bytes_written += os.path.getsize(path)
        return value

    def tensors(self, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The tensors stored under `key` (safetensors), computed and stored first when absent."""
        from safetensors.torch import load_file, save_file

        path = self._path(key, ".safetensors")
        if os.path.exists(path):
            self.hits += 1
            return load_file(path)
        self.misses += 1
        value = {name: t.contiguous().cpu() for name, t in compute().items()}
        partial = path + ".partial"
        save_file(value, partial)
        os.replace(partial, path)  # a crash mid-write never leaves a truncated signal under the real name
        self.bytes_written += os.path.getsize(path)
        return value

    def size(self) -> int:
        """Bytes the whole cache folder holds."""
        return sum(os.path.getsize(os.path.join(self.root, n)) for n in os.listdir(self.root))


@torch.no_grad()
def teacher_topk(model, batch: LMBatch, k: int, temperature: float, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The teacher's top-k + tail log-probabilities at every position a loss reads: indices [N, L-1, k] (int16
    under 32,768 tokens of vocabulary, else int32), log_probs [N, L-1, k+1] (float32), its log-probability of the
    actual next token [N, L-1] and where the completion's tokens are (completion_mask [N, L-1]); zeros elsewhere."""
    model.eval()
    device = next(model.parameters()).device
    n, width = batch.ids.shape[0], max(0, batch.ids.shape[1] - 1)
    out = _empty_signal(n, width, k, int(model.config.vocab_size))
    # Rows in order of length, each batch cut to its longest row: a causal model's outputs at the real positions
    # do not depend on the right padding, so the padding is not computed at all. Only the completion's positions
    # are read by a loss or a figure (LMBatch.targets' mask): the prompt's are neither projected onto the
    # vocabulary nor ranked (on the LM fixture, with the tail below, 0.69 s -> 0.58 s for the pass).
    order = torch.argsort(batch.attention.sum(1), stable=True)
    for rows in order.split(batch_size):
        part = batch.rows(rows)
        targets, mask = part.targets()
        if not bool(mask.any()):
            continue
        skip = first_loss_position(part)
        device_part = LMBatch(part.ids.to(device), part.attention.to(device), part.completion.to(device))
        where = mask[:, skip:].nonzero(as_tuple=True)
        logits = next_token_logits(model, device_part, skip).float()[where[0].to(device), where[1].to(device)]  # [P, V]
        log_probs = torch.log_softmax(logits / temperature, -1)
        idx, lp = topk_of_log_probs(log_probs, k)
        plain = log_probs if temperature == 1 else torch.log_softmax(logits, -1)
        real = targets[:, skip:][where].to(device)
        at = (rows[where[0]], where[1] + skip)
        out["indices"][at] = idx.to(out["indices"].dtype).cpu()
        out["log_probs"][at] = lp.cpu()
        out["target_log_probs"][at] = plain.gather(-1, real[:, None])[:, 0].cpu()
    out["completion_mask"] = batch.targets()[1].to(torch.uint8)
    return out


def index_dtype(vocab: int) -> torch.dtype:
    """The narrowest signed integer that holds every token id (safetensors and indexing take int16)."""
    return torch.int16 if vocab <= torch.iinfo(torch.int16).max + 1 else torch.int32


def _empty_signal(rows: int, width: int, k: int, vocab: int) -> dict[str, torch.Tensor]:
    k = min(k, vocab)  # k is at most the vocabulary's size
    return {
        "indices": torch.zeros(rows, width, k, dtype=index_dtype(vocab)),
        "log_probs": torch.zeros(rows, width, k + 1),
        "target_log_probs": torch.zeros(rows, width),
    }


def estimate_bytes(rows: int, length: int, k: int, vocab: int | None = None) -> int:
    """What a top-k signal over rows x length positions stores: the indices (int16 under 32,768 tokens of
    vocabulary, int32 above or when the vocabulary is not given), float32 log-probs, the target."""
    index = index_dtype(vocab).itemsize if vocab else 4
    return rows * max(0, length - 1) * (index * k + 4 * (k + 1) + 4)
