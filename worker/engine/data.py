"""Dataset loading: .npz and numeric CSV here; text tables are handed to worker.engine.text."""

from __future__ import annotations

import csv
import hashlib
import logging
import zipfile
from dataclasses import dataclass

import numpy as np

from worker.engine.config import DatasetSpec
from worker.engine.errors import EngineError

logger = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMN = "label"


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
    if spec.text_column or spec.tokenizer_path or spec.format in ("jsonl", "parquet"):
        return True
    return spec.format == "csv" and "input_ids" in _csv_header(spec.path)


def _csv_header(path: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None) or []
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # the numeric reader reports the problem with its own message
    return [h.strip() for h in header]


def load_dataset(spec: DatasetSpec) -> LoadedDataset:
    """Read a dataset described by `spec`, raising EngineError("invalid_dataset") on bad content."""
    if is_text(spec):
        from worker.engine.text import TextDatasetError, load_text

        try:
            d = load_text(spec)
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

        return LoadedDataset(*load_image_folder(spec))
    if spec.format == "npz":
        x, y = _read_npz(spec.path)
        columns = None
    elif spec.format == "csv":
        x, y, columns = _read_csv(spec)
    else:
        raise EngineError(
            "invalid_dataset",
            f"unsupported dataset format {spec.format!r}; supported: npz, csv, jsonl, parquet",
        )
    if x.shape[0] == 0:
        raise EngineError("invalid_dataset", "the dataset has no rows")
    if y is not None and y.shape[0] != x.shape[0]:
        raise EngineError("invalid_dataset", f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    y, classes = encode_labels(y, spec.classes)
    return LoadedDataset(x, y, classes, columns)


def _optional_int64(y) -> np.ndarray | None:
    return None if y is None else np.asarray(y, dtype=np.int64)


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "x" not in names:
                raise EngineError("invalid_dataset", f"the .npz file needs an array named 'x'; found {names}")
            x = archive["x"]
            y = archive["y"] if "y" in names else None
    except EngineError:
        raise
    except ValueError as exc:  # numpy refuses object arrays when allow_pickle=False
        raise EngineError(
            "invalid_dataset",
            f"the .npz file holds pickled objects, which are refused "
            f"for safety; store plain numeric arrays ({exc})",
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise EngineError("invalid_dataset", f"cannot read the .npz file: {exc}") from exc
    if x.ndim < 2:
        raise EngineError("invalid_dataset", f"x must have shape [rows, ...], got {list(x.shape)}")
    if np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_:
        x = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.int64)  # token ids or integer features; the teacher decides
    else:
        raise EngineError("invalid_dataset", f"x must be numeric, got dtype {x.dtype}")
    if y is not None and y.ndim != 1:
        raise EngineError("invalid_dataset", f"y must be one label per row, got shape {list(y.shape)}")
    return x, y


def _read_csv(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    try:
        with open(spec.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EngineError("invalid_dataset", f"cannot read the CSV file: {exc}") from exc
    if not header:
        raise EngineError("invalid_dataset", "the CSV file is empty; it needs a header row")
    header = [h.strip() for h in header]
    label_column = spec.label_column or DEFAULT_LABEL_COLUMN
    if label_column not in header:
        if spec.label_column:  # the user named it, so its absence is an error, not "unlabeled"
            raise EngineError(
                "invalid_dataset",
                f"label column {spec.label_column!r} not found; the CSV has columns {header}",
            )
        label_index = None
    else:
        label_index = header.index(label_column)
    feature_index = [i for i in range(len(header)) if i != label_index]
    if not feature_index:
        raise EngineError("invalid_dataset", "the CSV has no feature columns")
    features, labels = [], []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise EngineError(
                "invalid_dataset", f"CSV line {line} has {len(row)} fields, the header has {len(header)}"
            )
        try:
            features.append([float(row[i]) for i in feature_index])
        except ValueError as exc:
            raise EngineError(
                "invalid_dataset",
                f"CSV line {line}: feature columns must be numeric ({exc}); for text set text_column",
            ) from exc
        if label_index is not None:
            labels.append(row[label_index].strip())
    x = np.asarray(features, dtype=np.float32).reshape(len(features), len(feature_index))
    y = np.asarray(labels) if label_index is not None else None
    return x, y, header


def encode_labels(
    y: np.ndarray | None, classes: list[str] | None
) -> tuple[np.ndarray | None, list[str] | None]:
    """Integer labels keep their values; string labels follow `classes` or else sorted order."""
    if y is None:
        return None, [str(c) for c in classes] if classes else None
    as_int = _as_integers(y)
    if as_int is not None:
        if as_int.min() < 0:
            raise EngineError("invalid_dataset", f"integer labels must be >= 0, found {int(as_int.min())}")
        if not classes:
            return as_int, [str(i) for i in range(int(as_int.max()) + 1)]
        if int(as_int.max()) >= len(classes):  # integer labels keep their values; classes only name them
            raise EngineError(
                "invalid_dataset", f"label {int(as_int.max())} has no name in classes {classes}"
            )
        return as_int, [str(c) for c in classes]
    names = [str(v) for v in y.tolist()]
    order = [str(c) for c in classes] if classes else sorted(set(names))
    index = {name: i for i, name in enumerate(order)}
    missing = sorted(set(names) - set(index))
    if missing:
        raise EngineError("invalid_dataset", f"labels {missing[:10]} are not in classes {order}")
    return np.asarray([index[n] for n in names], dtype=np.int64), order


def _as_integers(y: np.ndarray) -> np.ndarray | None:
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.int64) if np.all(np.mod(y, 1) == 0) else None
    try:
        values = np.asarray([int(v) for v in y.tolist()], dtype=np.int64)
    except (TypeError, ValueError):
        return None
    return values


def inspect_dataset(spec: DatasetSpec) -> dict:
    """Open a dataset and describe it (rows, columns, per-example input shape and dtype, labels)."""
    data = load_dataset(spec)
    info = {
        "format": spec.format,
        "rows": data.rows,
        "columns": data.columns,
        "input": {"shape": data.input_shape, "dtype": str(data.x.dtype)},
        "has_labels": data.y is not None,
        "num_classes": data.num_classes,
        "classes": data.classes,
    }
    if data.pad_id is not None:
        info.update({"pad_id": data.pad_id, **(data.text_info or {})})
    return info
