"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable


def atomic_write(path: str, content: bytes | Callable[[str], None]) -> str:
    """Write `content` to `path` through a temporary file in the same folder, fsync'd, then os.replace'd.

    `content` is bytes, or a function that writes the file at the path it is given (for writers such as
    safetensors' save_file that want a path). The folder must exist. Returns `path`.
    """
    # In the same folder, so that os.replace is a rename within one file system.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    os.close(fd)
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(content)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes reach the disk before the rename makes them visible
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
