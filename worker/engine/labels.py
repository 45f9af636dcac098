"""Label encoding: integer labels keep their values; string labels follow `classes`, else sorted order."""

from __future__ import annotations

import numpy as np

from worker.engine.errors import EngineError
from worker.engine.limits import DataLimits, check_class_names, resolve, short_list


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
