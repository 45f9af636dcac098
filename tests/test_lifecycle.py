"""The job lifecycle (app/lifecycle/): its state machine on a real SQLite database, and the rule that nothing else
changes a job's state.

In-process: the broker is replaced by a recorder of what would have been sent.
"""

from __future__ import annotations

import ast
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.models import Dataset, Job, JobEvent, Model, Tenant, new_id, utcnow
from tests.support.rows import in_process_database, upload_row

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A migrated SQLite database as this process's settings, with the broker replaced by a list."""
    from app import queue

    sent: list[tuple] = []
    monkeypatch.setattr(queue, "enqueue_job", lambda job_id, _gpus: sent.append(("job", job_id)))
    monkeypatch.setattr(queue, "enqueue_webhook", lambda *args, **kwargs: sent.append(("webhook", *args)))
    with in_process_database(tmp_path, monkeypatch) as sessionmaker:
        sessionmaker.sent = sent
        yield sessionmaker


def _tenant_and_inputs(sessionmaker) -> tuple[str, str, str]:
    with sessionmaker() as session:
        tenant = Tenant(id=new_id("ten"), name=new_id("tenant"))  # names are unique: one tenant per job here
        session.add(tenant)
        session.flush()
        model = upload_row(Model, tenant.id, format="torchscript", status="ready", info={})
        data = upload_row(Dataset, tenant.id, status="ready", info={}, options={})
        session.add_all([model, data])
        session.commit()
        return tenant.id, model.id, data.id


def _create(sessionmaker, key: str | None = None, **body) -> Job:
    from app.lifecycle import create_job
    from contract.wire import JobCreate

    tenant_id, model_id, data_id = _tenant_and_inputs(sessionmaker)
    with sessionmaker() as session:
        tenant = session.get(Tenant, tenant_id)
        request = JobCreate(teacher_id=model_id, train_dataset_id=data_id, **body)
        job = create_job(session, tenant, request, key)
        again = create_job(session, tenant, request, key) if key else None
        return job, again


def _queued(sessionmaker) -> str:
    job, _ = _create(sessionmaker)
    return job.id


def _row(sessionmaker, job_id: str) -> Job:
    with sessionmaker() as session:
        return session.get(Job, job_id)


def _status_events(sessionmaker, job_id: str) -> list[dict]:
    with sessionmaker() as session:
        rows = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "status").order_by(JobEvent.id)
        )
        return [row.data for row in rows]


def test_create_queues_the_job_once_per_idempotency_key_and_wakes_a_worker(db):
    job, again = _create(db, key="k1")
    assert again.id == job.id
    row = _row(db, job.id)
    assert (row.status, row.attempt) == ("queued", 0)
    assert _status_events(db, job.id) == [{"status": "queued"}]
    assert db.sent == [("job", job.id)]


def test_claim_is_a_compare_and_set_that_one_delivery_wins(db):
    from app.lifecycle import claim

    job_id = _queued(db)
    first = claim(job_id, "w1")
    assert first is not None and first.attempt == 1 and first.status == "running"
    assert claim(job_id, "w2") is None  # a duplicated message is a no-op
    assert _row(db, job_id).worker_id == "w1"
    assert _status_events(db, job_id) == [{"status": "queued"}, {"status": "running", "attempt": 1}]


def test_a_stale_attempt_is_fenced_out_of_every_write(db):
    from app.lifecycle import Lease, Ownership, claim, finish, hand_back, heartbeat, ownership, record_progress

    job_id = _queued(db)
    claim(job_id, "w1")
    old = Lease(job_id, 1)
    assert hand_back(old)
    claim(job_id, "w2")  # attempt 2 owns the job now
    new = Lease(job_id, 2)
    assert record_progress(old, "phase", "training", {"phase": "training"}, phase="training") is False
    assert heartbeat(old) is False and ownership(old) is Ownership.LOST
    assert finish(old, "succeeded") is False
    assert _row(db, job_id).phase == "validating"  # the stale write changed nothing
    assert record_progress(new, "phase", "training", {"phase": "training"}, phase="training")
    assert heartbeat(new) and ownership(new) is Ownership.OWNED
    row = _row(db, job_id)
    assert (row.status, row.phase, row.attempt) == ("running", "training", 2)


def test_finishing_twice_is_a_no_op_and_only_terminal_statuses_finish(db):
    from app.lifecycle import Lease, claim, finish

    job_id = _queued(db)
    claim(job_id, "w1")
    lease = Lease(job_id, 1)
    with pytest.raises(ValueError):
        finish(lease, "queued")
    assert finish(lease, "succeeded", metrics={"train_loss": 0.1})
    assert finish(lease, "failed", error={"code": "internal", "message": "late"}) is False
    row = _row(db, job_id)
    assert (row.status, row.error, row.phase) == ("succeeded", None, None) and row.finished_at
    assert [e["status"] for e in _status_events(db, job_id)] == ["queued", "running", "succeeded"]


def test_cancelling_an_ended_job_is_refused_with_409_job_finished(db):
    from app.errors import Conflict
    from app.lifecycle import Lease, cancel_job, claim, finish

    job_id = _queued(db)
    claim(job_id, "w1")
    finish(Lease(job_id, 1), "failed", error={"code": "internal", "message": "boom"})
    with db() as session, pytest.raises(Conflict) as refused:
        cancel_job(session, session.get(Job, job_id))
    assert refused.value.status == 409 and refused.value.code == "job_finished"
    assert _row(db, job_id).status == "failed"


def test_cancel_stops_a_running_job_and_only_its_attempt_records_what_it_left(db):
    from app.lifecycle import Lease, Ownership, cancel_job, claim, finish, ownership, record_after_cancel

    job_id = _queued(db)
    claim(job_id, "w1")
    with db() as session:
        assert cancel_job(session, session.get(Job, job_id)).status == "cancelled"
    lease = Lease(job_id, 1)
    assert ownership(lease) is Ownership.CANCELLED
    assert finish(lease, "succeeded") is False  # the worker's late success does not undo the cancel
    assert record_after_cancel(Lease(job_id, 2), "artifact", "not ours") is False
    assert record_after_cancel(lease, "artifact", "salvaged", {"artifact": "checkpoint_student.safetensors"})
    with db() as session:
        types = [e.type for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]
    assert types.count("artifact") == 1 and _row(db, job_id).status == "cancelled"


def test_hand_back_requeues_without_counting_a_lost_worker(db):
    from app.lifecycle import Lease, claim, hand_back

    job_id = _queued(db)
    claim(job_id, "w1")
    db.sent.clear()
    assert hand_back(Lease(job_id, 1))
    row = _row(db, job_id)
    assert (row.status, row.worker_id, row.attempt, row.lost_attempts) == ("queued", None, 1, 0)
    assert db.sent == [("job", job_id)]
    assert _status_events(db, job_id)[-1]["reason"] == "worker_shutdown"
    assert hand_back(Lease(job_id, 1)) is False  # already queued: nothing to hand back
    assert claim(job_id, "w2").attempt == 2  # the attempt rises at the next claim, not at the hand-back


def _make_stale(sessionmaker, job_id: str) -> None:
    with sessionmaker() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        session.commit()


def test_a_lost_worker_requeues_the_job_until_max_attempts_then_fails_it(db):
    from app.lifecycle import claim, fail_or_requeue_lost

    job_id, fresh_id = _queued(db), _queued(db)
    claim(fresh_id, "alive")
    cutoff = utcnow() - timedelta(minutes=2)
    claim(job_id, "w1")
    _make_stale(db, job_id)
    assert fail_or_requeue_lost(cutoff, max_attempts=2) == ([job_id], [])
    assert (_row(db, job_id).status, _row(db, job_id).lost_attempts) == ("queued", 1)
    claim(job_id, "w2")
    _make_stale(db, job_id)
    assert fail_or_requeue_lost(cutoff, max_attempts=2) == ([], [job_id])
    row = _row(db, job_id)
    assert (row.status, row.error["code"], row.lost_attempts) == ("failed", "worker_lost", 2)
    assert _row(db, fresh_id).status == "running"  # a live lease is left alone


def test_status_events_only_go_with_a_state_change(db):
    from app.lifecycle import Lease, claim, record_event, record_progress

    job_id = _queued(db)
    claim(job_id, "w1")
    with db() as session, pytest.raises(ValueError):
        record_event(session, job_id, "status", "forged", {"status": "succeeded"})
    with pytest.raises(ValueError):
        record_progress(Lease(job_id, 1), "status", "forged", {"status": "succeeded"})
    assert [e["status"] for e in _status_events(db, job_id)] == ["queued", "running"]


# --- the rule: nothing outside app/lifecycle/ changes a job's state ------------------------------------------------

JOB_STATE_FIELDS = {"status", "attempt", "lost_attempts", "worker_id", "heartbeat_at", "enqueued_at", "finished_at"}
LIFECYCLE_ONLY_CALLS = {"add_event", "fenced_update", "JobEvent", "Job"}
RAW_JOB_UPDATE = re.compile(r"\b(update|insert\s+into)\s+jobs\b|\binsert\s+into\s+job_events\b", re.IGNORECASE)
OUTSIDE = (".venv", "tests", "migrations", "node_modules")


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _about_a_job(node: ast.AST) -> bool:
    """Whether an expression names a job (`job`, `self.job`, `session.get(Job, ...)`): whose fields are guarded."""
    return any("job" in _name(sub).lower() for sub in ast.walk(node))


def state_writes(source: str) -> list[str]:
    """Lines of `source` that change a job's state or add a job event by hand: what only the lifecycle may do."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name in LIFECYCLE_ONLY_CALLS or (name == "update" and node.args and _name(node.args[0]) == "Job"):
                found.append(f"{node.lineno}: {name}(...)")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Attribute) and target.attr in JOB_STATE_FIELDS and _about_a_job(target.value):
                    found.append(f"{node.lineno}: .{target.attr} =")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_JOB_UPDATE.search(node.value):
            found.append(f"{node.lineno}: SQL {node.value[:40]!r}")
    return found


def _project_sources() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*.py")
        if not path.relative_to(ROOT).parts[0].startswith(".")
        and path.relative_to(ROOT).parts[0] not in OUTSIDE
        and not path.is_relative_to(ROOT / "app" / "lifecycle")
    ]


def test_nothing_outside_the_lifecycle_changes_a_jobs_state_or_adds_its_events():
    sources = _project_sources()
    assert ROOT / "worker" / "runner.py" in sources and ROOT / "worker" / "reaper.py" in sources
    offenders = {str(p.relative_to(ROOT)): hits for p in sources if (hits := state_writes(p.read_text()))}
    assert offenders == {}


@pytest.mark.parametrize(
    "line",
    [
        "session.get(Job, job_id).status = 'succeeded'",
        "job.attempt += 1",
        "add_event(session, job.id, 'status', 'done')",
        "session.add(JobEvent(job_id=j, type='status', message='m'))",
        "session.execute(update(Job).where(Job.id == j).values(status='failed'))",
        "fenced_update(session, lease, status='queued')",
        "conn.execute(text('UPDATE jobs SET status = :s'))",
    ],
)
def test_the_rule_catches_each_kind_of_state_write(line):
    """The check above can fail: each way a module could change a job's state by hand is found."""
    assert state_writes(line) != []


def test_the_rule_leaves_reads_and_other_rows_alone():
    reads = (
        "if job.status in TERMINAL: pass\n"
        "self.status = status\n"
        "beat.heartbeat_at = utcnow()\n"
        "session.execute(update(Dataset).values(status='ready'))\n"
        "rows = select(Job).where(Job.status == 'queued')\n"
    )
    assert state_writes(reads) == []
