"""Zip datasets recognised by content: an .npz (checked from its .npy headers) or a zip of class folders of images."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from app.errors import Unprocessable
from app.sniff_common import (
    CONTENT_ERRORS,
    DATASET_FORMATS_HINT,
    name_list,
    shorten,
    unreadable,
    zip_names,
)

MAX_NPZ_ARRAYS = 1000


def sniff_zip_dataset(path: Path) -> str:
    """'npz' or 'image_folder' for a zip upload; 422 naming the problem otherwise."""
    names = zip_names(path, "invalid_dataset", DATASET_FORMATS_HINT)
    if any(n.endswith(".npy") for n in names):
        _check_npz(path)
        return "npz"
    if _check_image_folder(path):
        return "image_folder"
    raise Unprocessable(
        f"the zip archive holds no .npy arrays nor images; {DATASET_FORMATS_HINT}",
        code="unsupported_dataset_format",
    )


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
                arrays[name[:-4]] = _npy_dtype(fh, name)
    return arrays


def _npy_dtype(fh, name: str) -> np.dtype:
    """The dtype in one .npy member's header; 422 when the header is not valid."""
    try:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _order, dtype = reader(fh)
    except CONTENT_ERRORS as exc:
        raise unreadable(
            f"array {shorten(name)!r} in the .npz is not a valid .npy (save it with numpy.savez)",
            exc,
            "invalid_dataset",
            DATASET_FORMATS_HINT,
        ) from None
    return dtype


def _check_npz(path: Path) -> None:
    arrays = _npz_arrays(path)
    if "x" not in arrays:
        found = sorted(arrays)
        raise Unprocessable(
            f"the .npz has no array named 'x' (found: {name_list(found) if found else 'none'}); "
            "save features as x and optional labels as y",
            code="invalid_dataset",
        )
    for name, dtype in arrays.items():
        if dtype.hasobject:
            raise Unprocessable(
                f"array {shorten(name)!r} in the .npz holds Python objects (pickled), which the service "
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
        raise Unprocessable(f"{shorten(images[0].filename)!r} is not a PNG or JPEG image", code="invalid_dataset")
    if not any("/" in i.filename for i in images):
        raise Unprocessable(
            "the archive's images must sit in one folder per class (cat/1.png, dog/2.png)",
            code="invalid_dataset",
        )
    return True
