"""A client generated from /openapi.json by openapi-python-client runs the Quickstart against a real service
(issue 11, point 13): upload a teacher and data, wait until ready, create a job, read its events (paged and as
server-sent events), its artifacts and report, and meet errors, with typed models for every documented field."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
import time
from datetime import datetime
from io import BytesIO
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

PACKAGE = "distillery_generated"


def _generate(url: str, folder: Path):
    """Generate the client package from the live document, import it and return it."""
    (folder / "openapi.json").write_text(httpx.get(f"{url}/openapi.json", timeout=30).text)
    # No post hooks: the generator would run ruff over its output, which proves nothing here.
    config = folder / "config.json"
    config.write_text(
        json.dumps({"post_hooks": [], "project_name_override": PACKAGE, "package_name_override": PACKAGE})
    )
    generator = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [str(generator), "generate", "--path", "openapi.json", "--output-path", "out", "--config", str(config)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The generator reports what it could not type as warnings: a schema it had to skip is a defect.
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(folder / "out"))
    return importlib.import_module(PACKAGE)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from tests.support.service import running_service

    with running_service(tmp_path_factory.mktemp("generated-client")) as svc:
        yield svc


@pytest.fixture(scope="module")
def api(service, tmp_path_factory):
    """(generated package, client of tenant alice, client of tenant bob)."""
    package = _generate(service.url, tmp_path_factory.mktemp("generated"))
    clients = [
        package.AuthenticatedClient(base_url=service.url, token=service.new_key(tenant), timeout=httpx.Timeout(60))
        for tenant in ("alice", "bob")
    ]
    yield package, *clients
    sys.path.remove(str(Path(package.__file__).parents[1]))
    for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def _module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def _upload(client, kind: str, path: Path):
    """POST the file through the generated create operation and wait until the upload is ready."""
    types, models = _module("types"), _module("models")
    create = _module(f"api.{kind}.{kind}_create")
    get = _module(f"api.{kind}.{kind}_get")
    body_class = models.ModelsCreateBody if kind == "models" else models.DatasetsCreateBody
    body = body_class(file=types.File(payload=BytesIO(path.read_bytes()), file_name=path.name))
    created = create.sync(client=client, body=body)
    assert isinstance(created.status, models.UploadStatus) and isinstance(created.created_at, datetime)
    deadline = time.monotonic() + 120
    while created.status == models.UploadStatus.VALIDATING and time.monotonic() < deadline:
        time.sleep(0.3)
        created = get.sync(created.id, client=client)
    assert created.status == models.UploadStatus.READY, created
    return created


def _wait_job(client, job_id: str):
    models, get = _module("models"), _module("api.jobs.jobs_get")
    deadline = time.monotonic() + 300
    job = get.sync(job_id, client=client)
    while job.status in (models.JobStatus.QUEUED, models.JobStatus.RUNNING) and time.monotonic() < deadline:
        time.sleep(0.5)
        job = get.sync(job_id, client=client)
    return job


@pytest.fixture(scope="module")
def finished_job(api, tmp_path_factory):
    """The Quickstart's job, created and run through the generated client."""
    from tests.support.digits import digits_arrays, train_digits_teacher, write_npz

    _package, alice, _bob = api
    models = _module("models")
    folder = tmp_path_factory.mktemp("quickstart")
    x_train, y_train, x_test, y_test = digits_arrays()
    teacher = _upload(alice, "models", train_digits_teacher(folder))
    train = _upload(alice, "datasets", write_npz(folder / "train.npz", x_train, y_train))
    evaluation = _upload(alice, "datasets", write_npz(folder / "eval.npz", x_test, y_test))
    assert isinstance(teacher, models.ModelPublic) and isinstance(train, models.DatasetPublic)
    body = models.JobCreate(
        teacher_id=teacher.id,
        train_dataset_id=train.id,
        eval_dataset_id=evaluation.id,
        student=models.MlpStudent(architecture="mlp", hidden_sizes=[32]),
        hyperparameters=models.Hyperparameters(epochs=2, recipe=models.HyperparametersRecipe.PLAIN),
    )
    created = _module("api.jobs.jobs_create").sync(client=alice, body=body)
    assert isinstance(created, models.JobPublic), created
    assert isinstance(created.student, models.MlpStudent) and created.student.hidden_sizes == [32]
    job = _wait_job(alice, created.id)
    assert job.status == models.JobStatus.SUCCEEDED, job
    return job


def test_the_job_reads_back_typed(api, finished_job):
    models = _module("models")
    job = finished_job
    assert isinstance(job.status, models.JobStatus)
    assert isinstance(job.created_at, datetime) and isinstance(job.finished_at, datetime)
    assert job.finished_at.tzinfo is not None and job.finished_at >= job.created_at
    assert isinstance(job.progress, models.Progress) and job.progress.epoch == 2
    assert isinstance(job.metrics, models.Metrics) and isinstance(job.metrics.train_loss, float)
    assert isinstance(job.hyperparameters, models.ResolvedHyperparameters) and job.hyperparameters.epochs == 2
    assert all(isinstance(e, models.JobPublicExportItem) for e in job.export)
    listed = _module("api.jobs.jobs_list").sync(client=api[1], status=models.JobStatus.SUCCEEDED)
    assert [j.id for j in listed.data] == [job.id] and listed.next_after is None


def test_events_paged_and_streamed(api, finished_job):
    models = _module("models")
    alice = api[1]
    first = _module("api.jobs.jobs_events_list").sync(finished_job.id, client=alice, limit=2)
    assert isinstance(first, models.EventsPage) and isinstance(first.next_after, str)
    assert all(isinstance(e, models.EventPublic) and isinstance(e.created_at, datetime) for e in first.data)
    rest = _module("api.jobs.jobs_events_list").sync(finished_job.id, client=alice, after=first.next_after, limit=1000)
    paged = [e.id for e in first.data + rest.data]
    stream = _module("api.jobs.jobs_events_stream").sync_detailed(finished_job.id, client=alice)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    streamed = [int(line[4:]) for line in stream.content.decode().splitlines() if line.startswith("id: ")]
    assert streamed == paged and len(paged) > 2
    assert stream.content.decode().rstrip().endswith("event: end\ndata: {}")


def test_artifacts_download_as_listed(api, finished_job):
    models = _module("models")
    alice = api[1]
    listed = _module("api.jobs.jobs_artifacts_list").sync(finished_job.id, client=alice)
    assert isinstance(listed, models.ArtifactsPage) and listed.data
    artifact = listed.data[0]
    assert isinstance(artifact, models.ArtifactPublic)
    download = _module("api.jobs.jobs_artifacts_get").sync_detailed(finished_job.id, artifact.name, client=alice)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == artifact.sha256 == download.headers["x-checksum-sha256"]
    assert len(download.content) == artifact.size_bytes


def test_the_report_is_typed(api, finished_job):
    models = _module("models")
    report = _module("api.jobs.jobs_report_get").sync(finished_job.id, client=api[1])
    assert isinstance(report, models.Report) and report.job_id == finished_job.id
    assert isinstance(report.student, models.StudentScores) and 0 <= report.student.accuracy <= 1
    assert isinstance(report.teacher.latency_ms, models.Latency)
    assert isinstance(report.compression_ratio, float) and report.compression_ratio > 1
    assert [h.epoch for h in report.history] == [1, 2] and isinstance(report.history[0], models.HistoryEpoch)


def test_errors_come_back_in_the_envelope(api, finished_job):
    models = _module("models")
    _package, alice, bob = api
    missing = _module("api.models.models_get").sync_detailed("mdl_missing", client=alice)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorResponse)
    assert missing.parsed.error.code == "not_found"
    # Another tenant's job is exactly as missing.
    hidden = _module("api.jobs.jobs_get").sync_detailed(finished_job.id, client=bob)
    assert hidden.status_code == 404 and hidden.parsed.error.code == "not_found"
    done = _module("api.jobs.jobs_cancel").sync_detailed(finished_job.id, client=alice)
    assert done.status_code == 409 and isinstance(done.parsed, models.ErrorResponse)
    bad = _module("api.jobs.jobs_create").sync_detailed(
        client=alice, body=models.JobCreate(teacher_id="mdl_missing", train_dataset_id="dst_missing")
    )
    assert bad.status_code in (404, 422) and isinstance(bad.parsed, models.ErrorResponse)
