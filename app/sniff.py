"""Recognise uploaded files by their content, never by name, without importing torch or unpickling.

The API refuses what can never be valid at once (pickles, torch.save archives, an .npz without `x`,
a CSV without the named label column); the worker then opens what is left and validates it fully.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from app.errors import Unprocessable

MODEL_FORMATS_HINT = (
    "upload a TorchScript archive (torch.jit.script/trace(...).save), a torch.export program (.pt2, "
    "torch.export.save) or an ONNX file"
)
DATASET_FORMATS_HINT = (
    "upload an .npz with arrays x and optional y, a CSV, JSONL or Parquet table, or a zip of "
    "class folders of PNG/JPEG images"
)


def _is_pickle(head: bytes) -> bool:
    # Protocol 2+ pickles start with PROTO (0x80) and the protocol number.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise Unprocessable(
            f"the file looks like a zip archive but cannot be read: {exc}", code="invalid_file"
        ) from None


def sniff_model(path: Path) -> str:
    """The model format of a file: 'torchscript', 'pt2' or 'onnx'; anything else answers 422."""
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
        names = _zip_names(path)
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
    raise Unprocessable(
        f"the file is not a recognised model; {MODEL_FORMATS_HINT}", code="unsupported_model_format"
    )


def _npz_arrays(path: Path) -> dict[str, np.dtype]:
    """Array names and dtypes of an .npz, read from the .npy headers only."""
    arrays: dict[str, np.dtype] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                continue
            with zf.open(name) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    reader = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    _shape, _order, dtype = reader(fh)
                except ValueError as exc:
                    raise Unprocessable(
                        f"array {name} in the .npz is not a valid .npy: {exc}", code="invalid_dataset"
                    ) from None
            arrays[name[:-4]] = dtype
    return arrays


def _check_npz(path: Path) -> None:
    arrays = _npz_arrays(path)
    if "x" not in arrays:
        raise Unprocessable(
            f"the .npz has no array named 'x' (found: {sorted(arrays) or 'none'}); "
            "save features as x and optional labels as y",
            code="invalid_dataset",
        )
    for name, dtype in arrays.items():
        if dtype.hasobject:
            raise Unprocessable(
                f"array {name!r} in the .npz holds Python objects (pickled), which the service never loads; "
                "save numeric arrays",
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
        raise Unprocessable(f"{images[0].filename!r} is not a PNG or JPEG image", code="invalid_dataset")
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


def sniff_dataset(path: Path, options: dict) -> str:
    """The dataset format ('npz', 'parquet', 'jsonl', 'csv'); checks what can be checked without loading."""
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
        names = _zip_names(path)
        if any(n.endswith(".npy") for n in names):
            _check_npz(path)
            return "npz"
        if _check_image_folder(path):
            return "image_folder"
        raise Unprocessable(
            f"the zip archive holds no .npy arrays nor images; {DATASET_FORMATS_HINT}",
            code="unsupported_dataset_format",
        )
    if head.startswith(b"\x93NUMPY"):
        raise Unprocessable(
            "a bare .npy holds one array; save x (and y) with numpy.savez into an .npz",
            code="unsupported_dataset_format",
        )
    if head.startswith(b"PAR1"):
        return "parquet"
    line = _first_line(path)
    if line.lstrip().startswith("{"):
        try:
            columns = list(json.loads(line))
        except json.JSONDecodeError as exc:
            raise Unprocessable(
                f"the first line is not a JSON object: {exc}", code="invalid_dataset"
            ) from None
        _check_columns(columns, options)
        return "jsonl"
    columns = [c.strip() for c in next(csv.reader(io.StringIO(line)), [])]
    if len(columns) < 1 or not any(columns):
        raise Unprocessable(f"the CSV has no header row; {DATASET_FORMATS_HINT}", code="invalid_dataset")
    _check_columns(columns, options)
    return "csv"


def _check_columns(columns: list[str], options: dict) -> None:
    for key in ("label_column", "text_column"):
        name = options.get(key)
        if name and name not in columns:
            raise Unprocessable(
                f"{key} {name!r} is not a column of the file (columns: {columns})", code="invalid_dataset"
            )
