"""Recognise uploaded files by their content, never by name, without importing torch or unpickling.

The API refuses what can never be valid at once (pickles, torch.save archives, an .npz without `x`,
a CSV without the named label column); the worker then opens what is left, in a sandboxed child, and
validates it fully. Models are sniffed in app/sniff_models.py, zip datasets in app/sniff_archives.py.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from app.errors import ApiError, Unprocessable
from app.sniff_archives import sniff_zip_dataset
from app.sniff_common import (
    DATASET_FORMATS_HINT,
    JSONL_HINT,
    ZIP_ERRORS,
    is_pickle,
    name_list,
    shorten,
    unreadable,
)
from app.sniff_models import sniff_model

__all__ = ["sniff_dataset", "sniff_model"]

CSV_HEADER_FIELD_CHARS = 131_072  # csv's default field limit: no column name is longer


def sniff_dataset(path: Path, options: dict) -> str:
    """The dataset format ('npz', 'image_folder', 'parquet', 'jsonl', 'csv'); checks what it can without loading.

    Any content a parser chokes on (a corrupt zip, JSON nested 100k deep, a 1 MiB CSV field) answers 422."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise Unprocessable(f"the file is empty; {DATASET_FORMATS_HINT}", code="invalid_dataset")
    if is_pickle(head):
        raise Unprocessable(
            f"the file is a Python pickle, which the service never loads; {DATASET_FORMATS_HINT}",
            code="unsupported_dataset_format",
        )
    if head.startswith(b"PK\x03\x04"):
        try:
            return sniff_zip_dataset(path)
        except ApiError:
            raise
        except ZIP_ERRORS as exc:
            raise unreadable(
                "the zip archive cannot be read (truncated, corrupt, encrypted or an unsupported compression)",
                exc,
                "invalid_dataset",
                DATASET_FORMATS_HINT,
            ) from None
    if head.startswith(b"\x93NUMPY"):
        raise Unprocessable(
            "a bare .npy holds one array; save x (and y) with numpy.savez into an .npz",
            code="unsupported_dataset_format",
        )
    if head.startswith(b"PAR1"):
        return "parquet"
    return _sniff_text_table(path, options)


def _sniff_text_table(path: Path, options: dict) -> str:
    """'jsonl' or 'csv' from the first line, whose column names are checked against the options."""
    line = _first_line(path).lstrip()
    if line.startswith("{"):
        _check_columns(_jsonl_columns(line), options)
        return "jsonl"
    if line.startswith("[") and _is_json(line):
        raise Unprocessable(f"the first line is a JSON array, not an object; {JSONL_HINT}", code="invalid_dataset")
    columns = _csv_header(line)
    if len(columns) < 1 or not any(columns):
        raise Unprocessable(f"the CSV has no header row; {DATASET_FORMATS_HINT}", code="invalid_dataset")
    _check_columns(columns, options)
    return "csv"


def _first_line(path: Path, limit: int = 1 << 20) -> str:
    with open(path, "rb") as fh:
        raw = fh.read(limit)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # A multibyte character may straddle the cut; a real binary file fails on the first line too.
        cut = raw.decode("utf-8-sig", errors="ignore") if len(raw) == limit else None
        if cut is None:
            raise Unprocessable(
                f"the file is not UTF-8 text nor a known binary format; {DATASET_FORMATS_HINT}",
                code="unsupported_dataset_format",
            ) from None
        text = cut
    return text.split("\n", 1)[0].strip("\r")


def _csv_header(line: str) -> list[str]:
    """The column names of a CSV header line; 422 when it is not one."""
    try:
        columns = [c.strip() for c in next(csv.reader(io.StringIO(line)), [])]
        # csv's field limit is process-wide state that other code may raise: check the length ourselves.
        if any(len(c) > CSV_HEADER_FIELD_CHARS for c in columns):
            raise csv.Error(f"field larger than field limit ({CSV_HEADER_FIELD_CHARS})")
    except csv.Error as exc:
        raise unreadable(
            "the first line is not a CSV header row (a field is too long or badly quoted); a CSV starts "
            "with one short line of comma-separated column names",
            exc,
            "invalid_dataset",
            DATASET_FORMATS_HINT,
        ) from None
    return columns


def _jsonl_columns(line: str) -> list[str]:
    """The keys of the first line's JSON object; 422 naming the problem when it is not one."""
    try:
        value = json.loads(line)
    except RecursionError:
        raise Unprocessable(
            f"the first line nests JSON objects or arrays too deeply to be read; {JSONL_HINT}",
            code="invalid_dataset",
        ) from None
    except json.JSONDecodeError as exc:
        raise Unprocessable(
            f"the first line is not a JSON object ({exc.msg} at character {exc.pos}); {JSONL_HINT}",
            code="invalid_dataset",
        ) from None
    except ValueError:  # e.g. an integer of more than 4300 digits
        raise Unprocessable(
            f"the first line holds a number too long to read; {JSONL_HINT}", code="invalid_dataset"
        ) from None
    if not isinstance(value, dict):
        raise Unprocessable(f"the first line is not a JSON object; {JSONL_HINT}", code="invalid_dataset")
    return list(value)


def _is_json(line: str) -> bool:
    """Whether a line parses as JSON (a document too deeply nested to parse counts as JSON)."""
    try:
        json.loads(line)
    except RecursionError:
        return True
    except ValueError:
        return False
    return True


def _check_columns(columns: list[str], options: dict) -> None:
    for key in ("label_column", "text_column"):
        name = options.get(key)
        if name and name not in columns:
            raise Unprocessable(
                f"{key} {shorten(name)!r} is not a column of the file (columns: {name_list(columns)})",
                code="invalid_dataset",
            )
