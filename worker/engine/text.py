"""Text datasets: read a table (text_tables), tokenise and pad (tokens), map labels; load_text is the entry."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from worker.engine.limits import DataLimits, check_class_names, resolve, short_list
from worker.engine.text_tables import TextDatasetError, read_table
from worker.engine.tokens import (
    MAX_TOKEN_ID,
    load_tokenizer,
    pad_id_of,
    parse_ids,
    tokenize,
    tokenizer_mask_id,
    tokenizer_pad_id,
)

__all__ = ["TextDatasetError", "lengths", "load_text", "load_text_table", "pad_id_of", "read_table", "text_info"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128
_INT_RE = re.compile(r"^[+-]?\d+(\.0*)?$")


def lengths(x: np.ndarray, pad_id: int) -> np.ndarray:
    """Number of non-pad tokens per row of an id matrix."""
    return (np.asarray(x) != pad_id).sum(axis=1).astype(np.int64)


def _max_length(spec: Any, limits: DataLimits) -> int:
    value = getattr(spec, "max_length", None)
    if value is None:
        return min(DEFAULT_MAX_LENGTH, limits.max_tokens)
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < 1:
        raise TextDatasetError(f"max_length must be an integer from 1 to {limits.max_tokens}, got {value!r}")
    limits.check("max_tokens", int(value), "max_length (tokens per example)")
    return int(value)


def _labels(values: list, name: str, classes: list[str] | None, fmt: str, limits: DataLimits | None = None):
    """(int64 labels, class names); the class count is checked against limits.max_classes before it is listed."""
    limits = resolve(limits)
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        row = next(i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip()))
        raise TextDatasetError(f"label column {name!r} is empty in row {row + 1}")
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes) or not classes:
            raise TextDatasetError("classes must be a non-empty list of distinct names")
    as_str = [str(v).strip() if isinstance(v, str) else v for v in values]
    check_class_names(v for v in as_str if isinstance(v, str))
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
            ints.append(int(v.split(".")[0]))
        else:
            break
    if len(ints) == len(as_str):
        if min(ints) < 0:
            raise TextDatasetError(f"integer labels must be non-negative, found {min(ints)}")
        k = max(ints) + 1
        limits.check("max_classes", k, "the number of classes (the largest label + 1)")
        if classes is None:
            return np.array(ints, dtype=np.int64), [str(i) for i in range(k)]
        if len(classes) < k:
            raise TextDatasetError(f"label {k - 1} has no name: classes lists only {len(classes)} names")
        return np.array(ints, dtype=np.int64), classes
    strs = [str(v) for v in as_str]
    distinct = set(strs)
    if classes is None:
        limits.check("max_classes", len(distinct), "the number of classes (distinct labels)")
        check_class_names(distinct)
        classes = sorted(distinct)
    else:
        unknown = sorted(distinct - set(classes))
        if unknown:
            raise TextDatasetError(f"label {unknown[0]!r} is not one of the classes {short_list(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[s] for s in strs], dtype=np.int64), classes


def _load(spec: Any, limits: DataLimits | None = None) -> dict:
    limits = resolve(limits)
    max_length = _max_length(spec, limits)
    given_classes = getattr(spec, "classes", None)
    if given_classes:
        limits.check("max_classes", len(given_classes), "the number of names in classes")
        check_class_names(str(c) for c in given_classes)
    columns, data, n = read_table(spec, limits, row_bytes=max_length * 8)
    limits.check("max_dataset_bytes", n * max_length * 8, "the memory the token ids take (rows x max_length x 8 bytes)")
    text_column = getattr(spec, "text_column", None)
    tokenizer_path = getattr(spec, "tokenizer_path", None)
    if text_column is not None or "input_ids" not in columns:
        x, tok, vocab_size = _tokenized(data, columns, text_column or "text", tokenizer_path, max_length)
    else:
        x, tok, vocab_size = _given_ids(data["input_ids"], n, tokenizer_path, max_length)
    pad_id = tokenizer_pad_id(tok) if tok is not None else 0
    y, classes = _label_column(spec, data, columns, given_classes, limits)
    logger.info("loaded %d text rows (max_length=%d, labels=%s)", n, max_length, y is not None)
    return {
        "x": x,
        "y": y,
        "classes": classes,
        "columns": columns,
        "pad_id": pad_id,
        "vocab_size": vocab_size,
        "max_length": max_length,
        "mask_id": tokenizer_mask_id(tok),
    }


def _tokenized(data: dict, columns: list[str], text_column: str, tokenizer_path: str | None, max_length: int):
    """(ids, tokenizer, vocabulary size) of the text column, tokenised with the uploaded tokenizer.json."""
    if text_column not in columns:
        raise TextDatasetError(
            f"text column {text_column!r} not found; the columns are {short_list(columns)} "
            "(set text_column, or give pre-tokenised ids in an 'input_ids' column)"
        )
    tok = load_tokenizer(tokenizer_path)
    texts = data[text_column]
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TextDatasetError(f"text column {text_column!r} is not text in row {bad + 1}")
    x = tokenize(tok, texts, max_length, tokenizer_pad_id(tok))
    return x, tok, int(tok.get_vocab_size(with_added_tokens=True))


def _given_ids(values: list, n: int, tokenizer_path: str | None, max_length: int):
    """(ids, tokenizer or None, vocabulary size) of a pre-tokenised 'input_ids' column, cut to max_length."""
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else None
    pad_id = tokenizer_pad_id(tok) if tok else 0
    tok_vocab = int(tok.get_vocab_size(with_added_tokens=True)) if tok else None
    x = np.full((n, max_length), pad_id, dtype=np.int64)
    max_id = 0
    for i, v in enumerate(values):
        ids = parse_ids(v, i + 1)
        if not ids:
            continue
        top = max(ids)
        if tok_vocab is not None and top >= tok_vocab:
            raise TextDatasetError(f"input_ids has id {top} but the tokenizer has only {tok_vocab} ids")
        if tok_vocab is None and top > MAX_TOKEN_ID:
            raise TextDatasetError(
                f"input_ids has id {top}; without a tokenizer the vocabulary is the largest id + 1, and ids "
                f"above {MAX_TOKEN_ID} are refused (upload the tokenizer.json)"
            )
        max_id = max(max_id, top)
        ids = ids[:max_length]
        x[i, : len(ids)] = ids
    return x, tok, tok_vocab if tok_vocab is not None else max(max_id, pad_id) + 1


def _label_column(spec: Any, data: dict, columns: list[str], given_classes, limits: DataLimits):
    """(labels or None, class names or None) from the label column (default 'label'; a named one must exist)."""
    label_column = getattr(spec, "label_column", None)
    if label_column is not None and label_column not in columns:
        raise TextDatasetError(f"label column {label_column!r} not found; the columns are {short_list(columns)}")
    label_column = label_column or "label"
    if label_column in columns:
        return _labels(data[label_column], label_column, given_classes, str(spec.format).lower(), limits)
    return None, [str(c) for c in given_classes] if given_classes else None


def describe_untokenised(spec: Any, limits: DataLimits | None = None) -> dict:
    """Info of a text table uploaded to be tokenised at job time by its teacher's tokenizer (tokenizer_from)."""
    limits = resolve(limits)
    given_classes = getattr(spec, "classes", None)
    columns, data, n = read_table(spec, limits)
    text_column = getattr(spec, "text_column", None) or "text"
    if text_column not in columns:
        raise TextDatasetError(f"text column {text_column!r} not found; the columns are {short_list(columns)}")
    bad = next((i for i, t in enumerate(data[text_column]) if not isinstance(t, str)), None)
    if bad is not None:
        raise TextDatasetError(f"text column {text_column!r} is not text in row {bad + 1}")
    y, classes = _label_column(spec, data, columns, given_classes, limits)
    return {
        "rows": n,
        "columns": columns,
        "input": {"shape": None, "dtype": "text"},
        "has_labels": y is not None,
        "num_classes": len(classes) if classes else None,
        "classes": classes,
        "text_column": text_column,
        "tokenizer_from": "teacher",
        "max_length": _max_length(spec, limits),
    }


def load_text(spec: Any, limits: DataLimits | None = None) -> dict:
    """Load a text dataset as a dict: x, y, classes, columns, pad_id, vocab_size, max_length (within `limits`)."""
    return _load(spec, limits)


def load_text_table(
    spec: Any, limits: DataLimits | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Load a text dataset as (int64 ids [N, max_length], labels or None, class names or None)."""
    d = _load(spec, limits)
    return d["x"], d["y"], d["classes"]


def text_info(spec: Any, limits: DataLimits | None = None) -> dict:
    """Summary of a text dataset: rows, columns, lengths, vocabulary, pad id and labels."""
    d = _load(spec, limits)
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
