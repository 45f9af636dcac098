"""On-policy distillation of a causal LM, as GKD (Agarwal et al. 2024): after a warm start on the data, each batch
is, with probability `on_policy_fraction` (GKD's lambda), the student's own samples for the batch's prompts,
scored token by token by the teacher run on those very sequences; otherwise it is the data's completions.

Why: a student trained only on fixed completions never sees its own mistakes, and at generation time it conditions
on its own tokens (the train/inference mismatch GKD addresses). Reverse KL, the default objective, is mode-seeking:
it penalises the student for tokens the teacher finds unlikely rather than asking it to cover all the teacher's mass.
A student that has never seen the task samples nonsense that the teacher's judgement fixes slowly, so the first
`warm_start_epochs` train by forward KL (with the data's cross-entropy) on the data, as GKD starts from an SFT model.

The samples' loss is the divergence alone, on the generated tokens up to and including the first EOS: the prompt,
the padding and what generate writes after EOS are masked out, and no cross-entropy is taken on the student's own
tokens (that would only reinforce them).

The report says how many batches were the student's samples and how many the data's (BatchTally, per epoch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from worker.engine.errors import EngineError
from worker.engine.lm_data import LMBatch
from worker.engine.lm_losses import OBJECTIVES, token_kd_loss

logger = logging.getLogger(__name__)

SAMPLED = "on_policy_samples"  # the step method of a batch that holds the student's own samples


@dataclass
class BatchTally:
    """An on_policy training's batches per epoch: the student's own samples, and the data's completions (the warm
    start's included)."""

    sampled: list[int] = field(default_factory=list)
    data: list[int] = field(default_factory=list)

    def add(self, epoch: int, sampled: bool) -> None:
        """Count one batch of epoch `epoch` (from 0)."""
        while len(self.sampled) <= epoch:
            self.sampled.append(0)
            self.data.append(0)
        (self.sampled if sampled else self.data)[epoch] += 1

    def totals(self) -> dict[str, int]:
        """The batches so far: sampled_batches (the student's samples) and data_batches."""
        return {"sampled_batches": sum(self.sampled), "data_batches": sum(self.data)}

    def summary(self, settings) -> dict:
        """The report's on_policy section: the totals, each epoch's, and the settings that drew them."""
        epochs = [{"epoch": i + 1, "sampled_batches": s, "data_batches": d}
                  for i, (s, d) in enumerate(zip(self.sampled, self.data, strict=True))]  # fmt: skip
        fraction, warm = settings.on_policy_fraction, settings.warm_start_epochs
        return {**self.totals(), "per_epoch": epochs, "fraction": fraction, "warm_start_epochs": warm}


class OnPolicy:
    """Per batch, chooses the data's completions or the student's samples (GKD's lambda); counts both in `tally`."""

    def __init__(self, settings, max_new_tokens: int, tally: BatchTally | None = None):
        if settings.on_policy_objective not in OBJECTIVES:
            raise EngineError("invalid_config", f"on_policy_objective must be one of {OBJECTIVES}")
        if not 0 <= settings.on_policy_fraction <= 1 or settings.warm_start_epochs < 0 or max_new_tokens < 1:
            raise EngineError("invalid_config", "on_policy needs a fraction in [0, 1], warm_start_epochs >= 0 and "
                              "max_new_tokens >= 1")  # fmt: skip
        self.settings, self.max_new_tokens = settings, max_new_tokens
        # A generator of its own, so that the batch order is the other methods' (lambda 0 is forward KL exactly).
        self.coin = torch.Generator().manual_seed(settings.seed + 1)
        self.tally = tally if tally is not None else BatchTally()  # the caller's, to report it
        self.epoch = 0  # set by the training loop as each epoch begins

    def next_batch(self, student, batch: LMBatch) -> tuple[str, LMBatch]:
        """(the step's method, its batch): forward_kl while warming up, then SAMPLED with the student's samples or
        the objective on the data's completions."""
        if self.epoch < self.settings.warm_start_epochs:
            self.tally.add(self.epoch, sampled=False)
            return "forward_kl", batch
        if float(torch.rand((), generator=self.coin)) >= self.settings.on_policy_fraction:
            self.tally.add(self.epoch, sampled=False)
            return self.settings.on_policy_objective, batch
        self.tally.add(self.epoch, sampled=True)
        seed = self.settings.seed * 1_000_003 + sum(self.tally.sampled)  # this batch's number among the sampled
        return SAMPLED, sample_completions(student, batch, self.max_new_tokens, seed)


def sampled_loss(student, teacher, batch: LMBatch, settings) -> torch.Tensor:
    """The objective between student and teacher on the sampled tokens of `batch` (from sample_completions)."""
    attention = batch.attention.long()
    logits = student(input_ids=batch.ids, attention_mask=attention).logits[:, :-1]
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch.ids, attention_mask=attention).logits[:, :-1]
    _, mask = batch.targets()
    objective = settings.on_policy_objective
    return token_kd_loss(logits, teacher_logits, mask, objective, settings.temperature, settings.beta)


def _special_ids(model) -> tuple[int, list[int]]:
    """(pad id, EOS ids) from the model's config; pad falls back to the first EOS, then 0."""
    eos = getattr(model.config, "eos_token_id", None)
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad if pad is not None else (eos_ids[0] if eos_ids else 0)), eos_ids


def prompts_of(batch: LMBatch) -> list[torch.Tensor]:
    """Each row's prompt tokens: its real tokens outside the completion (encode puts the prompt first)."""
    return [row[real & ~done] for row, real, done in zip(batch.ids, batch.attention, batch.completion, strict=True)]


@torch.no_grad()
def sample_completions(model, batch: LMBatch, max_new_tokens: int, seed: int) -> LMBatch:
    """The batch's prompts, each followed by one sample of `model` (temperature 1, no top-k or top-p cut, up to
    its first EOS or max_new_tokens), right-padded as the data's batches, the sampled tokens marked as completion."""
    pad, eos_ids = _special_ids(model)
    prompts = prompts_of(batch)
    width = max(1, max(len(p) for p in prompts))
    # Left-padded for generation, so that every row's new tokens start at the same column.
    ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=batch.ids.device)
    attention = torch.zeros_like(ids)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = prompt
        attention[i, width - len(prompt) :] = 1
    was_training = model.training
    model.eval()
    device = batch.ids.device
    # Seeded in a forked RNG, so that sampling neither depends on nor disturbs the training's random stream.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        generated = model.generate(
            input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens, do_sample=True,
            temperature=1.0, top_k=0, top_p=1.0, pad_token_id=pad, eos_token_id=eos_ids or None,
        )  # fmt: skip
    model.train(was_training)
    samples = [_until_eos(row, eos_ids) for row in generated[:, width:]]
    return _right_padded(prompts, samples, pad)


def _until_eos(row: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """The sampled tokens up to and including the first EOS: generate pads a finished row after it."""
    if eos_ids:
        ends = torch.isin(row, torch.tensor(eos_ids, device=row.device)).nonzero()
        if len(ends):
            return row[: int(ends[0]) + 1]
    return row


def _right_padded(prompts: list[torch.Tensor], samples: list[torch.Tensor], pad: int) -> LMBatch:
    length = max(len(p) + len(s) for p, s in zip(prompts, samples, strict=True))
    device = samples[0].device
    batch = LMBatch(
        torch.full((len(prompts), length), pad, dtype=torch.long, device=device),
        torch.zeros(len(prompts), length, dtype=torch.bool, device=device),
        torch.zeros(len(prompts), length, dtype=torch.bool, device=device),
    )
    for i, (prompt, sample) in enumerate(zip(prompts, samples, strict=True)):
        end = len(prompt) + len(sample)
        batch.ids[i, :end] = torch.cat([prompt, sample])
        batch.attention[i, :end] = True
        batch.completion[i, len(prompt) : end] = True
    return batch
