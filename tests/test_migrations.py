"""Alembic migrations: up, down and up again on SQLite and PostgreSQL, and no drift from the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.db import make_engine
from app.migrate import downgrade, upgrade
from app.models import Base

MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database of each kind (PostgreSQL: a fresh one from conftest's postgres_url)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    return request.getfixturevalue("postgres_url")


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str) -> list:
    """What autogenerate would write to bring the database to the models (empty: they agree)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            opts = {"compare_type": True, "compare_server_default": True}
            ctx = MigrationContext.configure(conn, opts=opts)
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_models_have_tables():
    # Guard against an import mistake that would make the comparisons below vacuous.
    assert {
        "tenants",
        "api_keys",
        "models",
        "datasets",
        "jobs",
        "job_events",
        "artifacts",
        "worker_heartbeats",
    } <= MODEL_TABLES


def test_upgrade_downgrade_upgrade(database_url):
    upgrade(database_url)
    assert _tables(database_url) == MODEL_TABLES | {"alembic_version"}

    downgrade(database_url)
    assert _tables(database_url) == {"alembic_version"}

    upgrade(database_url)
    assert _tables(database_url) == MODEL_TABLES | {"alembic_version"}


def test_migrations_match_models(database_url):
    upgrade(database_url)
    diff = _diff(database_url)
    assert diff == [], "the migrations and app/models.py disagree; autogenerate would write:\n" + "\n".join(
        map(repr, diff)
    )


def test_drift_is_detected(tmp_path):
    """The comparison is not vacuous: a database missing a table shows a difference."""
    url = f"sqlite:///{tmp_path / 'partial.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE job_events")
    engine.dispose()
    diff = _diff(url)
    assert any(op[0] == "add_table" and op[1].name == "job_events" for op in diff if isinstance(op, tuple))
