"""The teacher-outputs cache in the object store, so that a job on any machine reuses what an earlier one computed
(issue 13, point 2).

A job's child reads and writes the tenant's cache folder of its teacher (storage.teacher_cache_dir: one folder per
teacher sha256, never shared across tenants). With an object store the worker fetches the files it lacks from the
store before the child starts, and copies the new ones back once the teacher's clean pass is done (the training
phase begins) and when the child has ended. Bytes only: the worker never opens them (the child checks what it
reads: shapes, row counts and finiteness). With the local store nothing happens: every worker shares the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from app.object_store import ObjectStorage
from app.storage import LocalStorage
from worker.checkpoint_sync import plain_files

logger = logging.getLogger(__name__)

MAX_FILES = 4096  # the clean pass per split, and the augmented batches per epoch of each recipe
NAMES = ("teacher-", "augmented-")  # what the engine writes (teacher_outputs.py, augmented_cache.py)


def _prefix(storage: ObjectStorage, folder: Path) -> str:
    return storage.key(storage.relative(folder)) + "/"


def _stored(storage: ObjectStorage, prefix: str) -> dict[str, int]:
    """{object key: size} under `prefix`."""
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket, Prefix=prefix)
    return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}


def pull(storage: LocalStorage, folder: Path) -> int:
    """Fetch the cache files of `folder` that this machine lacks from the store; the number fetched."""
    if not isinstance(storage, ObjectStorage):
        return 0
    prefix, fetched = _prefix(storage, folder), 0
    for key, size in sorted(_stored(storage, prefix).items())[:MAX_FILES]:
        name = key[len(prefix) :]
        if "/" in name or not name.startswith(NAMES):
            continue
        target = folder / name
        if target.is_file() and target.stat().st_size == size:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")  # not a name the engine reads; renamed when whole
        storage.client.download_file(storage.bucket, key, str(partial))
        partial.replace(target)
        fetched += 1
    if fetched:
        logger.info("fetched %d cached teacher-output files from the object store into %s", fetched, folder.name)
    return fetched


def push(storage: LocalStorage, folder: Path) -> int:
    """Copy the cache files of `folder` that the store lacks (or holds at another size) to it; the number copied."""
    if not isinstance(storage, ObjectStorage) or not folder.is_dir():
        return 0
    prefix = _prefix(storage, folder)
    stored = _stored(storage, prefix)
    copied = 0
    for path in plain_files(folder, MAX_FILES):
        if path.parent != folder or not path.name.startswith(NAMES):
            continue
        if stored.get(prefix + path.name) != path.stat().st_size:
            storage.keep_job_file(path)
            copied += 1
    if copied:
        logger.info("copied %d cached teacher-output files to the object store", copied)
    return copied


def pushing_after_teacher_pass(emit: Callable, storage: LocalStorage, folder: Path) -> Callable:
    """`emit` that also copies the cache to the store when training begins (the clean pass is cached by then)."""
    if not isinstance(storage, ObjectStorage):
        return emit

    def wrapped(event) -> None:
        emit(event)
        if event.type == "phase" and (event.data or {}).get("phase") == "training":
            safely_push(storage, folder)

    return wrapped


def safely_push(storage: LocalStorage, folder: Path) -> None:
    """push(), logging instead of raising: a store that is down costs later jobs a cache hit, not this job."""
    try:
        push(storage, folder)
    except Exception:
        logger.exception("could not copy the teacher-outputs cache to the object store")
