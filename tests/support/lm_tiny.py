"""A causal-LM job's inputs in a second: a 2-layer GPT-2 teacher built from a config (tests/support/hf_folders.py)
and jsonl rows of random words, for the engine's preflight and reporting tests (the real-text fixture is
tests/support/lm_text.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.support import hf_folders as hf


def tiny_lm_job(out: Path) -> tuple[str, str, str]:
    """(teacher archive, training rows with 48 rows, held-out rows with 12), each a path under `out`."""
    folder, _ = hf.gpt2_lm(out / "teacher")
    rng = random.Random(0)

    def rows(path: Path, n: int) -> str:
        lines = [{"prompt": " ".join(f"w{rng.randrange(60)}" for _ in range(3)),
                  "completion": " ".join(f"w{rng.randrange(60)}" for _ in range(4))} for _ in range(n)]  # fmt: skip
        path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
        return str(path)

    return str(hf.zip_folder(folder, out / "teacher.zip")), rows(out / "train.jsonl", 48), rows(out / "eval.jsonl", 12)
