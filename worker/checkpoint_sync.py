"""A job's checkpoints in the object store, so that any worker can resume it (issue 13, point 2).

The job child writes its checkpoint folder (tensors and JSON, never a pickle) and then reports the epoch's
metrics; on that event the worker copies the folder's plain files to the store, as bytes: it never opens them,
into one of two slots, and then moves the pointer (`CURRENT`) to it, so the store always names a whole pair.
A worker staging a job whose local checkpoint folder is empty (another machine ran the earlier attempts)
fetches them back first. With the local store nothing happens: the folder is already where every worker looks.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from app.object_store import ObjectStorage
from app.storage import LocalStorage

logger = logging.getLogger(__name__)

MAX_FILES = 64
ATTEMPTS = 3
SLOTS = ("slot-a", "slot-b")
POINTER = "CURRENT"


def checkpoint_dir(storage: LocalStorage, tenant_id: str, job_id: str) -> Path:
    """Where the job child reads and writes its checkpoints (worker/supervisor.py lays it out)."""
    return storage.job_dir(tenant_id, job_id) / "checkpoints"


def plain_files(folder: Path, limit: int = MAX_FILES) -> list[Path]:
    """The folder's plain files (no links, no hard links, no unfinished .tmp/.part), at most `limit`."""
    found: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in names:
            path = Path(root) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and not name.endswith((".tmp", ".part")):
                found.append(path)
    return sorted(found)[:limit]


def push(storage: LocalStorage, tenant_id: str, job_id: str) -> int:
    """Copy the job's checkpoint files to the object store; the number copied (0 with the local store).

    Double-buffered: the files go to the slot the pointer does not name, and the pointer moves last. A worker
    killed mid-copy (the tensors of epoch N+1 up, epoch N's JSON still there) leaves the pointer on the previous
    complete pair: overwriting one slot in place left a torn pair in the store, and the next machine started over.
    """
    if not isinstance(storage, ObjectStorage):
        return 0
    folder = checkpoint_dir(storage, tenant_id, job_id)
    base = storage.key(storage.relative(folder))
    slot = SLOTS[1] if _current_slot(storage, base) == SLOTS[0] else SLOTS[0]
    for _ in range(ATTEMPTS):
        files = plain_files(folder) if folder.is_dir() else []
        before = _stamps(files)
        # The child writes the tensors, then the JSON naming their generation: uploading in the same order, and
        # again if either changed meanwhile, keeps the pair in the slot from one epoch.
        for path in sorted(files, key=lambda p: p.suffix == ".json"):
            storage.client.upload_file(str(path), storage.bucket, f"{base}/{slot}/{path.relative_to(folder)}")
        if _stamps(files) == before:
            _drop_others(storage, f"{base}/{slot}/", {f"{base}/{slot}/{p.relative_to(folder)}" for p in files})
            storage.client.put_object(Bucket=storage.bucket, Key=f"{base}/{POINTER}", Body=slot.encode())
            return len(files)
    logger.warning("job %s: its checkpoint kept changing while it was copied to the store", job_id)
    return 0


def _current_slot(storage: ObjectStorage, base: str) -> str | None:
    """The slot the store's pointer names (None before the first complete copy)."""
    try:
        body = storage.client.get_object(Bucket=storage.bucket, Key=f"{base}/{POINTER}")["Body"]
    except storage.client.exceptions.NoSuchKey:
        return None
    try:
        name = body.read(16).decode("ascii", "replace")
    finally:
        body.close()
    return name if name in SLOTS else None


def _drop_others(storage: ObjectStorage, prefix: str, keep: set[str]) -> None:
    """Delete the slot's objects an earlier generation left that this one does not have."""
    for key in _listed(storage, prefix):
        if key not in keep:
            storage.client.delete_object(Bucket=storage.bucket, Key=key)


def _listed(storage: ObjectStorage, prefix: str) -> list[str]:
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _stamps(files: list[Path]) -> list[tuple[int, int, int]]:
    stamps = []
    for path in files:
        try:
            info = path.lstat()
        except OSError:
            info = None
        stamps.append((info.st_ino, info.st_mtime_ns, info.st_size) if info else (0, 0, 0))
    return stamps


def pull(storage: LocalStorage, tenant_id: str, job_id: str) -> int:
    """Fetch the job's checkpoint files (the slot the pointer names) when this machine has none; the number."""
    if not isinstance(storage, ObjectStorage):
        return 0
    folder = checkpoint_dir(storage, tenant_id, job_id)
    if folder.is_dir() and any(folder.iterdir()):
        return 0
    base = storage.key(storage.relative(folder))
    slot = _current_slot(storage, base)
    if slot is None:
        return 0
    prefix = f"{base}/{slot}/"
    fetched = 0
    for key in _listed(storage, prefix)[:MAX_FILES]:
        target = (folder / key[len(prefix) :]).resolve()
        if not target.is_relative_to(folder.resolve()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.client.download_file(storage.bucket, key, str(target))
        fetched += 1
    if fetched:
        logger.info("job %s: fetched %d checkpoint files (%s) from the object store", job_id, fetched, slot)
    return fetched


def pushing_after_epochs(emit: Callable, storage: LocalStorage, tenant_id: str, job_id: str) -> Callable:
    """`emit` that also pushes the checkpoint after each epoch's metrics (the child saved it just before)."""
    if not isinstance(storage, ObjectStorage):
        return emit

    def wrapped(event) -> None:
        emit(event)
        if event.type == "metrics":
            try:
                push(storage, tenant_id, job_id)
            except Exception:  # the store being down costs a resume point, not the job
                logger.exception("job %s: could not copy its checkpoint to the object store", job_id)

    return wrapped
