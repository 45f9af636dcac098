"""Re-sent messages are sent once per period however many reapers pass, and an upload is validated once.

In-process, on a migrated SQLite file and on PostgreSQL; the broker is replaced by a recorder.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.models import Dataset, Job, Model, Tenant, new_id, utcnow


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path, monkeypatch):
    """A migrated database as this process's settings."""
    from app.db import get_engine, get_sessionmaker
    from app.migrate import upgrade
    from app.settings import get_settings

    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path))
    if request.param == "postgres":
        monkeypatch.setenv("DISTILLERY_DATABASE_URL", request.getfixturevalue("postgres_url"))
    else:
        monkeypatch.delenv("DISTILLERY_DATABASE_URL", raising=False)
    monkeypatch.setenv("DISTILLERY_RESEND_AFTER_S", "60")
    for cached in (get_settings, get_engine, get_sessionmaker):
        cached.cache_clear()
    upgrade(get_settings().resolved_database_url)
    yield get_sessionmaker()
    get_engine().dispose()
    for cached in (get_settings, get_engine, get_sessionmaker):
        cached.cache_clear()


def _upload(cls, tenant_id: str, prefix: str, **fields):
    return cls(
        id=new_id(prefix),
        tenant_id=tenant_id,
        name="f",
        format="npz",
        status="validating",
        size_bytes=1,
        sha256="0" * 64,
        path="t/f",
        **fields,
    )


def _rows(sessionmaker) -> dict[str, str]:
    old = utcnow() - timedelta(hours=1)
    with sessionmaker() as session:
        tenant = Tenant(id=new_id("ten"), name="acme")
        session.add(tenant)
        session.flush()
        job = Job(
            id=new_id("job"),
            tenant_id=tenant.id,
            status="queued",
            teacher_id="m",
            train_dataset_id="d",
            student={},
            hyperparameters={},
            export=[],
            enqueued_at=old,
        )
        model = _upload(Model, tenant.id, "mdl", created_at=old)  # never re-sent: its created_at counts
        dataset = _upload(Dataset, tenant.id, "dst", created_at=old, enqueued_at=old, options={})
        fresh = _upload(Dataset, tenant.id, "dst", options={})  # just uploaded: nothing to re-send
        session.add_all([job, model, dataset, fresh])
        session.commit()
        return {"job": job.id, "model": model.id, "dataset": dataset.id, "fresh": fresh.id}


def test_many_reapers_resend_each_message_once(db, monkeypatch):
    import worker.reaper as reaper

    ids = _rows(db)
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(*item):
        with lock:
            sent.append(item)

    monkeypatch.setattr(reaper, "enqueue_job", lambda job_id: record("jobs", job_id))
    monkeypatch.setattr(reaper, "enqueue_validation", lambda kind, obj_id: record(kind, obj_id))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def one_reaper():
        barrier.wait()
        try:
            reaper.resend_lost_messages()
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=one_reaper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(sent) == sorted([("jobs", ids["job"]), ("models", ids["model"]), ("datasets", ids["dataset"])])
    reaper.resend_lost_messages()  # the next pass, within resend_after_s: nothing is due again
    assert len(sent) == 3


def test_a_claimed_upload_is_validated_once(db, monkeypatch):
    import worker.validate as validate

    ids = _rows(db)
    calls = []
    monkeypatch.setattr(
        validate, "inspect_in_child", lambda kind, path, options: calls.append(path) or {"info": {"rows": 1}}
    )
    monkeypatch.setattr(validate, "dataset_spec_options", lambda row, storage: {})
    with db() as session:
        session.execute(update(Dataset).where(Dataset.id == ids["dataset"]).values(claimed_at=utcnow()))
        session.commit()
    validate.validate("datasets", ids["dataset"])  # a duplicate message while another worker validates
    assert calls == []
    with db() as session:
        assert session.get(Dataset, ids["dataset"]).status == "validating"
        # That validator died: its claim is older than resend_after_s, and the next message takes over.
        session.execute(
            update(Dataset)
            .where(Dataset.id == ids["dataset"])
            .values(claimed_at=utcnow() - timedelta(seconds=120))
        )
        session.commit()
    validate.validate("datasets", ids["dataset"])
    assert len(calls) == 1
    with db() as session:
        assert session.get(Dataset, ids["dataset"]).status == "ready"
    validate.validate("datasets", ids["fresh"])  # unclaimed: validated at once
    assert len(calls) == 2
