"""Dataset loading: numeric CSV here; .npz in worker.engine.npz, text tables in worker.engine.text, labels in
worker.engine.labels."""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from worker.engine.config import DatasetSpec
from worker.engine.errors import EngineError
from worker.engine.labels import encode_labels
from worker.engine.limits import DataLimits, check_class_names, resolve, short_list
from worker.engine.npz import read_npz

logger = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMN = "label"
INFO_MAX_COLUMNS = 1000  # an inspected dataset's info lists at most this many column names (num_columns counts all)
_CSV_BLOCK_VALUES = 1 << 20  # numeric CSV rows are packed into float32 blocks of about this many values
_CSV_BYTES = "the memory the CSV takes once read (float32 features and a label per row, in bytes)"


@dataclass
class LoadedDataset:
    """Examples `x` (float32 features or int64 token ids), labels `y` (int64 or None) and class names."""

    x: np.ndarray
    y: np.ndarray | None
    classes: list[str] | None
    columns: list[str] | None = None
    tokenizer_path: str | None = None
    pad_id: int | None = None  # token-id data only: the tokenizer's pad id (0 when it has none)
    text_info: dict | None = None  # token-id data only: vocab_size, max_length, mean_length
    mask_id: int | None = None  # token-id data only: the id token masking writes ([MASK], else [UNK])

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> list[int]:
        return [int(s) for s in self.x.shape[1:]]

    @property
    def num_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        return None if self.y is None else int(self.y.max()) + 1


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_text(spec: DatasetSpec) -> bool:
    """Whether the dataset is a text table that worker.engine.text must read.

    A CSV with an `input_ids` column is pre-tokenised text even without a tokenizer.
    """
    if spec.text_column or spec.tokenizer_path or spec.tokenizer_from or spec.format in ("jsonl", "parquet"):
        return True
    return spec.format == "csv" and "input_ids" in _csv_header(spec.path)


def _csv_header(path: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None) or []
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # the numeric reader reports the problem with its own message
    return [h.strip() for h in header]


def load_dataset(spec: DatasetSpec, limits: DataLimits | None = None) -> LoadedDataset:
    """Read a dataset described by `spec`, raising EngineError("invalid_dataset") on bad content.

    Sizes are checked against `limits` (defaults: DataLimits()) before memory is allocated for them:
    EngineError("limit_exceeded") names the cap and the server setting that raises it.
    """
    limits = resolve(limits)
    check_classes_option(spec.classes, limits)
    if is_text(spec):
        from worker.engine.text import TextDatasetError, load_text

        try:
            d = load_text(spec, limits)
        except TextDatasetError as exc:
            raise EngineError("invalid_dataset", exc.message) from exc
        info = {k: d[k] for k in ("vocab_size", "max_length")}
        info["mean_length"] = float((d["x"] != d["pad_id"]).sum(axis=1).mean())
        return LoadedDataset(
            np.asarray(d["x"], dtype=np.int64),
            _optional_int64(d["y"]),
            d["classes"],
            d["columns"],
            tokenizer_path=spec.tokenizer_path,
            pad_id=int(d["pad_id"]),
            text_info=info,
            mask_id=d.get("mask_id"),
        )
    if spec.format == "image_folder":
        from worker.engine.images import load_image_folder

        return LoadedDataset(*load_image_folder(spec, limits))
    if spec.format == "npz":
        x, y = read_npz(spec.path, limits)
        columns = None
    elif spec.format == "csv":
        x, y, columns = _read_csv(spec, limits)
    else:
        raise EngineError(
            "invalid_dataset",
            f"unsupported dataset format {spec.format!r}; supported: npz, csv, jsonl, parquet",
        )
    if x.shape[0] == 0:
        raise EngineError("invalid_dataset", "the dataset has no rows")
    if y is not None and y.shape[0] != x.shape[0]:
        raise EngineError("invalid_dataset", f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    y, classes = encode_labels(y, spec.classes, limits)
    return LoadedDataset(x, y, classes, columns)


def check_classes_option(classes: list | None, limits: DataLimits) -> None:
    """Refuse a `classes` option longer than max_classes or with over-long names."""
    if not classes:
        return
    limits.check("max_classes", len(classes), "the number of names in classes")
    check_class_names(str(c) for c in classes)


def _optional_int64(y) -> np.ndarray | None:
    return None if y is None else np.asarray(y, dtype=np.int64)


def _read_csv(spec: DatasetSpec, limits: DataLimits) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Numeric CSV, read row by row into float32 blocks, within the example and dataset size caps."""
    try:
        with open(spec.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise EngineError("invalid_dataset", "the CSV file is empty; it needs a header row")
            header = [h.strip() for h in header]
            label_index, feature_index = _csv_columns(header, spec.label_column)
            width = len(feature_index)
            limits.check("max_example_elements", width, "the number of values per example (feature columns)")
            blocks, block, labels, rows = [], [], [], 0
            seen: dict[str, str] = {}  # one string object per distinct label: a label costs a pointer per row
            block_rows = max(1, _CSV_BLOCK_VALUES // width)
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise EngineError(
                        "invalid_dataset", f"CSV line {line} has {len(row)} fields, the header has {len(header)}"
                    )
                try:
                    block.append([float(row[i]) for i in feature_index])
                except ValueError as exc:
                    raise EngineError(
                        "invalid_dataset",
                        f"CSV line {line}: feature columns must be numeric ({exc}); for text set text_column",
                    ) from exc
                if label_index is not None:
                    label = row[label_index].strip()
                    if label not in seen:
                        check_class_names((label,))
                        seen[label] = label
                        limits.check("max_classes", len(seen), "the number of classes (distinct labels)")
                    labels.append(seen[label])
                rows += 1
                if len(block) >= block_rows:
                    limits.check("max_dataset_bytes", rows * (width * 4 + 8), _CSV_BYTES)
                    blocks.append(np.asarray(block, dtype=np.float32))
                    block = []
    except EngineError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise EngineError("invalid_dataset", f"cannot read the CSV file: {reason}") from exc
    limits.check("max_dataset_bytes", rows * (width * 4 + 8), _CSV_BYTES)
    if block or not blocks:
        blocks.append(np.asarray(block, dtype=np.float32).reshape(len(block), width))
    x = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    # An object array of the shared strings: a fixed-width string array would take rows x the longest label.
    y = np.asarray(labels, dtype=object) if label_index is not None else None
    return x, y, header


def _csv_columns(header: list[str], label_column: str | None) -> tuple[int | None, list[int]]:
    """(index of the label column or None, indexes of the feature columns)."""
    if (label_column or DEFAULT_LABEL_COLUMN) not in header:
        if label_column:  # the user named it, so its absence is an error, not "unlabeled"
            raise EngineError(
                "invalid_dataset",
                f"label column {label_column!r} not found; the CSV has columns {short_list(header)}",
            )
        label_index = None
    else:
        label_index = header.index(label_column or DEFAULT_LABEL_COLUMN)
    feature_index = [i for i in range(len(header)) if i != label_index]
    if not feature_index:
        raise EngineError("invalid_dataset", "the CSV has no feature columns")
    return label_index, feature_index


def inspect_dataset(spec: DatasetSpec, limits: DataLimits | None = None) -> dict:
    """Open a dataset and describe it (rows, columns, per-example input shape and dtype, labels).

    The info stays small: `classes` is bounded by limits.max_classes, and `columns` lists at most
    INFO_MAX_COLUMNS names (`num_columns` counts them all).
    """
    if spec.tokenizer_from and not spec.tokenizer_path:
        return _describe_untokenised(spec, limits)
    from worker.engine.lm_inspect import describe_prompts, is_prompts

    if is_prompts(spec):  # for a causal-LM teacher, whose tokenizer renders it at job time
        return describe_prompts(spec)
    data = load_dataset(spec, limits)
    columns = data.columns
    info = {
        "format": spec.format,
        "rows": data.rows,
        "columns": columns if columns is None else columns[:INFO_MAX_COLUMNS],
        "input": {"shape": data.input_shape, "dtype": str(data.x.dtype)},
        "has_labels": data.y is not None,
        "num_classes": data.num_classes,
        "classes": data.classes,
    }
    if columns is not None and len(columns) > INFO_MAX_COLUMNS:
        info["num_columns"] = len(columns)
    if data.pad_id is not None:
        info.update({"pad_id": data.pad_id, **(data.text_info or {})})
    return info


def _describe_untokenised(spec: DatasetSpec, limits: DataLimits | None) -> dict:
    from worker.engine.text import TextDatasetError, describe_untokenised

    try:
        info = describe_untokenised(spec, limits)
    except TextDatasetError as exc:
        raise EngineError("invalid_dataset", exc.message) from exc
    columns = info["columns"]
    info.update(format=spec.format, columns=columns[:INFO_MAX_COLUMNS])
    if len(columns) > INFO_MAX_COLUMNS:
        info["num_columns"] = len(columns)
    return info
