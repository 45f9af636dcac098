"""Dataset loading: .npz and numeric CSV here; text tables are handed to worker.engine.text."""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from worker.engine.config import DatasetSpec
from worker.engine.errors import EngineError
from worker.engine.limits import DataLimits, check_class_names, resolve, short_list

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
        x, y = _read_npz(spec.path, limits)
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


def _read_npz(path: str, limits: DataLimits) -> tuple[np.ndarray, np.ndarray | None]:
    """x (float32 or int64) and y from an .npz, after checking each array's .npy header against `limits`.

    The headers (shape, dtype) are read from the zip members without decompressing the data, so a small
    archive of compressed zeros that declares a huge array is refused before anything is allocated.
    Arrays are read with numpy's .npy reader, never with pickle.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = {_npz_key(name): name for name in zf.namelist()}
            if "x" not in members:
                found = sorted(members)[:20]
                raise EngineError(
                    "invalid_dataset", f"the .npz file needs an array named 'x' (the features); found {found}"
                )
            x_shape, x_dtype = _npy_header(zf, members["x"], "x")
            y_shape, y_dtype = _npy_header(zf, members["y"], "y") if "y" in members else (None, None)
            _check_npz_arrays(x_shape, x_dtype, y_shape, y_dtype, limits)
            x = _npy_read(zf, members["x"], "x")
            y = _npy_read(zf, members["y"], "y") if "y" in members else None
    except EngineError:
        raise
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise EngineError("invalid_dataset", f"cannot read the .npz file: {reason}") from exc
    x = x.astype(_npz_x_dtype(x.dtype), copy=False)  # float32 features, or int64 token ids / integer features
    return x, y


def _npz_x_dtype(dtype: np.dtype) -> type:
    return np.float32 if np.issubdtype(dtype, np.floating) or dtype == np.bool_ else np.int64


def _npz_key(member: str) -> str:
    return member[: -len(".npy")] if member.endswith(".npy") else member


def _npy_header(zf: zipfile.ZipFile, member: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the .npy header of one .npz member; the array data is not read."""
    fmt = np.lib.format
    with zf.open(member) as fh:
        try:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
        except (ValueError, TypeError, SyntaxError, EOFError) as exc:
            raise EngineError(
                "invalid_dataset", f"array {name!r} in the .npz file is not a readable .npy array: {exc}"
            ) from exc
    if dtype.hasobject:
        raise EngineError(
            "invalid_dataset",
            f"array {name!r} in the .npz file holds pickled objects, which are refused for safety; "
            "store plain numeric arrays",
        )
    return tuple(int(s) for s in shape), dtype


def _check_npz_arrays(x_shape, x_dtype, y_shape, y_dtype, limits: DataLimits) -> None:
    """Shapes, dtypes and sizes of x and y, from their headers, before either is read."""
    if len(x_shape) < 2:
        raise EngineError("invalid_dataset", f"x must have shape [rows, ...], got {list(x_shape)}")
    numeric = np.issubdtype(x_dtype, np.floating) or np.issubdtype(x_dtype, np.integer) or x_dtype == np.bool_
    if not numeric:
        raise EngineError("invalid_dataset", f"x must be numeric, got dtype {x_dtype}")
    if y_shape is not None and len(y_shape) != 1:
        raise EngineError("invalid_dataset", f"y must be one label per row, got shape {list(y_shape)}")
    if y_shape is not None and y_shape[0] != x_shape[0]:
        raise EngineError("invalid_dataset", f"x has {x_shape[0]} rows but y has {y_shape[0]}")
    per_example = math.prod(x_shape[1:])
    limits.check("max_example_elements", per_example, f"the number of values per example (x of shape {list(x_shape)})")
    # x as stored and, when its dtype changes, as converted (float32 or int64) are both in memory for a moment.
    out = np.dtype(_npz_x_dtype(x_dtype))
    total = x_shape[0] * per_example * (x_dtype.itemsize + (out.itemsize if out != x_dtype else 0))
    if y_shape is not None:
        total += y_shape[0] * max(y_dtype.itemsize, 8)
    limits.check("max_dataset_bytes", total, "the memory the .npz arrays take once decompressed, in bytes,")


def _npy_read(zf: zipfile.ZipFile, member: str, name: str) -> np.ndarray:
    with zf.open(member) as fh:
        try:
            return np.lib.format.read_array(fh, allow_pickle=False)
        except ValueError as exc:
            raise EngineError("invalid_dataset", f"array {name!r} in the .npz file is truncated or corrupt") from exc


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


def encode_labels(
    y: np.ndarray | None, classes: list[str] | None, limits: DataLimits | None = None
) -> tuple[np.ndarray | None, list[str] | None]:
    """Integer labels keep their values; string labels follow `classes` or else sorted order.

    The number of classes (the largest integer label + 1, or the distinct string labels) is checked against
    `limits.max_classes` before any per-class list is built.
    """
    limits = resolve(limits)
    if y is None:
        return None, [str(c) for c in classes] if classes else None
    as_int = _as_integers(y)
    if as_int is not None:
        if as_int.min() < 0:
            raise EngineError("invalid_dataset", f"integer labels must be >= 0, found {int(as_int.min())}")
        top = int(as_int.max())
        limits.check("max_classes", top + 1, "the number of classes (the largest label + 1)")
        if not classes:
            return as_int, [str(i) for i in range(top + 1)]
        if top >= len(classes):  # integer labels keep their values; classes only name them
            raise EngineError("invalid_dataset", f"label {top} has no name in classes {short_list(classes)}")
        return as_int, [str(c) for c in classes]
    names = [str(v) for v in y.tolist()]
    distinct = set(names)
    if not classes:
        limits.check("max_classes", len(distinct), "the number of classes (distinct labels)")
        check_class_names(distinct)
    order = [str(c) for c in classes] if classes else sorted(distinct)
    index = {name: i for i, name in enumerate(order)}
    missing = sorted(distinct - set(index))
    if missing:
        raise EngineError("invalid_dataset", f"labels {short_list(missing, 10)} are not in classes {short_list(order)}")
    return np.asarray([index[n] for n in names], dtype=np.int64), order


def _as_integers(y: np.ndarray) -> np.ndarray | None:
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if y.size == 0 or not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
            return None
        return np.clip(y, -1, 2**62).astype(np.int64)  # past int64 a label is far past any class cap anyway
    try:
        values = np.asarray([int(v) for v in y.tolist()], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return None
    return values


def inspect_dataset(spec: DatasetSpec, limits: DataLimits | None = None) -> dict:
    """Open a dataset and describe it (rows, columns, per-example input shape and dtype, labels).

    The info stays small: `classes` is bounded by limits.max_classes, and `columns` lists at most
    INFO_MAX_COLUMNS names (`num_columns` counts them all).
    """
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
