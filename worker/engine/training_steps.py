"""Pieces of the training loop: batches, the learning-rate schedule, validation, progress events, compile."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from worker.engine.augment import augment_batch
from worker.engine.batching import batch_width, bucket_by_length, fetch, trim_margin, used_lengths
from worker.engine.config import DistillConfig, ProgressEvent
from worker.engine.ranks import SINGLE, Ranks

if TYPE_CHECKING:
    from worker.engine.augmented_cache import AugmentedOutputs
    from worker.engine.loop import Split

PROGRESS_EVERY_S = 1.0

# Settings that change the trajectory: a checkpoint written under other values cannot be resumed.
RESUME_KEYS = (
    "student",
    "epochs",
    "batch_size",
    "learning_rate",
    "temperature",
    "alpha",
    "loss",
    "dkd_alpha",
    "dkd_beta",
    "seed",
    "patience",
    "weight_decay",
    "warmup_fraction",
    "grad_clip",
    "augmentation",
)


class Batches:
    """The training rows as each epoch's batches, on the training device, with the teacher's logits for them.

    Shuffled with a generator seeded per epoch; for token ids with a student that ignores trailing padding,
    rows are bucketed by length and each batch is trimmed. When augmenting, the teacher runs on each
    augmented batch; otherwise its cached logits are gathered.
    """

    def __init__(
        self,
        train: Split,
        model: nn.Module,
        config: DistillConfig,
        device: str,
        *,
        teacher: Callable | None,
        num_classes: int,
        pad_id: int | None,
        mask_id: int | None,
        channels_last: bool,
        augmented: AugmentedOutputs | None = None,
        ranks: Ranks = SINGLE,
    ):
        self.train, self.config, self.device, self.teacher, self.ranks = train, config, device, teacher, ranks
        self.augmented = augmented  # the auto recipe's cache of teacher outputs on augmented batches
        self.num_classes, self.pad_id, self.mask_id, self.channels_last = num_classes, pad_id, mask_id, channels_last
        self.rows = len(train.x)
        self.per_epoch = math.ceil(self.rows / config.batch_size)
        self.margin = trim_margin(model, train.x, pad_id)
        self.lengths = used_lengths(train.x, pad_id) if self.margin is not None and pad_id is not None else None
        self.full_width = int(train.x.shape[1]) if train.x.ndim > 1 else 0

    def shuffle(self, epoch: int) -> tuple[torch.Generator, torch.Tensor]:
        """The epoch's generator (it also drives augmentation) and its order of rows."""
        # Seeded per epoch, so the order never depends on how many times the run was interrupted.
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        perm = torch.randperm(self.rows, generator=generator)
        if self.lengths is not None:
            perm = bucket_by_length(perm, self.lengths, self.config.batch_size, generator)
        return generator, perm

    def begin_epoch(self, epoch: int, perm: torch.Tensor) -> None:
        """Tell the augmented-output cache which epoch (and order of rows) the next batches belong to."""
        if self.augmented is not None and self.config.augmenting:
            self.augmented.begin_epoch(epoch, perm, self.per_epoch)

    def batch(
        self, index: torch.Tensor, stored: torch.Tensor, generator: torch.Generator, step: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, float]:
        """(x, y, teacher logits, weight) of this rank's share of rows `index`, batch `step` of the epoch
        (`stored`: the indices where the data lives). `weight` scales the share's mean loss so that the ranks'
        averaged gradients are those of the whole batch's mean loss (1 in a single process)."""
        part, weight = self._share(len(index))
        if not self.config.augmenting:
            return (*self._clean(index[part], stored[part]), weight)
        train, device = self.train, self.device
        # The whole batch is augmented on every rank: the same random stream (and mixup pairs) as one process.
        y = None if train.y is None else fetch(train.y, stored, device)
        x = fetch(train.x, stored, device)
        settings = self.config.augmentation
        assert settings is not None  # augmenting
        x, y = augment_batch(x, y, self.num_classes, settings, generator, self.pad_id or 0, self.mask_id)
        # The teacher sees the same augmented batch, full width (through the cache when there is one).
        if self.augmented is not None:
            teacher_logits = self.augmented(step, x).to(device)[part]
        else:
            assert self.teacher is not None  # the teacher runs online when augmenting
            teacher_logits = self.teacher(x[part]).to(device)
        x, y = x[part], None if y is None else y[part]
        width = self._width(index)  # the whole batch's: mixing may have brought in another row's tokens
        if width is not None:
            x = x[:, :width]
        return self._layout(x), y, teacher_logits, weight

    def _share(self, rows: int) -> tuple[slice, float]:
        """This rank's rows of a batch of `rows`, and the weight of its mean loss."""
        if not self.ranks.active:
            return slice(None), 1.0
        part = self.ranks.share(rows)
        count = len(range(rows)[part])
        # A last batch smaller than the ranks leaves some without a row: they step on one row weighted zero.
        return (part, count * self.ranks.world / rows) if count else (slice(0, 1), 0.0)

    def _width(self, index: torch.Tensor) -> int | None:
        if self.lengths is None or self.margin is None:
            return None
        return batch_width(self.lengths, index, self.margin, self.full_width)

    def _clean(self, index: torch.Tensor, stored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, Tensor]:
        train, device = self.train, self.device
        y = None if train.y is None else fetch(train.y, stored, device)
        x = fetch(train.x, stored, device, self._width(index))
        assert train.teacher_logits is not None  # cached when not augmenting
        return self._layout(x), y, fetch(train.teacher_logits, stored, device)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class ProgressClock:
    """Progress events: at most one every PROGRESS_EVERY_S within an epoch, and one as each epoch ends."""

    def __init__(self, emit: Callable[[ProgressEvent], None], epochs: int, total_steps: int):
        self.emit, self.epochs, self.total_steps = emit, epochs, total_steps
        self.last = time.monotonic()

    def step(self, epoch: int, global_step: int) -> None:
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.last = time.monotonic()
            self.emit(progress_event(epoch, self.epochs, global_step, self.total_steps))

    def epoch_end(self, epoch: int, global_step: int) -> None:
        self.last = time.monotonic()
        self.emit(progress_event(epoch, self.epochs, global_step, self.total_steps, epoch_end=True))


def lr_at(step: int, total_steps: int, base_lr: float, warmup_fraction: float) -> float:
    """Linear warmup then cosine decay to zero."""
    warmup = int(warmup_fraction * total_steps)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, device: str, batch_size: int = 1024) -> tuple[float | None, float | None]:
    """(accuracy, agreement with the teacher's argmax) of `model` on `split`; None where not measurable."""
    model.eval()
    preds = torch.cat(
        [model(split.x[i : i + batch_size].to(device)).argmax(1) for i in range(0, len(split.x), batch_size)]
    )
    accuracy = agreement = None
    if split.y is not None:
        accuracy = (preds == split.y.to(device)).float().mean().item()
    if split.teacher_logits is not None:
        agreement = (preds == split.teacher_logits.to(device).argmax(1)).float().mean().item()
    return accuracy, agreement


def progress_event(epoch: int, epochs: int, step: int, total_steps: int, epoch_end: bool = False) -> ProgressEvent:
    fraction = step / total_steps if total_steps else 1.0
    data = {
        "epoch": epoch + 1,
        "epochs": epochs,
        "step": step,
        "total_steps": total_steps,
        "fraction": round(fraction, 4),
    }
    word = "finished" if epoch_end else "in"
    return ProgressEvent("progress", f"{word} epoch {epoch + 1}/{epochs}, step {step}/{total_steps}", data)


def same_run(meta: dict, config: DistillConfig) -> bool:
    saved = meta.get("config", {})
    current = config.to_dict()
    return all(saved.get(k) == current[k] for k in RESUME_KEYS)


class CompiledForward:
    """`model(x)`, through torch.compile when config.compile asks for it, falling back to eager mode.

    torch.compile compiles lazily, so most failures (no C++ compiler, an unsupported op, a backend
    bug) surface at the first call, not at torch.compile(): both are caught, a warning event says so,
    and training continues uncompiled. The RNG state is restored before the eager retry, so a failed
    attempt leaves no trace in the run.
    """

    def __init__(self, model: nn.Module, config: DistillConfig, progress=None):
        self.model = model
        self.progress = progress
        self.compiled = None
        self.proven = False  # one successful compiled step: later shapes may still recompile and fail
        if config.compile:
            try:
                self.compiled = torch.compile(model)
            except Exception as exc:  # compilation is an optimisation; never fail a job over it
                self._fall_back(exc)

    def _fall_back(self, exc: Exception) -> None:
        self.compiled = None
        message = f"torch.compile failed, training uncompiled: {type(exc).__name__}: {exc}"
        if self.progress:
            self.progress(ProgressEvent("warning", message.splitlines()[0][:500], {"compile": False}))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.model(x)
        cpu_state = cuda_state = None
        if not self.proven:  # failures come at the first call: keep the RNG state to undo it
            cpu_state = torch.get_rng_state()
            cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        try:
            out = self.compiled(x)
            self.proven = True
            return out
        except Exception as exc:
            self._fall_back(exc)
            if cpu_state is not None:
                torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
            return self.model(x)


def maybe_compile(model: nn.Module, config: DistillConfig, progress) -> Callable:
    """The student's forward pass, compiled when asked and possible (see CompiledForward)."""
    return CompiledForward(model, config, progress)
