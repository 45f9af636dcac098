"""Reading .npz datasets: every array's .npy header is checked against the limits before its data is read."""

from __future__ import annotations

import math
import zipfile
import zlib

import numpy as np

from worker.engine.errors import EngineError
from worker.engine.limits import DataLimits


def read_npz(path: str, limits: DataLimits) -> tuple[np.ndarray, np.ndarray | None]:
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
