"""Greedy generation, the generation comparison (exact match, ROUGE-L) and generation speed of a causal LM."""

from __future__ import annotations

import statistics
import time

import torch

from worker.engine.lm_data import encode_prompts

PROMPT_TOKENS = 256  # prompts are cut to their last PROMPT_TOKENS tokens for generation


@torch.no_grad()
def greedy(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 32, sample_seed: int | None = None
) -> list[str]:
    """Each prompt's greedy continuation (decoded, special tokens dropped), up to EOS or max_new_tokens; with
    `sample_seed`, one sample from the model's own distribution instead (temperature 1, no top-k or top-p cut,
    so the samples stay unbiased)."""
    model.eval()
    device = next(model.parameters()).device
    sampling: dict = {"do_sample": False}
    if sample_seed is not None:
        torch.manual_seed(sample_seed)
        sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        ids, attention = encode_prompts(tokenizer, prompts[start : start + batch_size], PROMPT_TOKENS)
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling,
        )  # fmt: skip
        new = generated[:, ids.shape[1] :].cpu()
        out.extend(tokenizer.decode(row, skip_special_tokens=True).strip() for row in new)
    return out


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over whitespace words (Lin 2004): from the longest common subsequence's length."""
    a, b = candidate.split(), reference.split()
    if not a or not b:
        return float(a == b)
    previous = [0] * (len(b) + 1)
    for word in a:
        row = [0]
        for j, other in enumerate(b):
            row.append(previous[j] + 1 if word == other else max(previous[j + 1], row[j]))
        previous = row
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def compare_generations(student: list[str], teacher: list[str], prompts: list[str], samples: int = 5) -> dict:
    """Exact match and mean ROUGE-L of the student's generations against the teacher's, with a few side by side."""
    scores = [rouge_l(s, t) for s, t in zip(student, teacher, strict=True)]
    return {
        "prompts": len(prompts),
        "exact_match": sum(s == t for s, t in zip(student, teacher, strict=True)) / max(1, len(prompts)),
        "rouge_l": sum(scores) / max(1, len(scores)),
        "samples": [
            {"prompt": p, "teacher": t, "student": s}
            for p, t, s in list(zip(prompts, teacher, student, strict=True))[:samples]
        ],
    }


@torch.no_grad()
def generation_speed(model, tokenizer, prompts: list[str], new_tokens: int = 32, repeats: int = 5) -> dict:
    """Tokens per second at batch 1 and 32 (greedy, exactly `new_tokens` each), and batch-1 latency p50/p95 (ms)."""
    model.eval()
    device = next(model.parameters()).device

    def run(batch: list[str]) -> float:
        ids, attention = encode_prompts(tokenizer, batch, PROMPT_TOKENS)
        start = time.perf_counter()
        model.generate(
            input_ids=ids.to(device), attention_mask=attention.to(device), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(prompts[:1])  # warm-up
    singles = [run([prompts[i % len(prompts)]]) for i in range(repeats)]
    batch = [prompts[i % len(prompts)] for i in range(32)]
    batched = min(run(batch) for _ in range(2))
    return {
        "device": device.type,
        "new_tokens": new_tokens,
        "tokens_per_second_batch_1": new_tokens / statistics.median(singles),
        "tokens_per_second_batch_32": 32 * new_tokens / batched,
        "latency_ms_p50": 1000 * statistics.median(singles),
        "latency_ms_p95": 1000 * sorted(singles)[min(len(singles) - 1, int(0.95 * len(singles)))],
    }
