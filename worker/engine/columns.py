"""The columns of a table dataset (CSV, JSONL, Parquet) and the kind of values each holds, from a bounded sample.

Runs where uploads are opened (the validation child): the sample is a few thousand rows at most, so describing a
table costs little next to loading it.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MAX_SAMPLE_ROWS = 10_000
SAMPLE_CELLS = 2_000_000  # rows x columns read at most: a wide table is sampled on fewer rows
MAX_DISTINCT = 1000  # distinct values counted per column; past it the count is reported as null (many)
MAX_LISTED_COLUMNS = 1000  # as many as the info's `columns` lists
# One cell or line read at most: the sample also runs on a refused file, whose one line may be the whole file.
MAX_CELL_CHARS = 1 << 20
MAX_LINE_CHARS = 1 << 22
TABLE_FORMATS = ("csv", "jsonl", "parquet")


@dataclass
class ColumnSummary:
    """What a sample shows of one column: the kinds of its values, its distinct values, its text lengths."""

    name: str
    kinds: set[str] = field(default_factory=set)
    distinct: set[str] = field(default_factory=set)
    many: bool = False  # more than MAX_DISTINCT distinct values
    text_chars: int = 0
    values: int = 0

    def add(self, value: Any, kind: str | None) -> None:
        """Count one cell (kind None: missing)."""
        if kind is None:
            return
        self.kinds.add(kind)
        self.values += 1
        if kind == "string":
            self.text_chars += len(value)
        if not self.many:
            self.distinct.add(str(value)[:200])
            self.many = len(self.distinct) > MAX_DISTINCT

    @property
    def kind(self) -> str:
        """integer, float, string, boolean, list, object, empty (no value) or mixed."""
        kinds = self.kinds - {"integer"} if self.kinds == {"integer", "float"} else self.kinds
        if not kinds:
            return "empty"
        return next(iter(kinds)) if len(kinds) == 1 else "mixed"

    @property
    def distinct_count(self) -> int | None:
        """Distinct values in the sample, None past MAX_DISTINCT."""
        return None if self.many else len(self.distinct)

    @property
    def mean_text_chars(self) -> float:
        """The mean length of its string values (0 for none)."""
        return self.text_chars / self.values if self.values else 0.0

    def public(self) -> dict:
        """The entry of the upload's info `schema`."""
        return {"name": self.name, "kind": self.kind, "distinct": self.distinct_count}


@dataclass
class TableSample:
    """The columns of a table, in file order, summarised from its first `rows` rows."""

    columns: list[ColumnSummary]
    rows: int

    def get(self, name: str) -> ColumnSummary | None:
        """The column of that name, or None."""
        return next((c for c in self.columns if c.name == name), None)

    def schema(self) -> list[dict]:
        """The info's `schema`: name, kind and distinct count of each column (at most MAX_LISTED_COLUMNS)."""
        return [c.public() for c in self.columns[:MAX_LISTED_COLUMNS]]


def csv_cell_kind(text: str) -> str | None:
    """The kind of a CSV cell, whose values are all text: integer, float, string, or None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        int(text)
        return "integer"
    except ValueError:
        pass
    try:
        float(text)
        return "float"
    except ValueError:
        return "string"


def value_kind(value: Any) -> str | None:
    """The kind of a JSON or Parquet value; None when missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    return "object"


def sample_table(path: str, fmt: str, max_rows: int = MAX_SAMPLE_ROWS) -> TableSample:
    """Read the first rows of a CSV, JSONL or Parquet file and summarise its columns."""
    reader = {"csv": _sample_csv, "jsonl": _sample_jsonl, "parquet": _sample_parquet}[fmt]
    return reader(path, max_rows)


def _rows_for(width: int, max_rows: int) -> int:
    return max(1, min(max_rows, SAMPLE_CELLS // max(width, 1)))


def _sample_csv(path: str, max_rows: int) -> TableSample:
    # Text cells may be longer than csv's default limit; the limit is process-wide, so it is put back after.
    previous = csv.field_size_limit(MAX_CELL_CHARS)
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, None) or []]
            columns = [ColumnSummary(name) for name in header]
            rows, limit = 0, _rows_for(len(header), max_rows)
            for row in reader:
                if rows >= limit:
                    break
                if not row or len(row) != len(header):
                    continue
                for column, cell in zip(columns, row, strict=True):
                    column.add(cell.strip(), csv_cell_kind(cell))
                rows += 1
    finally:
        csv.field_size_limit(previous)
    return TableSample(columns, rows)


def _sample_jsonl(path: str, max_rows: int) -> TableSample:
    columns: dict[str, ColumnSummary] = {}
    rows = 0
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        while rows < _rows_for(len(columns), max_rows):
            line = f.readline(MAX_LINE_CHARS)
            if not line or (len(line) == MAX_LINE_CHARS and not line.endswith("\n")):
                break  # the end, or a line too long to sample: what was read so far is the sample
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(obj, dict):
                continue
            for key, value in obj.items():
                columns.setdefault(key, ColumnSummary(key)).add(value, value_kind(value))
            rows += 1
    return TableSample(list(columns.values()), rows)


def _sample_parquet(path: str, max_rows: int) -> TableSample:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        names = list(pf.schema_arrow.names)
        columns = [ColumnSummary(name) for name in names]
        limit = _rows_for(len(names), max_rows)
        batch = next(pf.iter_batches(batch_size=limit), None)
    if batch is None:
        return TableSample(columns, 0)
    for column, values in zip(columns, batch.to_pydict().values(), strict=True):
        for value in values:
            column.add(value, value_kind(value))
    return TableSample(columns, batch.num_rows)
