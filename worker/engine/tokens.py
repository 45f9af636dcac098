"""Token ids for text datasets: the tokenizer.json, its pad and mask ids, tokenising, pre-tokenised ids."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from worker.engine.text_tables import TextDatasetError

# Texts are cut to this many characters per token of max_length (at least MIN_TEXT_CHARS) before tokenising:
# only the first max_length tokens are kept anyway, and a huge text would cost memory and time for nothing.
CHARS_PER_TOKEN = 64
MIN_TEXT_CHARS = 4096
# Without a tokenizer the vocabulary is the largest id + 1: a lone id 10**12 would size a 10**12-row embedding.
MAX_TOKEN_ID = 2**24 - 1
_TOKENIZE_ROWS = 4096  # rows tokenised per batch, written straight into the id matrix


def load_tokenizer(path: str | None):
    from tokenizers import Tokenizer

    if not path:
        raise TextDatasetError("this dataset has a text column, so it needs a tokenizer.json uploaded with it")
    if not os.path.isfile(path):
        raise TextDatasetError(f"the tokenizer file {os.path.basename(path)!r} does not exist")
    try:
        return Tokenizer.from_file(path)
    except Exception as e:
        raise TextDatasetError(
            f"the tokenizer is not a valid tokenizer.json (HuggingFace tokenizers format): {e}"
        ) from None


def tokenizer_pad_id(tok) -> int:
    padding = tok.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in ("[PAD]", "<pad>"):
        tid = tok.token_to_id(token)
        if tid is not None:
            return int(tid)
    return 0


def tokenizer_mask_id(tok) -> int | None:
    """Id that token masking writes: [MASK]/<mask>, else the unknown token; None without a tokenizer."""
    if tok is None:
        return None
    for token in ("[MASK]", "<mask>", "[UNK]", "<unk>"):
        tid = tok.token_to_id(token)
        if tid is not None:
            return int(tid)
    try:
        unk = json.loads(tok.to_str()).get("model", {}).get("unk_token")
    except Exception:  # any tokenizer model without one
        unk = None
    tid = tok.token_to_id(unk) if isinstance(unk, str) else None
    return None if tid is None else int(tid)


def pad_id_of(tokenizer_path: str | None) -> int:
    """Pad id of a tokenizer.json: its padding pad_id, else [PAD]/<pad>, else 0."""
    if not tokenizer_path:
        return 0
    return tokenizer_pad_id(load_tokenizer(tokenizer_path))


def parse_ids(value: Any, row: int) -> list[int]:
    if isinstance(value, str):
        s = value.strip()
        try:
            value = json.loads(s) if s.startswith("[") else [int(t) for t in s.split()]
        except (ValueError, RecursionError):
            raise TextDatasetError(f"input_ids in row {row} must be a JSON list or space-separated integers") from None
    if value is None or isinstance(value, (dict, bool)) or not hasattr(value, "__iter__"):
        raise TextDatasetError(f"input_ids in row {row} must be a list of integers")
    ids = list(value)
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise TextDatasetError(f"input_ids in row {row} must hold non-negative integers, found {t!r}")
    return ids


def tokenize(tok, texts: list[str], max_length: int, pad_id: int) -> np.ndarray:
    """Token ids [rows, max_length] int64, tokenised a batch at a time straight into the matrix.

    Each text is cut to max(MIN_TEXT_CHARS, CHARS_PER_TOKEN * max_length) characters first: only the first
    max_length tokens are kept, and the tokenizer would otherwise normalise and split all of a huge text.
    """
    tok.no_padding()
    tok.enable_truncation(max_length)
    chars = max(MIN_TEXT_CHARS, CHARS_PER_TOKEN * max_length)
    x = np.full((len(texts), max_length), pad_id, dtype=np.int64)
    for start in range(0, len(texts), _TOKENIZE_ROWS):
        batch = [t[:chars] for t in texts[start : start + _TOKENIZE_ROWS]]
        try:
            encodings = tok.encode_batch(batch)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - a Rust panic (pyo3 PanicException) is a BaseException
            raise TextDatasetError(f"could not tokenise the text column: {tokenizer_failure(e)}") from None
        for row, enc in enumerate(encodings, start=start):
            ids = enc.ids[:max_length]  # the special tokens can outgrow a tiny max_length: cut, not an error
            x[row, : len(ids)] = ids
    return x


def tokenizer_failure(e: BaseException) -> str:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "retry-limit" in message:
        return "a regular expression of the tokenizer backtracked past its limit (a catastrophic pattern)"
    return message[:300]
