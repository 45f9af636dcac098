"""ONNX of a Hugging Face student: a sequence classifier's or a causal LM's forward pass (logits, no KV cache).

student.onnx takes `input_ids` and `attention_mask` (int64, dynamic batch and sequence axes) and gives `logits`,
as the Hugging Face folder beside it does. It is exported with torch.export (the dynamo exporter): the TorchScript
exporter traced tiny BERT and GPT-2 students into graphs that ran at other shapes yet gave other logits (measured
here: 0.008 and 0.18 off). So every file is run in onnxruntime against the PyTorch student on real rows, at the
rows' own shape and at a shorter one, and one that disagrees is deleted: the report says why ONNX is absent.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine import export as ex

logger = logging.getLogger(__name__)

ONNX = ex.ONNX
CHECK_ROWS = 256  # enough rows to judge agreement; a real model on the CPU checks them in seconds
TOLERANCE = 1e-3  # of the logits' scale: float32 kernels differ by about 1e-6, a wrong graph by far more


class OnnxUnavailable(RuntimeError):
    """The student has no trustworthy ONNX form; the message says why."""


class Logits(nn.Module):
    """(input_ids, attention_mask) -> float logits of a Hugging Face model, without a KV cache."""

    def __init__(self, model: nn.Module, causal: bool):
        super().__init__()
        self.model = model
        self.causal = causal

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        cache = {"use_cache": False} if self.causal else {}  # the cache would be an output ONNX callers never feed
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **cache).logits.float()


def export_hf_onnx(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, out_dir: str, causal: bool) -> str:
    """Write student.onnx (input_ids, attention_mask -> logits; dynamic batch and sequence) of a CPU float32 model
    in eval mode; its path."""
    wrapper = Logits(model, causal)
    ids, mask = _example(ids, mask)
    path = os.path.join(out_dir, ONNX)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # The dynamo exporter prints its progress to stdout, which is the job child's channel to its parent.
    with ex.quiet(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            wrapper,
            (ids, mask),
            path,
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}),
            verbose=False,
        )
    return path


def _example(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """At least 2 rows of at least 2 tokens: torch.export fixes an axis of size 1 to 1 in the graph."""
    while len(ids) < 2:
        ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
    if ids.shape[1] < 2:
        ids, mask = torch.cat([ids, ids], 1), torch.cat([mask, torch.zeros_like(mask)], 1)
    return ids[:2].long(), mask[:2].long()


@torch.no_grad()
def check_onnx(path: str, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, causal: bool) -> dict:
    """onnxruntime against PyTorch on the rows, at their shape and cut shorter: max abs diff, argmax agreement.

    The model is on the CPU in float32 and eval mode; a causal LM is compared at its attended positions only (the
    logits at padding are not used by anyone).
    """
    wrapper = Logits(model, causal)
    session = ex.onnx_session(path)
    short = max(1, ids.shape[1] // 2)
    cases = [(ids, mask), (ids[:3, :short], mask[:3, :short])]
    diff, scale, agree, total, step = 0.0, 1.0, 0, 0, 8 if causal else 64
    for case_ids, case_mask in cases:
        for i in range(0, len(case_ids), step):
            b_ids, b_mask = case_ids[i : i + step].long(), case_mask[i : i + step].long()
            ref = wrapper(b_ids, b_mask).numpy()
            got = session.run(None, {"input_ids": b_ids.numpy(), "attention_mask": b_mask.numpy()})[0]
            if got.shape != ref.shape:
                raise OnnxUnavailable(f"student.onnx gave logits of shape {got.shape} where PyTorch gave {ref.shape}")
            keep = b_mask.numpy().astype(bool) if causal else np.ones(len(ref), dtype=bool)
            ref, got = ref[keep], got[keep]
            diff = max(diff, float(np.max(np.abs(got - ref), initial=0.0)))
            scale = max(scale, float(np.max(np.abs(ref), initial=0.0)))
            agree += int(np.sum(got.argmax(-1) == ref.argmax(-1)))
            total += len(ref)
    figures = {
        "rows": len(ids),
        "shapes": [list(c[0].shape) for c in cases],
        "compared": "attended token positions" if causal else "rows",
        "max_abs_diff": diff,
        "argmax_agreement": agree / max(total, 1),
        "runtime": "onnxruntime (CPU)",
    }
    if not np.isfinite(diff) or diff > TOLERANCE * scale:
        raise OnnxUnavailable(
            f"student.onnx disagrees with the PyTorch student (max abs diff {diff:.3g} of logits up to {scale:.3g}, "
            f"argmax agreement {figures['argmax_agreement']:.4f}): not delivered"
        )
    return figures


def verified_onnx(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, out_dir: str, causal: bool) -> dict:
    """Export student.onnx and check it; the check's figures, or OnnxUnavailable (no file left) with the reason."""
    cpu_model = copy.deepcopy(model).to("cpu").float().eval()  # one copy for both: an LM's weights can be large
    try:
        path = export_hf_onnx(cpu_model, ids[:2], mask[:2], out_dir, causal)
        figures = check_onnx(path, cpu_model, ids, mask, causal)
    except Exception as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, ONNX))
        if isinstance(exc, OnnxUnavailable):
            raise
        kind = type(model).__name__
        raise OnnxUnavailable(f"{kind} does not export to ONNX: {type(exc).__name__}: {str(exc)[:300]}") from exc
    logger.info("student.onnx: max abs diff %.3g, argmax agreement %.4f", figures["max_abs_diff"],
                figures["argmax_agreement"])  # fmt: skip
    return figures


def hf_classifier_onnx(student: Any, eval_x: np.ndarray, out_dir: str, formats: list[str], extra: dict) -> list[str]:
    """student.onnx of an hf sequence-classification student, checked on eval rows; the artifacts it made.

    The report gets onnx_max_abs_diff (as every student's ONNX does) and onnx_check; an int8 request is answered
    in export_errors, since quantising a two-input transformer is not built yet.
    """
    ids = torch.from_numpy(eval_x[:CHECK_ROWS]).long()
    mask = (ids != student.pad_id).long()  # the data's ids are right-padded with the tokenizer's pad id
    figures = verified_onnx(student.model, ids, mask, out_dir, causal=False)
    extra["onnx_max_abs_diff"] = figures["max_abs_diff"]
    extra["onnx_check"] = figures
    if "int8" in formats:
        extra.setdefault("export_errors", {})["int8"] = (
            "int8 is not available for Hugging Face students yet; student.onnx (float32) is exported"
        )
    return [ONNX]


def causal_lm_onnx(student: Any, rows: Any, max_length: int, out_dir: str) -> dict:
    """The LM report's exports entries: {"onnx", "onnx_check"} after the check on held-out rows, else {"onnx_error"}."""
    from worker.engine.lm_data import encode

    count = min(len(rows.prompts), CHECK_ROWS // 4)  # an LM's logits are a vocabulary wide at every position
    completions = [c or "" for c in rows.completions[:count]]
    data = encode(student.tokenizer, rows.prompts[:count], completions, max_length)
    try:
        figures = verified_onnx(student.model, data.ids, data.attention.long(), out_dir, causal=True)
    except OnnxUnavailable as exc:
        logger.warning("no ONNX student: %s", exc)
        return {"onnx_error": str(exc)}
    return {"onnx": ONNX, "onnx_check": figures}
