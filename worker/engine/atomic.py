"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import json
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


def read_saved(folder: str | None, name: str) -> dict | None:
    """A JSON object saved by save_json in `folder` (a job's checkpoint folder); None when absent or unreadable."""
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, name)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def save_json(folder: str | None, name: str, data: dict) -> None:
    """Save `data` as `name` in `folder` atomically (a job killed mid-write reads nothing, not half a file)."""
    if folder is None:
        return
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, name), json.dumps(data).encode())
