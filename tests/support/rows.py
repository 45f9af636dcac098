"""In-process database and rows for tests that call worker or app code directly (no API, no broker)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.models import new_id


@contextmanager
def in_process_database(tmp_path: Path, monkeypatch, url: str | None = None) -> Iterator:
    """Migrate a database (SQLite under tmp_path, or `url`) as this process's settings; yield its sessionmaker."""
    from app.db import get_engine, get_sessionmaker
    from app.migrate import upgrade
    from app.settings import get_settings

    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path))
    if url:
        monkeypatch.setenv("DISTILLERY_DATABASE_URL", url)
    else:
        monkeypatch.delenv("DISTILLERY_DATABASE_URL", raising=False)
    for cached in (get_settings, get_engine, get_sessionmaker):
        cached.cache_clear()
    upgrade(get_settings().resolved_database_url)
    try:
        yield get_sessionmaker()
    finally:
        get_engine().dispose()
        for cached in (get_settings, get_engine, get_sessionmaker):
            cached.cache_clear()


def upload_row(cls, tenant_id: str, **fields):
    """A Model or Dataset row with placeholder file fields; `fields` override them."""
    values = {
        "id": new_id("mdl" if cls.__tablename__ == "models" else "dst"),
        "tenant_id": tenant_id,
        "name": "f",
        "format": "npz",
        "status": "validating",
        "size_bytes": 1,
        "sha256": "0" * 64,
        "path": "t/f",
        **fields,
    }
    return cls(**values)
