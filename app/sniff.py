"""Recognise uploaded files by their content, never by name, without importing torch or unpickling.

The API refuses what can never be valid at once (pickles, torch.save archives, an .npz without `x`,
a CSV without the named label column); the worker then opens what is left and validates it fully.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from app.errors import ApiError, Unprocessable

logger = logging.getLogger(__name__)

MODEL_FORMATS_HINT = (
    "upload a TorchScript archive (torch.jit.script/trace(...).save), a torch.export program (.pt2, "
    "torch.export.save) or an ONNX file"
)
DATASET_FORMATS_HINT = (
    "upload an .npz with arrays x and optional y, a CSV, JSONL or Parquet table, or a zip of "
    "class folders of PNG/JPEG images"
)
JSONL_HINT = 'a JSONL dataset holds one flat JSON object per line, e.g. {"text": "...", "label": 1}'
MAX_NPZ_ARRAYS = 1000
# What parsing crafted content can raise (zipfile, zlib, numpy's .npy header parser with its tokenizer, json,
# csv): never a server error.
CONTENT_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    SyntaxError,
    csv.Error,
    tokenize.TokenError,
)
# zipfile also raises OSError on a crafted archive (a seek before the start of the file).
ZIP_ERRORS = (*CONTENT_ERRORS, OSError)


def _unreadable(what: str, exc: BaseException, code: str, hint: str) -> Unprocessable:
    """A 422 for content a parser choked on: the parser's own text (it may name server paths) stays in the log."""
    logger.info("unreadable upload (%s): %s: %s", what, type(exc).__name__, exc)
    return Unprocessable(f"{what}; {hint}", code=code)


def _is_pickle(head: bytes) -> bool:
    # Protocol 2+ pickles start with PROTO (0x80) and the protocol number.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _zip_names(path: Path, code: str, hint: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except ZIP_ERRORS as exc:
        raise _unreadable(
            "the file starts like a zip archive but its directory cannot be read (truncated or corrupt)",
            exc,
            code,
            hint,
        ) from None


def sniff_model(path: Path) -> str:
    """The model format of a file: 'torchscript', 'pt2' or 'onnx'; anything else answers 422."""
    try:
        return _sniff_model(path)
    except ApiError:
        raise
    except CONTENT_ERRORS as exc:
        raise _unreadable("the file cannot be read as a model", exc, "invalid_model", MODEL_FORMATS_HINT) from None


def _sniff_model(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        raise Unprocessable(f"the file is empty; {MODEL_FORMATS_HINT}", code="invalid_model")
    if _is_pickle(head):
        raise Unprocessable(
            f"the file is a Python pickle, which the service never loads (it can run arbitrary code); "
            f"{MODEL_FORMATS_HINT}",
            code="unsupported_model_format",
        )
    if head.startswith(b"PK\x03\x04"):
        names = _zip_names(path, "invalid_model", MODEL_FORMATS_HINT)
        tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
        if any(t.startswith("code/") for t in tails) and "data.pkl" in tails:
            return "torchscript"
        if "archive_format" in tails or any(t.startswith("models/") for t in tails):
            return "pt2"
        if "data.pkl" in tails:
            raise Unprocessable(
                "the file is a torch.save archive (a pickled Python object), which the service never loads; "
                f"{MODEL_FORMATS_HINT}",
                code="unsupported_model_format",
            )
        raise Unprocessable(
            f"the zip archive is not a TorchScript or torch.export model; {MODEL_FORMATS_HINT}",
            code="unsupported_model_format",
        )
    # An ONNX ModelProto is a protobuf whose first field is ir_version (field 1, varint): tag byte 0x08.
    if head[0] == 0x08:
        return "onnx"
    raise Unprocessable(f"the file is not a recognised model; {MODEL_FORMATS_HINT}", code="unsupported_model_format")


def _npz_arrays(path: Path) -> dict[str, np.dtype]:
    """Array names and dtypes of an .npz, read from the .npy headers only."""
    arrays: dict[str, np.dtype] = {}
    with zipfile.ZipFile(path) as zf:
        names = [name for name in zf.namelist() if name.endswith(".npy")]
        if len(names) > MAX_NPZ_ARRAYS:
            raise Unprocessable(
                f"the .npz holds {len(names)} arrays; a dataset needs x and optional y "
                f"(at most {MAX_NPZ_ARRAYS} arrays are accepted)",
                code="invalid_dataset",
            )
        for name in names:
            with zf.open(name) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    reader = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    _shape, _order, dtype = reader(fh)
                except CONTENT_ERRORS as exc:
                    raise _unreadable(
                        f"array {_shorten(name)!r} in the .npz is not a valid .npy (save it with numpy.savez)",
                        exc,
                        "invalid_dataset",
                        DATASET_FORMATS_HINT,
                    ) from None
            arrays[name[:-4]] = dtype
    return arrays


def _check_npz(path: Path) -> None:
    arrays = _npz_arrays(path)
    if "x" not in arrays:
        found = sorted(arrays)
        raise Unprocessable(
            f"the .npz has no array named 'x' (found: {_names(found) if found else 'none'}); "
            "save features as x and optional labels as y",
            code="invalid_dataset",
        )
    for name, dtype in arrays.items():
        if dtype.hasobject:
            raise Unprocessable(
                f"array {_shorten(name)!r} in the .npz holds Python objects (pickled), which the service "
                "never loads; save numeric arrays",
                code="invalid_dataset",
            )


def _check_image_folder(path: Path) -> bool:
    """A zip of class folders of PNG/JPEG images: checked for path escapes, links and zip bombs (422)."""
    from app.archives import check_zip, image_members

    images = image_members(check_zip(path))
    if not images:
        return False
    with zipfile.ZipFile(path) as zf, zf.open(images[0]) as fh:
        magic = fh.read(8)
    if not (magic.startswith(b"\x89PNG\r\n\x1a\n") or magic.startswith(b"\xff\xd8\xff")):
        raise Unprocessable(f"{_shorten(images[0].filename)!r} is not a PNG or JPEG image", code="invalid_dataset")
    if not any("/" in i.filename for i in images):
        raise Unprocessable(
            "the archive's images must sit in one folder per class (cat/1.png, dog/2.png)",
            code="invalid_dataset",
        )
    return True


def _first_line(path: Path, limit: int = 1 << 20) -> str:
    with open(path, "rb") as fh:
        raw = fh.read(limit)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # A multibyte character may straddle the cut; a real binary file fails on the first line too.
        text = raw.decode("utf-8-sig", errors="ignore") if len(raw) == limit else None
        if text is None:
            raise Unprocessable(
                f"the file is not UTF-8 text nor a known binary format; {DATASET_FORMATS_HINT}",
                code="unsupported_dataset_format",
            ) from None
    return text.split("\n", 1)[0].strip("\r")


CSV_HEADER_FIELD_CHARS = 131_072  # csv's default field limit: no column name is longer


def sniff_dataset(path: Path, options: dict) -> str:
    """The dataset format ('npz', 'parquet', 'jsonl', 'csv'); checks what can be checked without loading.

    Any content a parser chokes on (a corrupt zip, JSON nested 100k deep, a 1 MiB CSV field) answers 422."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise Unprocessable(f"the file is empty; {DATASET_FORMATS_HINT}", code="invalid_dataset")
    if _is_pickle(head):
        raise Unprocessable(
            f"the file is a Python pickle, which the service never loads; {DATASET_FORMATS_HINT}",
            code="unsupported_dataset_format",
        )
    if head.startswith(b"PK\x03\x04"):
        try:
            return _sniff_zip_dataset(path)
        except ApiError:
            raise
        except ZIP_ERRORS as exc:
            raise _unreadable(
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
    line = _first_line(path).lstrip()
    if line.startswith("{"):
        columns = _jsonl_columns(line)
        _check_columns(columns, options)
        return "jsonl"
    if line.startswith("[") and _is_json(line):
        raise Unprocessable(f"the first line is a JSON array, not an object; {JSONL_HINT}", code="invalid_dataset")
    try:
        columns = [c.strip() for c in next(csv.reader(io.StringIO(line)), [])]
        # csv's field limit is process-wide state that other code may raise: check the length ourselves.
        if any(len(c) > CSV_HEADER_FIELD_CHARS for c in columns):
            raise csv.Error(f"field larger than field limit ({CSV_HEADER_FIELD_CHARS})")
    except csv.Error as exc:
        raise _unreadable(
            "the first line is not a CSV header row (a field is too long or badly quoted); a CSV starts "
            "with one short line of comma-separated column names",
            exc,
            "invalid_dataset",
            DATASET_FORMATS_HINT,
        ) from None
    if len(columns) < 1 or not any(columns):
        raise Unprocessable(f"the CSV has no header row; {DATASET_FORMATS_HINT}", code="invalid_dataset")
    _check_columns(columns, options)
    return "csv"


def _sniff_zip_dataset(path: Path) -> str:
    names = _zip_names(path, "invalid_dataset", DATASET_FORMATS_HINT)
    if any(n.endswith(".npy") for n in names):
        _check_npz(path)
        return "npz"
    if _check_image_folder(path):
        return "image_folder"
    raise Unprocessable(
        f"the zip archive holds no .npy arrays nor images; {DATASET_FORMATS_HINT}",
        code="unsupported_dataset_format",
    )


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


def _shorten(text: str, limit: int = 120) -> str:
    """User-supplied names echoed in a message, cut to a readable length."""
    return text if len(text) <= limit else text[:limit] + "..."


def _names(names: list[str], limit: int = 20) -> str:
    """A list of user-supplied names for a message: the first `limit`, each shortened."""
    shown = ", ".join(repr(_shorten(n)) for n in names[:limit])
    if len(names) > limit:
        return f"[{shown}, ...] ({len(names)} in all)"
    return f"[{shown}]"


def _check_columns(columns: list[str], options: dict) -> None:
    for key in ("label_column", "text_column"):
        name = options.get(key)
        if name and name not in columns:
            raise Unprocessable(
                f"{key} {_shorten(name)!r} is not a column of the file (columns: {_names(columns)})",
                code="invalid_dataset",
            )
