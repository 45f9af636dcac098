"""Which store a process uses: the object store for an s3:// DISTILLERY_STORAGE_URL, else the local folder."""

from __future__ import annotations

from app.settings import Settings
from app.storage import LocalStorage


def open_storage(settings: Settings) -> LocalStorage:
    """The store the settings name (an ObjectStorage is a LocalStorage whose stored files live in the bucket)."""
    if settings.storage_url:
        from app.object_store import ObjectStorage

        return ObjectStorage.from_settings(settings)
    return LocalStorage.from_settings(settings)
