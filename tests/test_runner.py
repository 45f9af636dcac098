"""The job adapter's error mapping, in-process on a real SQLite database (the engine is replaced by a stub)."""

from __future__ import annotations

import pytest
import torch

from app.models import Dataset, Job, Model, Tenant, new_id
from tests.support.rows import in_process_database, upload_row


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A migrated SQLite database and storage under tmp_path, as this process's settings."""
    with in_process_database(tmp_path, monkeypatch) as sessionmaker:
        yield sessionmaker


def _queued_job(sessionmaker, tmp_path, **job_fields) -> str:
    storage = tmp_path / "storage" / "t"
    storage.mkdir(parents=True)
    torch.jit.script(torch.nn.Linear(4, 3)).save(str(storage / "teacher.pt"))
    (storage / "data.npz").write_bytes(b"")
    with sessionmaker() as session:
        tenant = Tenant(id=new_id("ten"), name="acme")
        session.add(tenant)
        session.flush()  # no ORM relationships: the tenant row must exist before the rows that name it
        model = upload_row(Model, tenant.id, name="t", format="torchscript", status="ready", path="t/teacher.pt")
        data = upload_row(
            Dataset, tenant.id, name="d", status="ready", sha256="1" * 64, path="t/data.npz", options={}
        )
        job = Job(
            id=new_id("job"),
            tenant_id=tenant.id,
            status="queued",
            teacher_id=model.id,
            train_dataset_id=data.id,
            student={"architecture": "mlp", "hidden_sizes": [8]},
            hyperparameters={"epochs": 1, "batch_size": 4096},
            export=["torchscript"],
            **job_fields,
        )
        session.add_all([model, data, job])
        session.commit()
        return job.id


def _run_with_engine_raising(monkeypatch, job_id: str, exc: BaseException) -> None:
    import worker.engine
    from worker.runner import run

    def explode(*_args, **_kwargs):
        raise exc

    monkeypatch.setattr(worker.engine, "distill", explode)
    run(job_id)


def test_cuda_out_of_memory_fails_the_job_with_cuda_oom_and_a_hint(db, tmp_path, monkeypatch):
    job_id = _queued_job(db, tmp_path)
    _run_with_engine_raising(
        monkeypatch, job_id, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    )
    with db() as session:
        job = session.get(Job, job_id)
    assert job.status == "failed" and job.error["code"] == "cuda_oom"
    assert "batch_size" in job.error["message"] and "4096" in job.error["message"]


def test_an_unexpected_crash_fails_the_job_with_internal_and_no_traceback(db, tmp_path, monkeypatch):
    job_id = _queued_job(db, tmp_path)
    _run_with_engine_raising(monkeypatch, job_id, ZeroDivisionError("division by zero"))
    with db() as session:
        job = session.get(Job, job_id)
    assert job.status == "failed" and job.error["code"] == "internal"
    assert "Traceback" not in job.error["message"]


def test_a_job_that_is_not_queued_is_not_run_again(db, tmp_path, monkeypatch):
    job_id = _queued_job(db, tmp_path)
    with db() as session:
        session.get(Job, job_id).status = "succeeded"
        session.commit()
    _run_with_engine_raising(monkeypatch, job_id, AssertionError("the engine must not be called"))
    with db() as session:
        job = session.get(Job, job_id)
    assert job.status == "succeeded" and job.attempt == 0
