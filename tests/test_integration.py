"""The whole path over HTTP with real worker processes: embedded defaults, and PostgreSQL + Redis."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.support.digits import (
    digits_arrays,
    export_teacher_onnx,
    teacher_accuracy,
    train_digits_teacher,
    write_csv,
    write_npz,
)
from tests.support.service import Client, running_service

pytestmark = pytest.mark.integration


@pytest.fixture(params=["embedded", "postgres+redis"])
def service(request, tmp_path):
    """A running API and worker on one of the two backends."""
    if request.param == "embedded":
        with running_service(tmp_path) as svc:
            yield svc
    else:
        pg = request.getfixturevalue("postgres_url")
        broker = request.getfixturevalue("redis_url")
        with running_service(tmp_path, database_url=pg, broker_url=broker) as svc:
            yield svc


def _distil(client: Client, teacher_path, train_path, eval_path, student=None, epochs=30, **dataset_fields):
    teacher = client.ready_upload("models", teacher_path)
    train = client.ready_upload("datasets", train_path, **dataset_fields)
    eval_ = client.ready_upload("datasets", eval_path, **dataset_fields)
    body = {
        "teacher_id": teacher["id"],
        "train_dataset_id": train["id"],
        "eval_dataset_id": eval_["id"],
        "student": student or {"architecture": "mlp", "hidden_sizes": [32]},
        "hyperparameters": {"epochs": epochs, "learning_rate": 0.005},
        "export": ["torchscript", "safetensors"],
    }
    resp = client.http.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = client.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def _download_student(client: Client, job_id: str, tmp_path):
    arts = {a["name"]: a for a in client.http.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]}
    resp = client.http.get(f"/v1/jobs/{job_id}/artifacts/student.pt")
    assert resp.status_code == 200
    path = tmp_path / "student.pt"
    path.write_bytes(resp.content)
    import hashlib

    assert hashlib.sha256(resp.content).hexdigest() == arts["student.pt"]["sha256"]
    return torch.jit.load(str(path), map_location="cpu").eval()


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def test_torchscript_teacher_and_npz_data_give_a_student_whose_accuracy_matches_the_report(service, tmp_path):
    client = Client(service.url, service.new_key("acme"))
    x_train, y_train, x_test, y_test = digits_arrays()
    job = _distil(
        client,
        train_digits_teacher(tmp_path),
        write_npz(tmp_path / "train.npz", x_train, y_train),
        write_npz(tmp_path / "eval.npz", x_test, y_test),
    )
    report = client.http.get(f"/v1/jobs/{job['id']}/report").json()
    student = _download_student(client, job["id"], tmp_path)
    assert _accuracy(student, x_test, y_test) == pytest.approx(report["student"]["accuracy"], abs=1e-9)
    assert report["eval_examples"] == len(y_test)
    assert job["progress"]["epochs"] == 30
    manifest = json.loads(client.http.get(f"/v1/jobs/{job['id']}/artifacts/manifest.json").content)
    assert manifest["classes"] == [str(i) for i in range(10)]


def test_onnx_teacher_and_csv_data(service, tmp_path):
    client = Client(service.url, service.new_key("acme"))
    x_train, y_train, x_test, y_test = digits_arrays()
    onnx_path = export_teacher_onnx(tmp_path)
    job = _distil(
        client,
        onnx_path,
        write_csv(tmp_path / "train.csv", x_train, y_train),
        write_csv(tmp_path / "eval.csv", x_test, y_test),
        label_column="label",
    )
    report = client.http.get(f"/v1/jobs/{job['id']}/report").json()
    student = _download_student(client, job["id"], tmp_path)
    assert _accuracy(student, x_test, y_test) == pytest.approx(report["student"]["accuracy"], abs=1e-9)
    # The report's teacher accuracy is the ONNX teacher's own, as onnxruntime computes it.
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x_test})[0]
    assert report["teacher"]["accuracy"] == pytest.approx(float((logits.argmax(1) == y_test).mean()), abs=1e-9)


def test_distillation_works_with_and_without_labels(tmp_path):
    """A student 5x smaller reaches 95% of the teacher; without labels too, so the teacher's signal trains it."""
    x_train, y_train, x_test, y_test = digits_arrays()
    with running_service(tmp_path) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        teacher_path = train_digits_teacher(tmp_path)
        eval_path = write_npz(tmp_path / "eval.npz", x_test, y_test)
        labelled = _distil(
            client, teacher_path, write_npz(tmp_path / "train.npz", x_train, y_train), eval_path, epochs=40
        )
        unlabelled = _distil(
            client, teacher_path, write_npz(tmp_path / "unlabelled.npz", x_train), eval_path, epochs=40
        )
        events = client.http.get(f"/v1/jobs/{unlabelled['id']}/events", params={"limit": 1000}).json()["data"]
        for job in (labelled, unlabelled):
            report = client.http.get(f"/v1/jobs/{job['id']}/report").json()
            teacher, student = report["teacher"], report["student"]
            assert teacher["accuracy"] == pytest.approx(teacher_accuracy(), abs=1e-9)
            assert teacher["accuracy"] >= 0.97
            assert teacher["num_parameters"] >= 5 * student["num_parameters"]
            assert student["accuracy"] >= 0.95 * teacher["accuracy"], report
            downloaded = _download_student(client, job["id"], tmp_path)
            assert _accuracy(downloaded, x_test, y_test) == pytest.approx(student["accuracy"], abs=1e-9)
    assert any("label" in e["message"].lower() for e in events if e["type"] in ("warning", "info")), events
    assert np.isfinite(report["compression_ratio"])
