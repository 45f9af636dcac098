"""Shared fixtures: backends (real PostgreSQL and Redis, or the embedded defaults)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis

PG_ADMIN = os.environ.get("DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379")


def unavailable(what: str, exc: Exception):
    """Skip when a server is down, except under CI=true, where a skip would prove nothing."""
    message = f"{what} unreachable: {exc}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: integration tests must not skip)")
    pytest.skip(message)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"distillery_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def empty_redis_db() -> Iterator[str]:
    """A Redis database index of its own, emptied before and after."""
    # One index for the run; DISTILLERY_TEST_REDIS_DB gives a concurrent run on the same server its own.
    url = f"{REDIS_URL}/{os.environ.get('DISTILLERY_TEST_REDIS_DB', '11')}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        client.flushdb()
    except Exception as exc:
        unavailable("Redis", exc)
    try:
        yield url
    finally:
        client.flushdb()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def redis_url():
    """A Redis database index of its own, emptied before and after the test."""
    with empty_redis_db() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url():
    """A fresh PostgreSQL database shared by one module's tests (one service for the module)."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_redis_url():
    """The test Redis index for one module's tests, emptied before and after the module."""
    with empty_redis_db() as url:
        yield url


@pytest.fixture(params=["embedded", "postgres+redis"])
def backend(request) -> dict:
    """Database and broker URLs for running_service (None: the embedded defaults)."""
    if request.param == "embedded":
        return {}
    return {
        "database_url": request.getfixturevalue("postgres_url"),
        "broker_url": request.getfixturevalue("redis_url"),
    }
