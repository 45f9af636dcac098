"""Keep what a stopped job learned: its last checkpoint's student weights become an artifact."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def salvage_student(checkpoint_dir: Path, out_dir: Path, student_spec: dict) -> list[Path]:
    """Write checkpoint_student.safetensors (+ .json) from the last checkpoint; [] when there is none."""
    from safetensors.torch import save_file

    from worker.engine.checkpoint import load_checkpoint

    loaded = load_checkpoint(str(checkpoint_dir))
    if loaded is None:
        return []
    tensors, meta = loaded
    # The best epoch so far is the last good student; before the first epoch ends, the current weights.
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
    chosen, which = (
        (best, "best")
        if best
        else ({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, "latest")
    )
    if not chosen:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "checkpoint_student.safetensors"
    save_file({k: v.contiguous() for k, v in chosen.items()}, str(weights))
    info = out_dir / "checkpoint_student.json"
    info.write_text(
        json.dumps(
            {
                "weights": which,
                "epoch": meta.get("epoch"),
                "step": meta.get("step"),
                "best_epoch": meta.get("best_epoch"),
                "best_metric": meta.get("best_metric"),
                "history": meta.get("history"),
                "student": student_spec,
                "note": "weights of a stopped job; rebuild the student from its spec and load them with safetensors",
            },
            indent=2,
        )
    )
    logger.info("salvaged the %s student weights from %s", which, checkpoint_dir)
    return [weights, info]
