"""Reading a text table (CSV, JSONL, Parquet) into columns of Python values, within a memory budget."""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Any

from worker.engine.errors import EngineError
from worker.engine.limits import DataLimits, limit_exceeded, resolve, short_list

TEXT_FORMATS = ("csv", "jsonl", "parquet")
# A table read into Python lists costs about this many bytes per cell beyond its characters (object + pointer);
# the reading is stopped once the estimate passes limits.max_dataset_bytes.
CELL_OVERHEAD = 64
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
