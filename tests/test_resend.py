"""Re-sent messages are sent once per period however many reapers pass, and an upload is validated once.

In-process, on a migrated SQLite file and on PostgreSQL; the broker is replaced by a recorder.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.models import Dataset, Job, Model, Tenant, new_id, utcnow
from tests.support.rows import in_process_database, upload_row


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path, monkeypatch):
    """A migrated database as this process's settings."""
    monkeypatch.setenv("DISTILLERY_RESEND_AFTER_S", "60")
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    with in_process_database(tmp_path, monkeypatch, url) as sessionmaker:
        yield sessionmaker


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
        model = upload_row(Model, tenant.id, created_at=old)  # never re-sent: its created_at counts
        dataset = upload_row(Dataset, tenant.id, created_at=old, enqueued_at=old, options={})
        fresh = upload_row(Dataset, tenant.id, options={})  # just uploaded: nothing to re-send
        session.add_all([job, model, dataset, fresh])
        session.commit()
        return {"job": job.id, "model": model.id, "dataset": dataset.id, "fresh": fresh.id}


def test_many_reapers_resend_each_message_once(db, monkeypatch):
    import worker.reaper as reaper
    from app import queue

    ids = _rows(db)
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(*item):
        with lock:
            sent.append(item)

    # The lifecycle (jobs) and the reaper (uploads) both send through app.queue.
    monkeypatch.setattr(queue, "enqueue_job", lambda job_id, _gpus: record("jobs", job_id))
    monkeypatch.setattr(queue, "enqueue_validation", lambda kind, obj_id: record(kind, obj_id))
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
        validate, "inspect_upload", lambda kind, row, storage, settings: calls.append(row.id) or {"info": {"rows": 1}}
    )
    with db() as session:
        session.execute(update(Dataset).where(Dataset.id == ids["dataset"]).values(claimed_at=utcnow()))
        session.commit()
    validate.validate("datasets", ids["dataset"])  # a duplicate message while another worker validates
    assert calls == []
    with db() as session:
        assert session.get(Dataset, ids["dataset"]).status == "validating"
        # That validator died: its claim is older than resend_after_s, and the next message takes over.
        session.execute(
            update(Dataset).where(Dataset.id == ids["dataset"]).values(claimed_at=utcnow() - timedelta(seconds=120))
        )
        session.commit()
    validate.validate("datasets", ids["dataset"])
    assert len(calls) == 1
    with db() as session:
        assert session.get(Dataset, ids["dataset"]).status == "ready"
    validate.validate("datasets", ids["fresh"])  # unclaimed: validated at once
    assert len(calls) == 2
