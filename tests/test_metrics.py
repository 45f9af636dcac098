"""/metrics: Prometheus text that parses, and counts what the test made (from the database)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
from tests.support.service import Client, running_service


def scrape(url: str) -> dict[str, list]:
    """Metric family name -> its samples."""
    resp = httpx.get(url + "/metrics", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(resp.text)}


def value(families: dict, name: str, **labels) -> float:
    for family in families.values():
        for sample in family:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("metrics")) as service:
        yield service


def test_metrics_count_the_jobs_uploads_and_workers(svc, tmp_path):
    before = scrape(svc.url)
    assert value(before, "distillery_jobs", status="succeeded") == 0
    assert value(before, "distillery_workers_fresh") >= 1
    assert 0 <= value(before, "distillery_worker_heartbeat_age_seconds") < 60

    client = Client(svc.url, svc.new_key("metrics"))
    x_train, y_train, x_test, y_test = digits_arrays()
    teacher = client.ready_upload("models", train_digits_teacher(tmp_path))
    train = client.ready_upload("datasets", write_npz(tmp_path / "train.npz", x_train, y_train))
    eval_ = client.ready_upload("datasets", write_npz(tmp_path / "eval.npz", x_test, y_test))
    body = {"teacher_id": teacher["id"], "train_dataset_id": train["id"], "eval_dataset_id": eval_["id"]}

    done = client.http.post("/v1/jobs", json={**body, "hyperparameters": {"epochs": 1}}).json()
    assert client.wait_job(done["id"])["status"] == "succeeded"
    cancelled = []
    for _ in range(2):
        job = client.http.post("/v1/jobs", json={**body, "hyperparameters": {"epochs": 500}}).json()
        assert client.http.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        cancelled.append(job)

    after = scrape(svc.url)
    assert value(after, "distillery_jobs", status="succeeded") == 1
    assert value(after, "distillery_jobs", status="cancelled") == 2
    assert value(after, "distillery_jobs", status="queued") == 0
    assert value(after, "distillery_jobs", status="running") == 0
    assert (
        sum(
            value(after, "distillery_jobs", status=s) for s in ("queued", "running", "succeeded", "failed", "cancelled")
        )
        == 3
    )

    # Histograms: the succeeded job started and ended; cancelled jobs that never started have no wait.
    started = 1 + sum(1 for job in cancelled if client.http.get(f"/v1/jobs/{job['id']}").json()["started_at"])
    assert value(after, "distillery_job_queue_wait_seconds_count") == started
    assert value(after, "distillery_job_queue_wait_seconds_bucket", le="+Inf") == started
    assert value(after, "distillery_job_run_seconds_count", status="succeeded") == 1
    assert value(after, "distillery_job_run_seconds_sum", status="succeeded") > 0
    assert value(after, "distillery_job_run_seconds_count", status="failed") == 0

    sizes = {"model": teacher["size_bytes"], "dataset": train["size_bytes"] + eval_["size_bytes"]}
    for kind, size in sizes.items():
        assert value(after, "distillery_upload_bytes", kind=kind) == size
    assert value(after, "distillery_uploads", kind="model", status="ready") == 1
    assert value(after, "distillery_uploads", kind="dataset", status="ready") == 2
    ages = [s for s in after["distillery_worker_last_heartbeat_age_seconds"]]
    assert ages and all(s.value < 60 for s in ages)


def test_metrics_need_no_key_and_show_no_tenant_ids(svc):
    text = httpx.get(svc.url + "/metrics", timeout=30).text
    assert "ten_" not in text and "job_" not in text.replace("distillery_job_", "")
