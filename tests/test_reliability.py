"""Never lose or duplicate a job: leases, the reaper, resume, hand-back, cancel, a model that never returns.
(Idempotency, caps, max_runtime_s and retention: tests/test_job_limits.py.)

Real API and worker processes, on PostgreSQL + Redis and on the embedded defaults.
"""

from __future__ import annotations

import signal
import time

import pytest
from safetensors.numpy import load as load_safetensors
from sqlalchemy import text

from app.queue import RUN_JOB, make_celery
from app.settings import Settings
from tests.support.job_service import (
    claims,
    db_time,
    digits_files,
    job_events,
    service_db,
    upload_digits,
    wait_epoch,
)
from tests.support.service import Client, running_service

pytestmark = pytest.mark.integration

FAST_LEASES = {
    "DISTILLERY_LEASE_TIMEOUT_S": "4",
    "DISTILLERY_REAPER_INTERVAL_S": "1",
    "DISTILLERY_WORKER_HEARTBEAT_INTERVAL_S": "1",
}
LONG_JOB = {"epochs": 60, "batch_size": 16}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    return digits_files(tmp_path_factory.mktemp("digits"))


def test_a_worker_killed_mid_training_is_resumed_by_another(backend, tmp_path, digits):
    with running_service(tmp_path, extra_env=FAST_LEASES, **backend) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        resp = client.http.post("/v1/jobs", json={**upload_digits(client, digits), "hyperparameters": LONG_JOB})
        job_id = resp.json()["id"]
        wait_epoch(client, job_id, 3)
        svc.kill_worker("w0", signal.SIGKILL)
        svc.start_worker("w1")
        job = client.wait_job(job_id, timeout=300)
        assert job["status"] == "succeeded", (job, svc.log_tail())
        assert job["attempt"] == 2
        types = [e["type"] for e in job_events(client, job_id)]
        assert "resume" in types, types
        resume = next(e for e in job_events(client, job_id) if e["type"] == "resume")
        assert resume["data"]["epoch"] >= 3  # it continued from the checkpoint, not from scratch
        arts = client.http.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
        names = [a["name"] for a in arts]
        assert names.count("student.pt") == 1 and len(names) == len(set(names))
        with service_db(svc).connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM artifacts WHERE job_id = :j"), {"j": job_id}).scalar()
        assert count == len(names)


def test_one_message_delivered_twice_to_two_workers_runs_once(backend, tmp_path, digits):
    with running_service(tmp_path, workers=2, **backend) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        resp = client.http.post("/v1/jobs", json={**upload_digits(client, digits), "hyperparameters": {"epochs": 5}})
        job_id = resp.json()["id"]
        celery = make_celery(Settings(data_dir=svc.data_dir, broker_url=backend.get("broker_url")))
        for _ in range(3):
            celery.send_task(RUN_JOB, args=[job_id], queue="jobs")
        job = client.wait_job(job_id)
        time.sleep(2)  # let the duplicate deliveries reach the workers
        assert job["status"] == "succeeded"
        assert client.http.get(f"/v1/jobs/{job_id}").json()["attempt"] == 1
        assert claims(client, job_id) == 1


def _finish_from_this_process(engine, job_id: str, attempts: list[int], monkeypatch) -> list[bool]:
    """What the lifecycle's finish(succeeded) answers for each attempt, called here on the service's database."""
    from app.db import get_engine, get_sessionmaker
    from app.lifecycle import Lease, finish
    from app.settings import get_settings

    monkeypatch.setenv("DISTILLERY_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    for cached in (get_settings, get_engine, get_sessionmaker):
        cached.cache_clear()
    try:
        return [finish(Lease(job_id, attempt), "succeeded") for attempt in attempts]
    finally:
        for cached in (get_settings, get_engine, get_sessionmaker):
            cached.cache_clear()


def test_stale_leases_are_requeued_then_failed_and_late_writes_change_nothing(backend, tmp_path, digits, monkeypatch):
    # Only an uploads worker: the job stays where the test puts it; that worker's reaper does the reaping.
    with running_service(
        tmp_path, extra_env={**FAST_LEASES, "DISTILLERY_MAX_ATTEMPTS": "3"}, queues="uploads", **backend
    ) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        job_id = client.http.post("/v1/jobs", json=upload_digits(client, digits)).json()["id"]
        engine = service_db(svc)
        old = time.time() - 3600

        def make_stale(attempt: int) -> None:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE jobs SET status='running', attempt=:a, worker_id='ghost', heartbeat_at=:t WHERE id=:j"
                    ),
                    {"a": attempt, "t": db_time(svc, old), "j": job_id},
                )

        def lost_attempts() -> int:
            with engine.begin() as conn:
                return conn.execute(text("SELECT lost_attempts FROM jobs WHERE id=:j"), {"j": job_id}).scalar()

        def wait_status(status: str) -> dict:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                job = client.http.get(f"/v1/jobs/{job_id}").json()
                if job["status"] == status:
                    return job
                time.sleep(0.3)
            raise AssertionError(f"job never became {status}: {job}")

        make_stale(1)
        wait_status("queued")
        reason = [e for e in job_events(client, job_id) if e["data"] and e["data"].get("reason") == "worker_lost"]
        assert reason, job_events(client, job_id)
        assert lost_attempts() == 1
        # Attempts 2 to 4 were handed back on SIGTERM (no lost worker): attempt 5 dying is the second loss of 3.
        make_stale(5)
        wait_status("queued")
        assert lost_attempts() == 2
        make_stale(6)
        job = wait_status("failed")
        assert job["error"]["code"] == "worker_lost" and lost_attempts() == 3
        assert "3 workers died" in job["error"]["message"]
        # A paused worker of attempt 1 wakes up and tries to finish: fenced out.
        assert _finish_from_this_process(engine, job_id, [1, 6], monkeypatch) == [False, False]
        after = client.http.get(f"/v1/jobs/{job_id}").json()
        assert after["status"] == "failed" and after["error"]["code"] == "worker_lost"


def test_sigterm_hands_the_job_back_and_another_worker_finishes_it(backend, tmp_path, digits):
    with running_service(tmp_path, extra_env=FAST_LEASES, **backend) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        job_id = client.http.post(
            "/v1/jobs", json={**upload_digits(client, digits), "hyperparameters": LONG_JOB}
        ).json()["id"]
        wait_epoch(client, job_id, 2)
        svc.kill_worker("w0", signal.SIGTERM)
        assert svc.procs["worker-w0"].wait(timeout=60) == 0
        svc.start_worker("w1")
        job = client.wait_job(job_id, timeout=300)
        assert job["status"] == "succeeded", job
        events = job_events(client, job_id)
        assert any(e["data"] and e["data"].get("reason") == "worker_shutdown" for e in events)
        assert any(e["type"] == "resume" for e in events)
        assert claims(client, job_id) == 2
        with service_db(svc).begin() as conn:  # a hand-back is not a lost worker: it does not count toward the limit
            assert conn.execute(text("SELECT lost_attempts FROM jobs WHERE id=:j"), {"j": job_id}).scalar() == 0


def test_cancel_queued_at_once_and_running_with_the_checkpoint_salvaged(backend, tmp_path, digits):
    with running_service(tmp_path, **backend) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        inputs = upload_digits(client, digits)
        running = client.http.post("/v1/jobs", json={**inputs, "hyperparameters": LONG_JOB}).json()["id"]
        queued = client.http.post("/v1/jobs", json={**inputs, "hyperparameters": {"epochs": 1}}).json()["id"]
        wait_epoch(client, running, 2)
        body = client.http.post(f"/v1/jobs/{queued}/cancel").json()
        assert body["status"] == "cancelled" and body["finished_at"]
        assert client.http.post(f"/v1/jobs/{running}/cancel").json()["status"] == "cancelled"
        deadline = time.monotonic() + 60
        names = []
        while time.monotonic() < deadline and "checkpoint_student.safetensors" not in names:
            names = [a["name"] for a in client.http.get(f"/v1/jobs/{running}/artifacts").json()["data"]]
            time.sleep(0.3)
        assert "checkpoint_student.safetensors" in names
        weights = load_safetensors(
            client.http.get(f"/v1/jobs/{running}/artifacts/checkpoint_student.safetensors").content
        )
        assert weights and all(v.size for v in weights.values())
        for job_id in (running, queued):
            job = client.http.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "cancelled" and job["report"] if "report" in job else True
        # The queued job never ran; the worker is free for the next one.
        assert claims(client, queued) == 0
        nxt = client.http.post("/v1/jobs", json={**inputs, "hyperparameters": {"epochs": 1}}).json()["id"]
        assert client.wait_job(nxt)["status"] == "succeeded"


@pytest.mark.parametrize("stop", ["cancel", "max_runtime_s"])
def test_a_model_that_never_returns_is_ended_after_a_stop_and_the_worker_goes_on(backend, tmp_path, stop):
    """An uploaded student stuck in its own forward pass cannot hold a worker: once the job is cancelled (or runs
    past max_runtime_s), the worker waits DISTILLERY_STUCK_JOB_GRACE_S, kills the job's child, records why, and
    runs the next job."""
    import numpy as np

    from tests.support.hostile import Linear, LoopsOnLargeBatches, save_script

    env = {**FAST_LEASES, "DISTILLERY_STUCK_JOB_GRACE_S": "3"}
    with running_service(tmp_path, extra_env=env, **backend) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        rng = np.random.default_rng(0)
        data = tmp_path / "train.npz"
        np.savez(data, x=rng.normal(size=(64, 4)).astype(np.float32), y=rng.integers(0, 3, 64))
        train = client.ready_upload("datasets", data)
        teacher = client.ready_upload("models", save_script(Linear(), tmp_path / "teacher.pt"))
        student = client.ready_upload("models", save_script(LoopsOnLargeBatches(), tmp_path / "student.pt"))
        body = {
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "student": {"model_id": student["id"]},
            "hyperparameters": {"epochs": 1, "batch_size": 16},
        }
        if stop == "max_runtime_s":
            body["max_runtime_s"] = 20
        resp = client.http.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        deadline = time.monotonic() + 60
        while client.http.get(f"/v1/jobs/{job_id}").json()["phase"] != "training":
            assert time.monotonic() < deadline, client.http.get(f"/v1/jobs/{job_id}").json()
            time.sleep(0.2)
        # Into the student's forward pass, which never returns (a loaded machine can take a few seconds to get
        # from the phase event to the first step: a stop before it would end the job cleanly, proving nothing).
        time.sleep(5)
        if stop == "cancel":
            assert client.http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        deadline = time.monotonic() + 90
        while True:
            job = client.http.get(f"/v1/jobs/{job_id}").json()
            events = [e["message"] for e in client.http.get(f"/v1/jobs/{job_id}/events").json()["data"]]
            if any("did not return within 3 s" in m for m in events) or job["status"] == "failed":
                break
            assert time.monotonic() < deadline, (job, events, svc.log_tail())
            time.sleep(0.5)
        if stop == "cancel":
            assert job["status"] == "cancelled", job
            assert any("did not return within 3 s" in m for m in events), events
        else:
            assert job["status"] == "failed" and job["error"]["code"] == "timeout", job
            assert "did not return within 3 s" in job["error"]["message"], job
        assert svc.procs["worker-w0"].poll() is None  # the worker lives on...
        body = {
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "hyperparameters": {"epochs": 1, "batch_size": 16},
        }
        resp = client.http.post("/v1/jobs", json=body)
        assert client.wait_job(resp.json()["id"], timeout=120)["status"] == "succeeded"  # ...and runs the next job
