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
        data = upload_row(Dataset, tenant.id, name="d", status="ready", sha256="1" * 64, path="t/data.npz", options={})
        job = Job(
            id=new_id("job"),
            tenant_id=tenant.id,
            status="queued",
            teacher_id=model.id,
            train_dataset_id=data.id,
            student={"architecture": "mlp", "hidden_sizes": [8]},
            export=["torchscript"],
            **{"hyperparameters": {"epochs": 1, "batch_size": 4096}, **job_fields},
        )
        session.add_all([model, data, job])
        session.commit()
        return job.id


def _engine_raising(monkeypatch, exc: BaseException) -> dict:
    """What the job child answers when the engine raises `exc` (the child's code, in this process)."""
    import importlib

    from worker import job_child

    distill_module = importlib.import_module("worker.engine.distill")  # the package's `distill` is the function

    def explode(*_args, **_kwargs):
        raise exc

    monkeypatch.setattr(distill_module, "_distill", explode)
    request = {
        "teacher": "t.pt",
        "train": {"path": "d.npz", "format": "npz"},
        "eval": None,
        "config": {"batch_size": 4096},
        "out_dir": "out",
    }
    return job_child.run_request(request, lambda message: None, job_child.StopFile(None))


def _run_with_fake_child(monkeypatch, job_id: str) -> None:
    from worker import supervisor
    from worker.runner import run

    monkeypatch.setenv("DISTILLERY_SANDBOX", "none")  # the fake child lives in tests/, which bwrap does not bind
    monkeypatch.setattr(supervisor, "JOB_CHILD", "tests.support.fake_child")
    run(job_id)


def test_cuda_out_of_memory_fails_the_job_with_cuda_oom_and_a_hint(monkeypatch):
    answer = _engine_raising(monkeypatch, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB"))
    assert answer["error"]["code"] == "cuda_oom"
    assert "batch_size" in answer["error"]["message"] and "4096" in answer["error"]["message"]


def test_an_unexpected_engine_error_is_internal_with_no_path_and_no_traceback(monkeypatch):
    answer = _engine_raising(monkeypatch, ValueError("cannot open /srv/distillery/storage/ten_1/models/x.onnx"))
    assert answer["error"]["code"] == "internal"
    assert "/srv" not in answer["error"]["message"] and "Traceback" not in answer["error"]["message"]
    assert "x.onnx" in answer["error"]["message"]


def test_a_child_that_dies_fails_the_job_without_its_traceback(db, tmp_path, monkeypatch):
    job_id = _queued_job(db, tmp_path, hyperparameters={"mode": "crash"})
    _run_with_fake_child(monkeypatch, job_id)
    with db() as session:
        job = session.get(Job, job_id)
    assert job.status == "failed" and job.error["code"] == "sandbox_crash", job.error
    assert "Traceback" not in job.error["message"] and "/srv" not in job.error["message"], job.error


def test_what_a_hijacked_child_writes_is_checked(db, tmp_path, monkeypatch):
    """Forged events, junk lines, links to other files among its artifacts: none reaches the user as such."""
    from app.models import Artifact, JobEvent

    other = tmp_path / "storage" / "other-tenant" / "secret.json"
    other.parent.mkdir(parents=True)
    other.write_text('{"api_key": "sk-other"}')
    job_id = _queued_job(db, tmp_path, hyperparameters={"mode": "hostile", "target": str(other)})
    _run_with_fake_child(monkeypatch, job_id)
    with db() as session:
        job = session.get(Job, job_id)
        artifacts = {a.name for a in session.query(Artifact).filter_by(job_id=job_id)}
        events = session.query(JobEvent).filter_by(job_id=job_id).all()
    assert job.status == "succeeded" and job.report["job_id"] == job_id, job.error
    assert artifacts == {"student.pt"}, artifacts  # the link to the other tenant's file is not an artifact
    # The forged "status" event became a plain info event: the only status events are the runner's own.
    assert [e.data["status"] for e in events if e.type == "status"] == ["running", "succeeded"]
    assert any(e.type == "info" and e.message == "job succeeded" for e in events)
    assert not any(e.type == "phase" for e in events)  # an unknown phase is dropped
    assert all(str(tmp_path) not in e.message for e in events), [e.message for e in events]


def test_a_job_that_is_not_queued_is_not_run_again(db, tmp_path, monkeypatch):
    job_id = _queued_job(db, tmp_path, hyperparameters={"mode": "crash"})
    with db() as session:
        session.get(Job, job_id).status = "succeeded"
        session.commit()
    _run_with_fake_child(monkeypatch, job_id)
    with db() as session:
        job = session.get(Job, job_id)
    assert job.status == "succeeded" and job.attempt == 0
