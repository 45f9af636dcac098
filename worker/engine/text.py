"""Text datasets: read CSV/JSONL/Parquet, tokenise with a tokenizer.json, pad, map labels."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128
MAX_MAX_LENGTH = 8192
TEXT_FORMATS = ("csv", "jsonl", "parquet")
_INT_RE = re.compile(r"^[+-]?\d+(\.0*)?$")


class TextDatasetError(ValueError):
    """A text dataset that cannot be used; the message tells the user what to fix."""

    code = "invalid_dataset"

    @property
    def message(self) -> str:
        """The user-facing message (the same attribute name as the engine's own errors)."""
        return str(self)


def _read_csv(path: str) -> tuple[list[str], dict[str, list]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise TextDatasetError("the CSV file is empty: expected a header row such as 'text,label'")
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise TextDatasetError(f"the CSV header has duplicate column names: {header}")
        data: dict[str, list] = {h: [] for h in header}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TextDatasetError(
                    f"CSV line {lineno} has {len(row)} fields but the header has {len(header)}"
                )
            for h, v in zip(header, row, strict=True):
                data[h].append(v)
    return header, data


def _read_jsonl(path: str) -> tuple[list[str], dict[str, list]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TextDatasetError(f"JSONL line {lineno} is not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise TextDatasetError(f"JSONL line {lineno} is not a JSON object")
            rows.append(obj)
    header: list[str] = []
    for obj in rows:
        header.extend(k for k in obj if k not in header)
    return header, {h: [obj.get(h) for obj in rows] for h in header}


def _read_parquet(path: str) -> tuple[list[str], dict[str, list]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return list(table.column_names), table.to_pydict()


def read_table(spec: Any) -> tuple[list[str], dict[str, list], int]:
    """Read the dataset file into (columns, column data, row count)."""
    fmt = str(getattr(spec, "format", "") or "").lower()
    path = str(spec.path)
    if fmt not in TEXT_FORMATS:
        raise TextDatasetError(f"text datasets must be CSV, JSONL or Parquet, not {fmt!r}")
    if not os.path.isfile(path):
        raise TextDatasetError(f"the dataset file {os.path.basename(path)!r} does not exist")
    if os.path.getsize(path) == 0:
        raise TextDatasetError("the dataset file is empty")
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt]
    try:
        columns, data = reader(path)
    except TextDatasetError:
        raise
    except Exception as e:  # OSError, UnicodeDecodeError, csv.Error, pyarrow's own errors
        raise TextDatasetError(f"could not read the file as {fmt.upper()}: {e}") from None
    n = len(data[columns[0]]) if columns else 0
    if n == 0:
        raise TextDatasetError("the dataset has no rows")
    return columns, data, n


def _load_tokenizer(path: str | None):
    from tokenizers import Tokenizer

    if not path:
        raise TextDatasetError(
            "this dataset has a text column, so it needs a tokenizer.json uploaded with it"
        )
    if not os.path.isfile(path):
        raise TextDatasetError(f"the tokenizer file {os.path.basename(path)!r} does not exist")
    try:
        return Tokenizer.from_file(path)
    except Exception as e:
        raise TextDatasetError(
            f"the tokenizer is not a valid tokenizer.json (HuggingFace tokenizers format): {e}"
        ) from None


def _pad_id(tok) -> int:
    padding = tok.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in ("[PAD]", "<pad>"):
        tid = tok.token_to_id(token)
        if tid is not None:
            return int(tid)
    return 0


def _mask_id(tok) -> int | None:
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
    return _pad_id(_load_tokenizer(tokenizer_path))


def lengths(x: np.ndarray, pad_id: int) -> np.ndarray:
    """Number of non-pad tokens per row of an id matrix."""
    return (np.asarray(x) != pad_id).sum(axis=1).astype(np.int64)


def _max_length(spec: Any) -> int:
    value = getattr(spec, "max_length", None)
    if value is None:
        return DEFAULT_MAX_LENGTH
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or not 1 <= value <= MAX_MAX_LENGTH:
        raise TextDatasetError(f"max_length must be an integer from 1 to {MAX_MAX_LENGTH}, got {value!r}")
    return int(value)


def _parse_ids(value: Any, row: int) -> list[int]:
    if isinstance(value, str):
        s = value.strip()
        try:
            value = json.loads(s) if s.startswith("[") else [int(t) for t in s.split()]
        except ValueError:
            raise TextDatasetError(
                f"input_ids in row {row} must be a JSON list or space-separated integers"
            ) from None
    if value is None or isinstance(value, (dict, bool)) or not hasattr(value, "__iter__"):
        raise TextDatasetError(f"input_ids in row {row} must be a list of integers")
    ids = list(value)
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise TextDatasetError(f"input_ids in row {row} must hold non-negative integers, found {t!r}")
    return ids


def _to_matrix(seqs: list[list[int]], max_length: int, pad_id: int) -> np.ndarray:
    x = np.full((len(seqs), max_length), pad_id, dtype=np.int64)
    for i, ids in enumerate(seqs):
        ids = ids[:max_length]
        x[i, : len(ids)] = ids
    return x


def _labels(values: list, name: str, classes: list[str] | None, fmt: str):
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        row = next(i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip()))
        raise TextDatasetError(f"label column {name!r} is empty in row {row + 1}")
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes) or not classes:
            raise TextDatasetError("classes must be a non-empty list of distinct names")
    as_str = [str(v).strip() if isinstance(v, str) else v for v in values]
    if classes is not None and all(isinstance(v, str) and v in classes for v in as_str):
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[v] for v in as_str], dtype=np.int64), classes
    ints = []
    for v in as_str:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            ints.append(int(v))
        elif isinstance(v, float) and v.is_integer():
            ints.append(int(v))
        elif isinstance(v, str) and fmt == "csv" and _INT_RE.match(v):
            ints.append(int(float(v)))
        else:
            break
    if len(ints) == len(as_str):
        if min(ints) < 0:
            raise TextDatasetError(f"integer labels must be non-negative, found {min(ints)}")
        k = max(ints) + 1
        if classes is None:
            return np.array(ints, dtype=np.int64), [str(i) for i in range(k)]
        if len(classes) < k:
            raise TextDatasetError(f"label {k - 1} has no name: classes lists only {len(classes)} names")
        return np.array(ints, dtype=np.int64), classes
    strs = [str(v) for v in as_str]
    if classes is None:
        classes = sorted(set(strs))
    else:
        unknown = sorted(set(strs) - set(classes))
        if unknown:
            raise TextDatasetError(f"label {unknown[0]!r} is not one of the classes {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[s] for s in strs], dtype=np.int64), classes


def _load(spec: Any) -> dict:
    columns, data, n = read_table(spec)
    fmt = str(spec.format).lower()
    max_length = _max_length(spec)
    text_column = getattr(spec, "text_column", None)
    tokenizer_path = getattr(spec, "tokenizer_path", None)
    use_text = text_column is not None or "input_ids" not in columns
    text_column = text_column or "text"
    if use_text:
        if text_column not in columns:
            raise TextDatasetError(
                f"text column {text_column!r} not found; the columns are {columns} "
                "(set text_column, or give pre-tokenised ids in an 'input_ids' column)"
            )
        tok = _load_tokenizer(tokenizer_path)
        pad_id = _pad_id(tok)
        vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        tok.no_padding()
        tok.enable_truncation(max_length)
        texts = data[text_column]
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TextDatasetError(f"text column {text_column!r} is not text in row {bad + 1}")
        try:
            seqs = [enc.ids for enc in tok.encode_batch(texts)]
        except Exception as e:  # e.g. max_length shorter than the tokenizer's special tokens
            raise TextDatasetError(f"could not tokenise the text column: {e}") from None
    else:
        tok = _load_tokenizer(tokenizer_path) if tokenizer_path else None
        pad_id = _pad_id(tok) if tok else 0
        seqs = [_parse_ids(v, i + 1) for i, v in enumerate(data["input_ids"])]
        max_id = max((max(s) for s in seqs if s), default=0)
        vocab_size = int(tok.get_vocab_size(with_added_tokens=True)) if tok else max(max_id, pad_id) + 1
        if max_id >= vocab_size:
            raise TextDatasetError(f"input_ids has id {max_id} but the tokenizer has only {vocab_size} ids")
    x = _to_matrix(seqs, max_length, pad_id)
    label_column = getattr(spec, "label_column", None)
    y, classes = None, getattr(spec, "classes", None)
    classes = [str(c) for c in classes] if classes else None
    if label_column is not None and label_column not in columns:
        raise TextDatasetError(f"label column {label_column!r} not found; the columns are {columns}")
    label_column = label_column or "label"
    if label_column in columns:
        y, classes = _labels(data[label_column], label_column, getattr(spec, "classes", None), fmt)
    logger.info("loaded %d text rows (max_length=%d, labels=%s)", n, max_length, y is not None)
    return {
        "x": x,
        "y": y,
        "classes": classes,
        "columns": columns,
        "pad_id": pad_id,
        "vocab_size": vocab_size,
        "max_length": max_length,
        "mask_id": _mask_id(tok),
    }


def load_text(spec: Any) -> dict:
    """Load a text dataset as a dict: x, y, classes, columns, pad_id, vocab_size, max_length."""
    return _load(spec)


def load_text_table(spec: Any) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Load a text dataset as (int64 ids [N, max_length], labels or None, class names or None)."""
    d = _load(spec)
    return d["x"], d["y"], d["classes"]


def text_info(spec: Any) -> dict:
    """Summary of a text dataset: rows, columns, lengths, vocabulary, pad id and labels."""
    d = _load(spec)
    return {
        "rows": int(d["x"].shape[0]),
        "columns": d["columns"],
        "max_length": d["max_length"],
        "vocab_size": d["vocab_size"],
        "pad_id": d["pad_id"],
        "mean_length": float(lengths(d["x"], d["pad_id"]).mean()),
        "has_labels": d["y"] is not None,
        "classes": d["classes"],
    }
