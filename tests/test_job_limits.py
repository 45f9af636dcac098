"""Limits a job lives within: Idempotency-Key, the per-tenant cap, max_runtime_s, retention, and /readyz without
workers. Real API and worker processes, on PostgreSQL + Redis and on the embedded defaults."""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.support.job_service import db_time, digits_files, job_events, service_db, upload_digits
from tests.support.service import Client, running_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    return digits_files(tmp_path_factory.mktemp("digits"))


def test_idempotency_key_same_body_same_job_other_body_422_concurrent_one_job(backend, tmp_path, digits):
    with running_service(tmp_path, queues="uploads", **backend) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        body = {**upload_digits(client, digits), "hyperparameters": {"epochs": 1}}
        first = client.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
        again = client.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 201
        assert first.json()["id"] == again.json()["id"]
        other = client.http.post("/v1/jobs", json={**body, "baseline": True}, headers={"Idempotency-Key": "k1"})
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        queued_events = [e for e in job_events(client, first.json()["id"]) if e["message"] == "job queued"]
        assert len(queued_events) == 1
        results: list = []
        barrier = threading.Barrier(8)

        def post() -> None:
            c = Client(svc.url, client.http.headers["Authorization"].split()[1])
            barrier.wait()
            results.append(c.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k2"}))

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {r.status_code for r in results} == {201}
        assert len({r.json()["id"] for r in results}) == 1
        all_jobs = client.http.get("/v1/jobs", params={"limit": 100}).json()["data"]
        assert len(all_jobs) == 2


def test_tenant_cap_answers_429_with_retry_after(tmp_path, digits):
    with running_service(tmp_path, queues="uploads", extra_env={"DISTILLERY_MAX_ACTIVE_JOBS_PER_TENANT": "2"}) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        body = upload_digits(client, digits)
        assert [client.http.post("/v1/jobs", json=body).status_code for _ in range(2)] == [201, 201]
        resp = client.http.post("/v1/jobs", json=body)
        assert resp.status_code == 429 and resp.headers["Retry-After"]
        assert resp.json()["error"]["code"] == "too_many_jobs"
        other = Client(svc.url, svc.new_key("other"))
        assert other.http.post("/v1/jobs", json=upload_digits(other, digits)).status_code == 201


def test_tenant_cap_holds_under_concurrent_creates(backend, tmp_path, digits):
    env = {"DISTILLERY_MAX_ACTIVE_JOBS_PER_TENANT": "3"}
    with running_service(tmp_path, queues="uploads", extra_env=env, **backend) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        body = upload_digits(client, digits)
        key = client.http.headers["Authorization"].split()[1]
        barrier = threading.Barrier(10)
        codes: list[int] = []

        def post() -> None:
            c = Client(svc.url, key)
            barrier.wait()
            codes.append(c.http.post("/v1/jobs", json=body).status_code)

        threads = [threading.Thread(target=post) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [201] * 3 + [429] * 7
        assert len(client.http.get("/v1/jobs").json()["data"]) == 3


def test_max_runtime_fails_the_job_with_timeout(tmp_path, digits):
    with running_service(tmp_path) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        job_id = client.http.post(
            "/v1/jobs",
            json={**upload_digits(client, digits), "max_runtime_s": 2, "hyperparameters": {"epochs": 500}},
        ).json()["id"]
        job = client.wait_job(job_id, timeout=120)
        assert job["status"] == "failed" and job["error"]["code"] == "timeout", job
        started = job["started_at"]
        assert started and job["max_runtime_s"] == 2


def test_retention_removes_files_of_old_jobs(tmp_path, digits):
    env = {"DISTILLERY_RETENTION_DAYS": "1", "DISTILLERY_REAPER_INTERVAL_S": "1"}
    with running_service(tmp_path, extra_env=env) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        job_id = client.http.post(
            "/v1/jobs", json={**upload_digits(client, digits), "hyperparameters": {"epochs": 1}}
        ).json()["id"]
        assert client.wait_job(job_id)["status"] == "succeeded"
        job_dir = next(svc.data_dir.rglob(f"jobs/{job_id}"))
        assert any(job_dir.rglob("student.pt"))
        with service_db(svc).begin() as conn:
            conn.execute(
                text("UPDATE jobs SET finished_at=:t WHERE id=:j"),
                {"t": db_time(svc, time.time() - timedelta(days=2).total_seconds()), "j": job_id},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and job_dir.exists():
            time.sleep(0.5)
        assert not job_dir.exists()
        assert client.http.get(f"/v1/jobs/{job_id}/artifacts").json()["data"] == []
        assert client.http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_readyz_fails_when_no_worker_heartbeat_is_fresh(tmp_path):
    import httpx

    env = {"DISTILLERY_WORKER_HEARTBEAT_TIMEOUT_S": "3", "DISTILLERY_WORKER_HEARTBEAT_INTERVAL_S": "1"}
    with running_service(tmp_path, extra_env=env) as svc:
        assert httpx.get(svc.url + "/readyz").status_code == 200
        svc.kill_worker("w0", signal.SIGKILL)  # no goodbye: only the heartbeat's age tells
        svc.procs["worker-w0"].wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and httpx.get(svc.url + "/readyz").status_code == 200:
            time.sleep(0.5)
        resp = httpx.get(svc.url + "/readyz")
        assert resp.status_code == 503 and resp.json()["checks"]["workers"] == 0
        assert httpx.get(svc.url + "/healthz").status_code == 200
