"""Language-model uploads at validation: a JSONL of `prompt` rows (optional `completion`) or chat `messages` is
described as info.kind "prompts" (rows, how many come with a completion), checked row by row without a tokenizer
(the teacher's renders them at job time, worker/engine/lm_data.py); a model folder's tokenizer gets a vocabulary
fingerprint, so that the API can tell at submit whether two models share one vocabulary without opening either."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from worker.engine.config import DatasetSpec
from worker.engine.errors import EngineError
from worker.engine.lm_data import MAX_ROWS

PROMPTS_KIND = "prompts"


def is_prompts(spec: DatasetSpec) -> bool:
    """Whether the dataset is a JSONL of prompts: its first row has a `prompt` string or a `messages` list and no
    label, and no option names a text or label column (a classification table with a `prompt` column stays one)."""
    if spec.format != "jsonl" or spec.text_column or spec.label_column or spec.tokenizer_path or spec.tokenizer_from:
        return False
    try:
        with open(spec.path, encoding="utf-8-sig") as f:
            first = next((line for line in f if line.strip()), "")
        row = json.loads(first)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False  # the table reader reports the problem with its own words
    if not isinstance(row, dict) or "label" in row:
        return False
    return isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list)


def describe_prompts(spec: DatasetSpec) -> dict:
    """The info of a prompts dataset; EngineError("invalid_dataset") naming the first bad row."""
    rows = completions = chats = 0
    with open(spec.path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows += 1
            if rows > MAX_ROWS:
                raise EngineError("invalid_dataset", f"more than {MAX_ROWS} rows")
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise EngineError("invalid_dataset", f"row {number} is not a JSON object") from None
            has_completion, is_chat = _check_row(row, number)
            completions += has_completion
            chats += is_chat
    if not rows:
        raise EngineError("invalid_dataset", "the dataset has no rows")
    return {
        "format": "jsonl",
        "kind": PROMPTS_KIND,
        "rows": rows,
        "with_completion": completions,
        "has_completions": completions > 0,
        "has_messages": chats > 0,
        "columns": None,
        "input": {"shape": None, "dtype": "text"},
        "has_labels": False,
        "num_classes": None,
        "classes": None,
    }


def _check_row(row, number: int) -> tuple[bool, bool]:
    """(has a completion, is a chat row) of one row; EngineError when it is neither shape."""
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        messages = row["messages"]
        if not messages or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise EngineError("invalid_dataset", f"row {number}: messages must be objects with a string content")
        return messages[-1].get("role") == "assistant", True
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise EngineError(
            "invalid_dataset", f'row {number}: a prompts dataset has {{"prompt": "...", "completion": "..."}} rows '
            'or {"messages": [{"role": ..., "content": ...}]} rows'
        )  # fmt: skip
    completion = row.get("completion")
    if completion is not None and not isinstance(completion, str):
        raise EngineError("invalid_dataset", f"row {number}: completion must be a string")
    return completion is not None, False


SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _content(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken's {"content": ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


def vocabulary_fingerprint(files: set[str], read_json: Callable[[str], object]) -> str | None:
    """sha256 of the tokenizer's token -> id map (added tokens included) and its special tokens, from the folder's
    tokenizer.json (or vocab.json); None when the folder has neither. Two folders with one fingerprint tokenise
    alike id for id, which is what logit KD needs (equal sizes alone do not say so)."""
    if "tokenizer.json" in files:
        from tokenizers import Tokenizer  # parses the JSON in Rust; it runs no code from the folder

        try:
            vocab = Tokenizer.from_str(json.dumps(read_json("tokenizer.json"))).get_vocab(with_added_tokens=True)
        except Exception:  # a tokenizer.json the library cannot read: no fingerprint, the sizes are compared
            return None
    elif "vocab.json" in files:
        raw = read_json("vocab.json")
        vocab = {str(k): v for k, v in raw.items() if isinstance(v, int)} if isinstance(raw, dict) else {}
    else:
        return None
    special: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as transformers reads it
        config = read_json(name) if name in files else {}
        if isinstance(config, dict):
            special.update({k: _content(config[k]) for k in SPECIAL_NAMES if _content(config.get(k))})
    text = json.dumps({"vocab": sorted(vocab.items(), key=lambda kv: (kv[1], kv[0])), "special": special},
                      sort_keys=True, ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()
