"""Which store a process uses: the object store for an s3:// DISTILLERY_STORAGE_URL, else the local folder."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from app.settings import Settings
from app.storage import LocalStorage


def open_storage(settings: Settings) -> LocalStorage:
    """The store the settings name (an ObjectStorage is a LocalStorage whose stored files live in the bucket)."""
    if settings.storage_url:
        return _object_storage(
            settings.resolved_storage_dir, settings.storage_url, settings.s3_endpoint_url, settings.store_cache_bytes
        )
    return LocalStorage.from_settings(settings)


@lru_cache(maxsize=4)
def _object_storage(root: Path, url: str, endpoint_url: str | None, cache_bytes: int) -> LocalStorage:
    # One per configuration and process: building a boto3 client costs tens of milliseconds, and a client is
    # safe to share between threads, so the API does not build one per request.
    from app.object_store import ObjectStorage

    return ObjectStorage(root, url, endpoint_url, cache_bytes)
