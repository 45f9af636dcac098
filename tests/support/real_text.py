"""A text fixture from real text on this machine: docstrings of installed Python libraries, labelled by library.

The engine was never tuned on it. Ten libraries; each row is the first paragraph of one function's or class's
docstring, and the task is to say which library wrote it. Deterministic for one environment (files are read in
sorted order). The teacher is tests/support/text.py's bidirectional LSTM.
"""

from __future__ import annotations

import ast
import csv
import functools
import importlib.util
import json
import random
import re
import tempfile
from pathlib import Path

from tests.support.text import build_tokenizer, train_lstm_teacher

LIBRARIES = ("numpy", "torch", "sqlalchemy", "pydantic", "celery", "optuna", "sklearn", "rich", "click", "httpx")
PER_LIBRARY = 180
TRAIN_FRACTION = 0.8
_WORDS = re.compile(r"[a-z]+")


def _python_files(library: str) -> list[Path]:
    spec = importlib.util.find_spec(library)
    roots = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(p for root in roots for p in Path(root).rglob("*.py") if "test" not in str(p.relative_to(root)))
    return files


def _docstrings(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                words = _WORDS.findall(doc.split("\n\n")[0].lower())
                if 5 <= len(words):
                    yield " ".join(words[:40])


def library_rows(library: str, count: int = PER_LIBRARY) -> list[str]:
    """Up to `count` distinct docstring paragraphs of `library`, spread over its files."""
    seen: dict[str, None] = {}
    files = _python_files(library)
    random.Random(library).shuffle(files)  # spread over the package, not its first folder
    for path in files:
        for text in _docstrings(path):
            seen.setdefault(text)
            if len(seen) >= count:
                return list(seen)
    return list(seen)


def make_real_text_fixture(out_dir: str | Path, max_words: int | None = None) -> dict:
    """Write train.csv, eval.csv (text, library) and tokenizer.json (of the `max_words` most frequent words
    when given); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [(text, library) for library in LIBRARIES for text in library_rows(library)]
    random.Random(0).shuffle(rows)
    cut = int(TRAIN_FRACTION * len(rows))
    for name, part in (("train.csv", rows[:cut]), ("eval.csv", rows[cut:])):
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(part)
    build_tokenizer([t for t, _ in rows[:cut]], out / "tokenizer.json", max_words)
    return {"dir": out, "train": out / "train.csv", "eval": out / "eval.csv", "tokenizer": out / "tokenizer.json"}


@functools.lru_cache(maxsize=1)
def real_text_fixture() -> dict:
    """Session-cached: the corpus, its tokenizer and a trained LSTM teacher (teacher.json has its accuracy)."""
    out = Path(tempfile.mkdtemp(prefix="distillery-real-text-"))
    files = make_real_text_fixture(out)
    files["teacher"] = train_lstm_teacher(out, epochs=6, embedding_dim=64, hidden_dim=96)
    files["teacher_info"] = json.loads((out / "teacher.json").read_text())
    return files
