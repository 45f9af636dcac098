"""Routing by resource class (issue 13, point 3), with real API and worker processes on PostgreSQL and Redis.

Acceptance: a GPU job with only CPU workers alive is reported as waiting for a GPU worker within a minute, and
runs when one joins. This machine has no GPU: the worker that joins is told by DISTILLERY_WORKER_GPUS=1 that it
serves the GPU class, sees no device, and trains the job on the CPU (saying so in the job's events) instead of
failing in CUDA. A worker without that setting counts its GPUs from the NVIDIA device nodes: here, none.
"""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import text

from app.queue import RUN_JOB, make_celery
from app.settings import Settings
from tests.support.job_service import digits_files, job_events, service_db, upload_digits
from tests.support.service import Client, running_service
from tests.test_metrics import scrape, value

pytestmark = pytest.mark.integration

FAST = {
    "DISTILLERY_REAPER_INTERVAL_S": "1",
    "DISTILLERY_WORKER_HEARTBEAT_INTERVAL_S": "1",
    "DISTILLERY_WORKER_GPUS": "0",  # the workers of running_service are CPU workers, whatever the host has
}
FEW_EPOCHS = {"epochs": 2}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    return digits_files(tmp_path_factory.mktemp("digits"))


def _waiting(client: Client, job_id: str, timeout: float) -> list[dict]:
    """The job's `waiting` events, once there is one (fails after `timeout` seconds without)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in job_events(client, job_id) if e["type"] == "waiting"]
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} has no waiting event after {timeout} s: {job_events(client, job_id)}")


def _worker_of(svc, job_id: str) -> str:
    with service_db(svc).connect() as conn:
        return conn.execute(text("SELECT worker_id FROM jobs WHERE id = :j"), {"j": job_id}).scalar() or ""


def _wait_log(svc, name: str, needle: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while needle not in (svc.logs / f"worker-{name}.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {needle!r} in worker {name}'s log\n{svc.log_tail()}"
        time.sleep(0.5)


def _submit(client: Client, inputs: dict, gpus: int | None) -> dict:
    resources = {} if gpus is None else {"gpus": gpus}
    resp = client.http.post("/v1/jobs", json={**inputs, "hyperparameters": FEW_EPOCHS, "resources": resources})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_a_gpu_job_with_only_cpu_workers_waits_saying_so_and_runs_when_a_gpu_worker_joins(
    postgres_url, redis_url, tmp_path, digits
):
    with running_service(tmp_path, postgres_url, redis_url, extra_env=FAST) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        inputs = upload_digits(client, digits)
        gpu_job = _submit(client, inputs, 1)
        assert gpu_job["resources"] == {"gpus": 1}
        submitted = time.monotonic()
        [waiting] = _waiting(client, gpu_job["id"], timeout=60)
        print(f"waiting event seen {time.monotonic() - submitted:.1f} s after the submit answered")
        assert waiting["message"] == "waiting for a GPU worker: no live worker advertises a GPU (live workers: 1 CPU)"
        assert waiting["data"] == {"gpus": 1, "class": "gpu", "queue": "jobs.gpu"}

        # A stray message for the GPU job in the queue the CPU worker consumes: it is sent on, never run there.
        celery = make_celery(Settings(data_dir=svc.data_dir, broker_url=redis_url))
        celery.send_task(RUN_JOB, args=[gpu_job["id"]], queue="jobs")
        # Meanwhile the CPU worker serves CPU jobs and jobs that take any worker.
        for gpus in (0, None):
            done = client.wait_job(_submit(client, inputs, gpus)["id"])
            assert done["status"] == "succeeded", (done, svc.log_tail())
        _wait_log(svc, "w0", f"job {gpu_job['id']} needs 1 GPUs, more than this worker has")
        assert client.http.get(f"/v1/jobs/{gpu_job['id']}").json()["status"] == "queued"
        assert _worker_of(svc, gpu_job["id"]) == ""  # never claimed
        metrics = scrape(svc.url)
        assert value(metrics, "distillery_queue_depth", **{"class": "gpu"}) == 1
        assert value(metrics, "distillery_queue_depth", **{"class": "cpu"}) == 0
        assert value(metrics, "distillery_queue_oldest_age_seconds", **{"class": "gpu"}) > 0
        # Told once, though the reaper passed every second since.
        assert len([e for e in job_events(client, gpu_job["id"]) if e["type"] == "waiting"]) == 1

        svc.start_worker("gpu", queues="jobs", extra_env={"DISTILLERY_WORKER_GPUS": "1"})
        joined = time.monotonic()
        job = client.wait_job(gpu_job["id"], timeout=300)
        print(f"GPU job ended ({job['status']}) {time.monotonic() - joined:.1f} s after the GPU-class worker started")
        assert job["status"] == "succeeded", (job, svc.log_tail())
        assert _worker_of(svc, job["id"]).endswith(f":{svc.procs['worker-gpu'].pid}")
        with service_db(svc).connect() as conn:
            beats = dict(conn.execute(text("SELECT id, queues FROM worker_heartbeats")).all())
            gpus = dict(conn.execute(text("SELECT id, gpus FROM worker_heartbeats")).all())
        gpu_worker = _worker_of(svc, job["id"])
        assert (beats[gpu_worker], gpus[gpu_worker]) == ("jobs,jobs.gpu", 1)  # advertised; no jobs.cpu
        assert sorted(beats.values()) == ["jobs,jobs.gpu", "jobs,uploads,jobs.cpu"] and sorted(gpus.values()) == [0, 1]
        events = job_events(client, job["id"])
        types = [e["type"] for e in events]
        assert types.index("waiting") < types.index("phase")  # told first, then the usual events followed
        assert any(
            e["type"] == "warning" and "advertises 1 GPU (DISTILLERY_WORKER_GPUS) but sees 0" in e["message"]
            for e in events
        ), events
        assert client.http.get(f"/v1/jobs/{job['id']}/report").json()["device"] == "cpu"

        # Only the GPU-class worker is left: a CPU job waits for a CPU worker instead of running on it.
        svc.kill_worker("w0", signal.SIGTERM)
        assert svc.procs["worker-w0"].wait(timeout=60) is not None
        cpu_job = _submit(client, inputs, 0)
        [waiting] = _waiting(client, cpu_job["id"], timeout=60)
        assert waiting["message"] == (
            "waiting for a CPU worker: no live worker serves CPU jobs (queue jobs.cpu) (live workers: 1 with 1 GPU)"
        )
        any_job = client.wait_job(_submit(client, inputs, None)["id"])  # the idle GPU worker takes an any-job
        assert any_job["status"] == "succeeded" and _worker_of(svc, any_job["id"]) == _worker_of(svc, job["id"])
        assert client.http.get(f"/v1/jobs/{cpu_job['id']}").json()["status"] == "queued"
        assert value(scrape(svc.url), "distillery_queue_depth", **{"class": "cpu"}) == 1


def test_a_two_gpu_job_runs_as_two_ranks_on_a_worker_that_advertises_two(postgres_url, redis_url, tmp_path, digits):
    """The whole chain for `gpus: 2` (issue 13, points 3 and 4): the API routes it to the 2-GPU class, a worker of
    that class hands the child gpus 2, and the child trains as two ranks. No GPU here: the worker is told it has
    two by DISTILLERY_WORKER_GPUS, sees none, and the ranks meet on gloo on the CPU."""
    with running_service(tmp_path, postgres_url, redis_url, extra_env=FAST) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        inputs = upload_digits(client, digits)
        job = _submit(client, inputs, 2)
        [waiting] = _waiting(client, job["id"], timeout=60)
        assert waiting["data"]["gpus"] == 2
        svc.start_worker("gpu2", queues="jobs", extra_env={"DISTILLERY_WORKER_GPUS": "2"})
        done = client.wait_job(job["id"], timeout=300)
        assert done["status"] == "succeeded", (done, svc.log_tail())
        assert _worker_of(svc, job["id"]).endswith(f":{svc.procs['worker-gpu2'].pid}")
        messages = [e["message"] for e in job_events(client, job["id"])]
        assert "running as 2 ranks (gloo)" in messages, messages
        report = client.http.get(f"/v1/jobs/{job['id']}/report").json()
        assert report["device"] == "cpu" and report["student"]["accuracy"] > 0.5
