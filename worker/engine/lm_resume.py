"""Checkpoints of a causal-LM training, one per phase (the SFT baseline, the distilled student), so that a job
the worker hands back (shutdown, a lost lease) resumes at its last finished epoch instead of starting over.

Each phase's folder holds worker/engine/checkpoint.py's pair (tensors in safetensors, the rest in JSON, never a
pickle): the student's weights, its best epoch's weights, the optimizer's moments, every random state (torch's,
the batch order's generator, on-policy's coin) and the history. A fingerprint of the settings that shape the
run is stored with it: a checkpoint of other settings (another method, other epochs) is never resumed. The
teacher's signal needs no checkpoint: it is in the signal cache already.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from worker.engine.checkpoint import load_checkpoint, optimizer_tensors, restore_optimizer, save_checkpoint

logger = logging.getLogger(__name__)

# Held while a checkpoint is written: the job child's stop watcher (worker/job_lm.py) takes it before it ends the
# process, so a stop never falls between the tensors' file and the JSON that names their generation.
SAVING = threading.Lock()


@dataclass
class Resumed:
    """Where a phase picks up: the next epoch (0 when it starts afresh), its best so far and its history."""

    epoch: int = 0
    best: float = float("inf")
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


class PhaseCheckpoint:
    """The checkpoint folder of one training phase (`<checkpoint_dir>/lm-<phase>`) and its fingerprint."""

    def __init__(self, directory: str, phase: str, settings: dict, announce: Callable[[int], None] | None = None):
        self.directory = os.path.join(directory, f"lm-{phase}")
        self.phase, self.announce = phase, announce
        text = json.dumps(settings, sort_keys=True, default=str)
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]

    def save(
        self, epoch: int, student, optimizer, generator, on_policy, best: float, best_state: dict, history
    ) -> None:
        """Write the state after epoch `epoch` (from 1); a reader sees this pair or the previous one whole."""
        tensors = {f"model.{k}": v for k, v in student.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
        moments, groups = optimizer_tensors(optimizer)
        tensors.update(moments)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.batches"] = generator.get_state()
        if on_policy is not None:  # its coin, and the count its samples' seeds derive from
            tensors["rng.coin"] = on_policy.coin.get_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        meta = {"epoch": epoch, "step": 0, "global_step": epoch, "phase": self.phase, "fingerprint": self.fingerprint,
                "best": best if best != float("inf") else None, "history": history, "param_groups": groups,
                "on_policy": _on_policy_state(on_policy)}  # fmt: skip
        with SAVING:
            save_checkpoint(self.directory, tensors, meta)

    def restore(self, student, optimizer, generator, on_policy) -> Resumed:
        """Load the phase's last checkpoint into the student, optimizer and generators; a fresh start if none fits."""
        loaded = load_checkpoint(self.directory)
        if loaded is None:
            return Resumed()
        tensors, meta = loaded
        if meta.get("fingerprint") != self.fingerprint or meta.get("phase") != self.phase:
            logger.warning("LM checkpoint in %s is of other settings; the %s starts over", self.directory, self.phase)
            return Resumed()
        device = next(student.parameters()).device
        student.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(optimizer, {k: v.to(device) for k, v in tensors.items()}, meta["param_groups"])
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.batches"])
        if on_policy is not None and "rng.coin" in tensors:
            on_policy.coin.set_state(tensors["rng.coin"])
            state = meta.get("on_policy") or {}
            on_policy.tally.sampled[:] = state.get("tally_sampled", [])
            on_policy.tally.data[:] = state.get("tally_data", [])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        best_state = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        best = meta["best"] if meta.get("best") is not None else float("inf")
        logger.info("%s resumes after epoch %d from %s", self.phase, meta["epoch"], self.directory)
        if self.announce is not None:
            self.announce(int(meta["epoch"]))
        return Resumed(int(meta["epoch"]), float(best), best_state, list(meta["history"]))


def _on_policy_state(on_policy) -> dict | None:
    if on_policy is None:
        return None
    tally = on_policy.tally
    return {"tally_sampled": tally.sampled, "tally_data": tally.data}  # the samples' seeds count from the tally
