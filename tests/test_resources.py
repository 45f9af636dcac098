"""Resource classes (issue 13, point 3), in process: the contract's classes and queues, the request's validation,
where a job's message goes, the `waiting` event (once, also with reapers racing), and /metrics per class.

The whole path with real worker processes on PostgreSQL and Redis: tests/test_routing.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.models import Dataset, Job, JobEvent, Model, WorkerHeartbeat, new_id, utcnow
from contract.resources import MAX_GPUS, job_queue, queue_gpus, resource_class, worker_classes
from tests.support.rows import in_process_database, upload_row
from worker.resources import can_run, job_queue_changes, visible_gpu_count

INFO = {"input": {"shape": [64], "dtype": "float32"}, "num_classes": 10, "has_labels": True}


def test_each_request_has_one_class_and_queue_and_a_worker_serves_what_it_holds_whole():
    assert [resource_class(g) for g in (None, 0, 1, 2, 8)] == ["any", "cpu", "gpu", "gpu2", "gpu8"]
    assert [job_queue(g) for g in (None, 0, 1, 3)] == ["jobs", "jobs.cpu", "jobs.gpu", "jobs.gpu3"]
    for gpus in (0, 1, 2, MAX_GPUS):
        assert queue_gpus(job_queue(gpus)) == gpus  # the queue name says what its jobs need
    assert queue_gpus("jobs") is None and queue_gpus("uploads") is None and queue_gpus("jobs.gpux") is None
    assert worker_classes(0) == ["any", "cpu"]
    assert worker_classes(2) == ["any", "gpu", "gpu2"]


def test_jobs_stands_for_the_workers_class_queues_and_a_queue_it_cannot_serve_is_dropped():
    assert job_queue_changes(["jobs", "uploads"], 0) == (["jobs.cpu"], [])
    assert job_queue_changes(["jobs"], 2) == (["jobs.gpu", "jobs.gpu2"], [])
    assert job_queue_changes(["jobs", "jobs.cpu"], 1) == (["jobs.gpu"], [])  # CPU jobs too, when asked
    assert job_queue_changes(["uploads"], 4) == ([], [])  # an uploads worker serves no job
    # A CPU worker told to consume the GPU queue, a 1-GPU worker the 4-GPU one: refused, never consumed.
    assert job_queue_changes(["jobs.gpu", "uploads"], 0) == ([], ["jobs.gpu"])
    assert job_queue_changes(["jobs", "jobs.gpu4"], 1) == (["jobs.gpu"], ["jobs.gpu4"])
    assert can_run(None, 0) and can_run(0, 2) and can_run(2, 2)
    assert not can_run(1, 0) and not can_run(3, 2)


def test_gpus_are_counted_from_device_nodes_narrowed_by_cuda_visible_devices(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert visible_gpu_count(tmp_path, {}) == 3  # nvidiactl and nvidia-uvm are not GPUs
    assert visible_gpu_count(tmp_path, {"CUDA_VISIBLE_DEVICES": "1"}) == 1
    assert visible_gpu_count(tmp_path, {"CUDA_VISIBLE_DEVICES": "0,2"}) == 2
    assert visible_gpu_count(tmp_path, {"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpu_count(tmp_path, {"CUDA_VISIBLE_DEVICES": "0,-1,1"}) == 1  # CUDA stops at -1
    assert visible_gpu_count(tmp_path / "none", {"CUDA_VISIBLE_DEVICES": "0"}) == 0  # no device, no GPU


class _Sent:
    """Stands in for the Celery client: records the queue of each message."""

    def __init__(self):
        self.queues: list[str] = []

    def send_task(self, _name, args=None, queue=None, **_kwargs):
        self.queues.append(queue)


@pytest.fixture
def api(request, tmp_path, monkeypatch):
    """(client, sessionmaker, sent queues): the app in process on SQLite (or PostgreSQL when parametrized so), one
    tenant with ready inputs."""
    from app import queue
    from app.auth import create_key, tenant_for_key
    from app.main import create_app

    sent = _Sent()
    monkeypatch.setattr(queue, "get_celery", lambda: sent)
    url = request.getfixturevalue("postgres_url") if getattr(request, "param", None) == "postgresql" else None
    with in_process_database(tmp_path, monkeypatch, url) as sessionmaker:
        with sessionmaker() as session:
            key = create_key(session, "resources")
            tenant = tenant_for_key(session, key)
            teacher = upload_row(Model, tenant.id, format="torchscript", status="ready", info=INFO)
            train = upload_row(Dataset, tenant.id, status="ready", info=INFO, options={})
            session.add_all([teacher, train])
            session.commit()
            body = {"teacher_id": teacher.id, "train_dataset_id": train.id, "student": {"architecture": "mlp"}}
        client = TestClient(create_app(), raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"})
        client.body = body  # type: ignore[attr-defined]
        yield client, sessionmaker, sent.queues


def _beat(sessionmaker, queues: str, gpus: int | None, age_s: float = 0.0) -> None:
    with sessionmaker() as session:
        at = utcnow() - timedelta(seconds=age_s)
        session.add(WorkerHeartbeat(id=new_id("w"), queues=queues, gpus=gpus, started_at=at, heartbeat_at=at))
        session.commit()


def _events(sessionmaker, job_id: str, type_: str = "waiting") -> list[JobEvent]:
    with sessionmaker() as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == type_)))


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gpus": -1}, "resources.gpus: Input should be greater than or equal to 0"),
        ({"gpus": MAX_GPUS + 1}, f"resources.gpus: Input should be less than or equal to {MAX_GPUS}"),
        ({"gpus": "1"}, "resources.gpus: Input should be a valid integer"),
        ({"gpus": 1.5}, "resources.gpus: Input should be a valid integer"),
        ({"gpus": True}, "resources.gpus: Input should be a valid integer"),
        ({"cpus": 4}, "resources.cpus: Extra inputs are not permitted"),
        ("gpu", "resources: Input should be a valid dictionary or object to extract fields from"),
    ],
)
def test_a_bad_resource_request_is_422_saying_what_is_wrong(api, resources, message):
    client, _sessionmaker, sent = api
    resp = client.post("/v1/jobs", json={**client.body, "resources": resources})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == {"code": "invalid_request", "message": message}
    assert sent == []


def test_the_request_is_recorded_shown_and_routes_the_message_to_its_class_queue(api):
    client, sessionmaker, sent = api
    _beat(sessionmaker, "jobs,jobs.cpu,uploads", 0)
    _beat(sessionmaker, "jobs,jobs.gpu,jobs.gpu2", 2)
    shown = []
    for resources in (None, {}, {"gpus": None}, {"gpus": 0}, {"gpus": 1}, {"gpus": 2}):
        body = client.body if resources is None else {**client.body, "resources": resources}
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        assert client.get(f"/v1/jobs/{resp.json()['id']}").json()["resources"] == resp.json()["resources"]
        shown.append(resp.json()["resources"])
        assert _events(sessionmaker, resp.json()["id"]) == []  # a live worker serves every one of these
    assert shown == [{"gpus": None}] * 3 + [{"gpus": 0}, {"gpus": 1}, {"gpus": 2}]
    assert sent == ["jobs", "jobs", "jobs", "jobs.cpu", "jobs.gpu", "jobs.gpu2"]


def test_a_job_no_live_worker_can_serve_says_what_it_waits_for_at_creation(api):
    client, sessionmaker, _sent = api
    _beat(sessionmaker, "jobs,jobs.cpu", 0)
    _beat(sessionmaker, "jobs,jobs.cpu", 0)
    _beat(sessionmaker, "uploads", 0)
    _beat(sessionmaker, "jobs,jobs.gpu", 1, age_s=3600)  # stale: gone, not counted
    gpu = client.post("/v1/jobs", json={**client.body, "resources": {"gpus": 1}}).json()
    [event] = _events(sessionmaker, gpu["id"])
    assert event.message == (
        "waiting for a GPU worker: no live worker advertises a GPU (live workers: 2 CPU, 1 for uploads only)"
    )
    assert event.level == "warning" and event.data == {"gpus": 1, "class": "gpu", "queue": "jobs.gpu"}
    for resources in ({"gpus": 0}, {}):
        job = client.post("/v1/jobs", json={**client.body, "resources": resources}).json()
        assert _events(sessionmaker, job["id"]) == []

    _beat(sessionmaker, "jobs,jobs.gpu,jobs.gpu2", 2)
    four = client.post("/v1/jobs", json={**client.body, "resources": {"gpus": 4}}).json()
    [event] = _events(sessionmaker, four["id"])
    assert event.message == (
        "waiting for a worker with 4 GPUs: the largest live worker advertises 2 "
        "(live workers: 2 CPU, 1 for uploads only, 1 with 2 GPUs)"
    )
    two = client.post("/v1/jobs", json={**client.body, "resources": {"gpus": 2}}).json()
    assert _events(sessionmaker, two["id"]) == []


@pytest.mark.parametrize("api", ["sqlite", "postgresql"], indirect=True)
def test_the_reaper_tells_a_queued_job_once_per_stay_in_the_queue_even_with_reapers_racing(api):
    from app.lifecycle import note_waiting_jobs
    from app.lifecycle.job_events import STATUS_EVENT, add_event

    client, sessionmaker, _sent = api
    _beat(sessionmaker, "jobs,jobs.gpu", 1)
    job_id = client.post("/v1/jobs", json={**client.body, "resources": {"gpus": 1}}).json()["id"]
    assert _events(sessionmaker, job_id) == []  # a GPU worker was live at creation
    with sessionmaker() as session:  # ... and then it went away
        for row in session.scalars(select(WorkerHeartbeat)):
            row.heartbeat_at = utcnow() - timedelta(hours=1)
        session.commit()

    noted: list[list[str]] = []
    barrier = threading.Barrier(4)

    def reaper() -> None:
        barrier.wait()
        noted.append(note_waiting_jobs())

    threads = [threading.Thread(target=reaper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sum(noted, [])) == [job_id] and len(_events(sessionmaker, job_id)) == 1
    assert note_waiting_jobs() == [] and len(_events(sessionmaker, job_id)) == 1

    with sessionmaker() as session:  # requeued after a run (a status event): a new stay, told again
        add_event(session, job_id, STATUS_EVENT, "requeued", {"status": "queued"})
        session.commit()
    assert note_waiting_jobs() == [job_id] and len(_events(sessionmaker, job_id)) == 2


def _samples(client: TestClient, name: str) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        sample.labels["class"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_metrics_give_queue_depth_and_oldest_age_per_class(api):
    client, sessionmaker, _sent = api
    assert _samples(client, "distillery_queue_depth") == {"any": 0, "cpu": 0, "gpu": 0}
    assert _samples(client, "distillery_queue_oldest_age_seconds") == {"any": 0, "cpu": 0, "gpu": 0}
    assert _samples(client, "distillery_running_jobs") == {"any": 0, "cpu": 0, "gpu": 0}
    _beat(sessionmaker, "jobs,jobs.cpu", 0)
    _beat(sessionmaker, "jobs,jobs.cpu", None)  # a worker older than resource classes: counted as CPU
    _beat(sessionmaker, "jobs,jobs.gpu,jobs.gpu2", 2)
    _beat(sessionmaker, "uploads", 1)  # validates uploads only: in no job class
    ids = {}
    for name, resources in (("gpu", {"gpus": 1}), ("gpu_b", {"gpus": 1}), ("gpu2", {"gpus": 2}), ("any", {})):
        ids[name] = client.post("/v1/jobs", json={**client.body, "resources": resources}).json()["id"]
    with sessionmaker() as session:
        session.get(Job, ids["gpu"]).created_at = utcnow() - timedelta(seconds=600)
        session.get(Job, ids["any"]).status = "running"  # not queued: not counted
        session.commit()
    assert _samples(client, "distillery_queue_depth") == {"any": 0, "cpu": 0, "gpu": 2, "gpu2": 1}
    assert _samples(client, "distillery_running_jobs") == {"any": 1, "cpu": 0, "gpu": 0, "gpu2": 0}
    ages = _samples(client, "distillery_queue_oldest_age_seconds")
    assert 600 <= ages["gpu"] < 3600 and 0 <= ages["gpu2"] < 600 and ages["cpu"] == ages["any"] == 0
    assert _samples(client, "distillery_workers_by_class") == {"cpu": 2, "gpu2": 1}


def test_the_sdk_sends_gpus_as_the_resource_request_and_the_cli_refuses_a_bad_count_before_any_upload(api, tmp_path):
    import httpx
    from typer.testing import CliRunner

    from distillery_cli.cli import app as cli_app
    from distillery_client import Distillery

    client, _sessionmaker, sent = api

    def forward(request: httpx.Request) -> httpx.Response:
        answer = client.request(request.method, request.url.path, content=request.content, headers=request.headers)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    key = client.headers["Authorization"].split()[1]
    with Distillery("http://testserver", key, transport=httpx.MockTransport(forward)) as sdk:
        ids = (client.body["teacher_id"], client.body["train_dataset_id"])
        assert sdk.create_job(*ids, student="mlp", gpus=2).resources.gpus == 2
        assert sdk.create_job(*ids, student="mlp").resources.gpus is None
        assert sdk.create_job(*ids, student="mlp", gpus=0).resources.gpus == 0
    assert sent == ["jobs.gpu2", "jobs", "jobs.cpu"]

    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"x")
    common = ["run", "--teacher", str(teacher), "--train", str(teacher), "--out", str(tmp_path / "o")]
    for count, problem in (("17", "less than or equal to 16"), ("-1", "greater than or equal to 0")):
        result = CliRunner().invoke(cli_app, [*common, "--gpus", count, "--url", "http://127.0.0.1:9"])
        assert result.exit_code == 2, result.output
        assert f"--gpus: Input should be {problem}" in " ".join(result.stderr.split())
