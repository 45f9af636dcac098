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

from worker.engine.errors import EngineError
from worker.engine.limits import DataLimits, check_class_names, limit_exceeded, resolve, short_list

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128
TEXT_FORMATS = ("csv", "jsonl", "parquet")
_INT_RE = re.compile(r"^[+-]?\d+(\.0*)?$")
# A table read into Python lists costs about this many bytes per cell beyond its characters (object + pointer);
# the reading is stopped once the estimate passes limits.max_dataset_bytes.
CELL_OVERHEAD = 64
# Texts are cut to this many characters per token of max_length (at least MIN_TEXT_CHARS) before tokenising:
# only the first max_length tokens are kept anyway, and a huge text would cost memory and time for nothing.
CHARS_PER_TOKEN = 64
MIN_TEXT_CHARS = 4096
# Without a tokenizer the vocabulary is the largest id + 1: a lone id 10**12 would size a 10**12-row embedding.
MAX_TOKEN_ID = 2**24 - 1
_TOKENIZE_ROWS = 4096  # rows tokenised per batch, written straight into the id matrix
_PARQUET_BATCH_ROWS = 256


class TextDatasetError(ValueError):
    """A text dataset that cannot be used; the message tells the user what to fix."""

    code = "invalid_dataset"

    @property
    def message(self) -> str:
        """The user-facing message (the same attribute name as the engine's own errors)."""
        return str(self)


class _Budget:
    """A rough count of the bytes a table takes once read into Python lists, refused past max_dataset_bytes.

    Each row also reserves the int64 id row it becomes (`row_bytes`), so a file of many tiny rows is stopped
    while it is read, not after.
    """

    def __init__(self, limits: DataLimits, row_bytes: int = 0):
        self.cap = limits.max_dataset_bytes
        self.row_bytes = row_bytes
        self.used = 0

    def add(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.cap:
            raise limit_exceeded(
                "max_dataset_bytes", self.used, self.cap, "the memory the table takes once read (bytes, so far)"
            )

    def row(self, values) -> None:
        """Count one row of cell values."""
        self.add(self.row_bytes + sum(_cost(v) for v in values))


def _cost(value: Any) -> int:
    """Approximate bytes a parsed cell takes: CELL_OVERHEAD per object plus its characters (iterative)."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        total += CELL_OVERHEAD
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return total


def _read_csv(path: str, budget: _Budget) -> tuple[list[str], dict[str, list]]:
    # Long texts are fine here (the budget bounds them); the limit is process-wide, so it is put back after.
    previous = csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        return _read_csv_rows(path, budget)
    finally:
        csv.field_size_limit(previous)


def _read_csv_rows(path: str, budget: _Budget) -> tuple[list[str], dict[str, list]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise TextDatasetError("the CSV file is empty: expected a header row such as 'text,label'")
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise TextDatasetError(f"the CSV header has duplicate column names: {short_list(header)}")
        budget.row(header)
        data: dict[str, list] = {h: [] for h in header}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TextDatasetError(f"CSV line {lineno} has {len(row)} fields but the header has {len(header)}")
            budget.row(row)
            for h, v in zip(header, row, strict=True):
                data[h].append(v)
    return header, data


def _read_jsonl(path: str, budget: _Budget) -> tuple[list[str], dict[str, list]]:
    rows = []
    header: dict[str, None] = {}  # the union of the rows' keys, in first-seen order
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TextDatasetError(f"JSONL line {lineno} is not valid JSON: {e.msg}") from None
            except RecursionError:
                raise TextDatasetError(f"JSONL line {lineno} is nested too deeply to read") from None
            if not isinstance(obj, dict):
                raise TextDatasetError(f"JSONL line {lineno} is not a JSON object")
            budget.row((obj,))
            header.update(dict.fromkeys(obj))
            rows.append(obj)
    # Every row gets a cell for every column: rows with different keys make a table of rows x all keys.
    budget.add(len(rows) * len(header) * 8)
    return list(header), {h: [obj.get(h) for obj in rows] for h in header}


def _read_parquet(path: str, budget: _Budget) -> tuple[list[str], dict[str, list]]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        meta = pf.metadata
        # Before reading: the declared cells and (uncompressed) column bytes.
        declared = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        budget.add(meta.num_rows * (meta.num_columns * CELL_OVERHEAD + budget.row_bytes) + declared)
        budget.used = 0  # the estimate above is replaced by the count of what is read, batch by batch
        columns = list(pf.schema_arrow.names)
        data: dict[str, list] = {c: [] for c in columns}
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            budget.add(batch.num_rows * (len(columns) * CELL_OVERHEAD + budget.row_bytes) + batch.nbytes)
            for name, values in batch.to_pydict().items():
                budget.add(sum(_cost(v) for v in values) - len(values) * CELL_OVERHEAD)  # the Python objects
                data[name].extend(values)
    return columns, data


def read_table(
    spec: Any, limits: DataLimits | None = None, row_bytes: int = 0
) -> tuple[list[str], dict[str, list], int]:
    """Read the dataset file into (columns, column data, row count).

    The read stops with EngineError("limit_exceeded") once the table (plus `row_bytes` per row, the id row
    it becomes) would take more than limits.max_dataset_bytes.
    """
    budget = _Budget(resolve(limits), row_bytes)
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
        columns, data = reader(path, budget)
    except (TextDatasetError, EngineError):
        raise
    except RecursionError:
        raise TextDatasetError(f"the {fmt.upper()} file is nested too deeply to read") from None
    except Exception as e:  # OSError, UnicodeDecodeError, csv.Error, pyarrow's own errors
        reason = str(e).replace(path, os.path.basename(path))  # pyarrow names the file it could not open
        raise TextDatasetError(f"could not read the file as {fmt.upper()}: {reason}") from None
    n = len(data[columns[0]]) if columns else 0
    if n == 0:
        raise TextDatasetError("the dataset has no rows")
    return columns, data, n


def _load_tokenizer(path: str | None):
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


def _max_length(spec: Any, limits: DataLimits) -> int:
    value = getattr(spec, "max_length", None)
    if value is None:
        return min(DEFAULT_MAX_LENGTH, limits.max_tokens)
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < 1:
        raise TextDatasetError(f"max_length must be an integer from 1 to {limits.max_tokens}, got {value!r}")
    limits.check("max_tokens", int(value), "max_length (tokens per example)")
    return int(value)


def _parse_ids(value: Any, row: int) -> list[int]:
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
    fmt = str(spec.format).lower()
    text_column = getattr(spec, "text_column", None)
    tokenizer_path = getattr(spec, "tokenizer_path", None)
    use_text = text_column is not None or "input_ids" not in columns
    text_column = text_column or "text"
    if use_text:
        if text_column not in columns:
            raise TextDatasetError(
                f"text column {text_column!r} not found; the columns are {short_list(columns)} "
                "(set text_column, or give pre-tokenised ids in an 'input_ids' column)"
            )
        tok = _load_tokenizer(tokenizer_path)
        pad_id = _pad_id(tok)
        vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        texts = data[text_column]
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TextDatasetError(f"text column {text_column!r} is not text in row {bad + 1}")
        x = _tokenize(tok, texts, max_length, pad_id)
    else:
        tok = _load_tokenizer(tokenizer_path) if tokenizer_path else None
        pad_id = _pad_id(tok) if tok else 0
        tok_vocab = int(tok.get_vocab_size(with_added_tokens=True)) if tok else None
        x = np.full((n, max_length), pad_id, dtype=np.int64)
        max_id = 0
        for i, v in enumerate(data["input_ids"]):
            ids = _parse_ids(v, i + 1)
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
        vocab_size = tok_vocab if tok_vocab is not None else max(max_id, pad_id) + 1
    label_column = getattr(spec, "label_column", None)
    y, classes = None, given_classes
    classes = [str(c) for c in classes] if classes else None
    if label_column is not None and label_column not in columns:
        raise TextDatasetError(f"label column {label_column!r} not found; the columns are {short_list(columns)}")
    label_column = label_column or "label"
    if label_column in columns:
        y, classes = _labels(data[label_column], label_column, given_classes, fmt, limits)
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


def _tokenize(tok, texts: list[str], max_length: int, pad_id: int) -> np.ndarray:
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
            raise TextDatasetError(f"could not tokenise the text column: {_tokenizer_failure(e)}") from None
        for row, enc in enumerate(encodings, start=start):
            ids = enc.ids[:max_length]  # the special tokens can outgrow a tiny max_length: cut, not an error
            x[row, : len(ids)] = ids
    return x


def _tokenizer_failure(e: BaseException) -> str:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "retry-limit" in message:
        return "a regular expression of the tokenizer backtracked past its limit (a catastrophic pattern)"
    return message[:300]


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
