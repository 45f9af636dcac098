"""The v1 wire contract, tenant isolation and bad input, against a real API and worker (embedded defaults)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.digits import digits_arrays, train_digits_teacher, write_csv, write_npz
from tests.support.service import Client, running_service

DESIGN_JOB_KEYS = {
    "id",
    "status",
    "phase",
    "attempt",
    "teacher_id",
    "train_dataset_id",
    "eval_dataset_id",
    "student",
    "hyperparameters",
    "export",
    "baseline",
    "progress",
    "metrics",
    "error",
    "created_at",
    "started_at",
    "finished_at",
}
# Fields this service adds to DESIGN.md's Job (documented in the OpenAPI schema): nothing else may appear.
JOB_KEYS = DESIGN_JOB_KEYS | {"max_runtime_s", "webhook_url", "resources"}
UPLOAD_KEYS = {"id", "name", "format", "status", "size_bytes", "sha256", "created_at", "error", "info"}
EVENT_KEYS = {"id", "type", "level", "message", "data", "created_at"}
REPORT_KEYS = {
    "job_id",
    "device",
    "train_seconds",
    "eval_examples",
    "classes",
    "teacher",
    "student",
    "baseline",
    "compression_ratio",
    "speedup",
    "teacher_outputs_cache",
    "history",
}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """One embedded service (SQLite + embedded broker + a real worker) for the module."""
    with running_service(tmp_path_factory.mktemp("api")) as service:
        yield service


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The digits teacher and datasets as files."""
    d = tmp_path_factory.mktemp("files")
    x_train, y_train, x_test, y_test = digits_arrays()
    return {
        "teacher": train_digits_teacher(d),
        "train": write_npz(d / "train.npz", x_train, y_train),
        "eval": write_npz(d / "eval.npz", x_test, y_test),
        "csv": write_csv(d / "train.csv", x_train, y_train),
    }


@pytest.fixture(scope="module")
def alice(svc) -> Client:
    return Client(svc.url, svc.new_key("alice"))


@pytest.fixture(scope="module")
def bob(svc) -> Client:
    return Client(svc.url, svc.new_key("bob"))


@pytest.fixture(scope="module")
def done_job(alice, files) -> dict:
    """A small finished job of alice's, with its inputs."""
    teacher = alice.ready_upload("models", files["teacher"])
    train = alice.ready_upload("datasets", files["train"])
    eval_ = alice.ready_upload("datasets", files["eval"])
    resp = alice.http.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "eval_dataset_id": eval_["id"],
            "hyperparameters": {"epochs": 2},
        },
    )
    assert resp.status_code == 201, resp.text
    job = alice.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", job
    return {"job": job, "teacher": teacher, "train": train, "eval": eval_}


def assert_error(resp, status: int, code: str | None = None) -> dict:
    """The response has the status and the error envelope."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def id_routes(done: dict) -> list[tuple[str, str]]:
    job, teacher, train = done["job"]["id"], done["teacher"]["id"], done["train"]["id"]
    return [
        ("GET", f"/v1/models/{teacher}"),
        ("DELETE", f"/v1/models/{teacher}"),
        ("GET", f"/v1/datasets/{train}"),
        ("DELETE", f"/v1/datasets/{train}"),
        ("GET", f"/v1/jobs/{job}"),
        ("POST", f"/v1/jobs/{job}/cancel"),
        ("GET", f"/v1/jobs/{job}/events"),
        ("GET", f"/v1/jobs/{job}/artifacts"),
        ("GET", f"/v1/jobs/{job}/artifacts/student.pt"),
        ("GET", f"/v1/jobs/{job}/report"),
    ]


def test_every_v1_route_needs_a_valid_key(svc, done_job):
    import httpx

    routes = [
        ("GET", "/v1/models"),
        ("POST", "/v1/models"),
        ("GET", "/v1/datasets"),
        ("POST", "/v1/datasets"),
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        *id_routes(done_job),
    ]
    for method, path in routes:
        assert_error(httpx.request(method, svc.url + path), 401, "unauthorized")
        resp = httpx.request(method, svc.url + path, headers={"Authorization": "Bearer dk_wrong"})
        assert_error(resp, 401, "unauthorized")


def test_another_tenants_ids_answer_like_missing_ones(alice, bob, done_job):
    for method, path in id_routes(done_job):
        foreign = bob.http.request(method, path)
        missing = alice.http.request(method, path.replace(path.split("/")[3], path.split("/")[3][:4] + "0" * 24))
        assert_error(foreign, 404, "not_found")
        assert_error(missing, 404, "not_found")
        assert foreign.json()["error"]["message"].replace(path.split("/")[3], "X") == missing.json()["error"][
            "message"
        ].replace(path.split("/")[3][:4] + "0" * 24, "X")
    # Lists and job creation do not see alice's resources either.
    for kind in ("models", "datasets", "jobs"):
        assert bob.http.get(f"/v1/{kind}").json()["data"] == []
    resp = bob.http.post(
        "/v1/jobs",
        json={"teacher_id": done_job["teacher"]["id"], "train_dataset_id": done_job["train"]["id"]},
    )
    assert_error(resp, 404)
    # Still alice's and intact.
    assert alice.http.get(f"/v1/models/{done_job['teacher']['id']}").status_code == 200


def test_created_objects_and_lists_match_the_contract(alice, done_job, files):
    for kind, obj in (("models", done_job["teacher"]), ("datasets", done_job["train"])):
        assert set(obj) == UPLOAD_KEYS
        assert obj["created_at"].endswith("Z")
        page = alice.http.get(f"/v1/{kind}", params={"limit": 1}).json()
        assert set(page) == {"data", "next_after"} and len(page["data"]) == 1
    job = done_job["job"]
    assert set(job) == JOB_KEYS
    assert set(job["progress"]) == {"epoch", "epochs", "step", "total_steps", "fraction"}
    assert {"train_loss", "validation_accuracy", "validation_agreement"} <= set(job["metrics"])
    assert job["attempt"] == 1 and job["finished_at"].endswith("Z")
    events = alice.http.get(f"/v1/jobs/{job['id']}/events").json()
    assert events["data"] and all(set(e) == EVENT_KEYS for e in events["data"])
    ids = [e["id"] for e in events["data"]]
    assert ids == sorted(ids) and all(isinstance(i, int) for i in ids)
    assert {"status", "phase", "progress", "metrics"} <= {e["type"] for e in events["data"]}
    report = alice.http.get(f"/v1/jobs/{job['id']}/report").json()
    assert REPORT_KEYS <= set(report) and report["job_id"] == job["id"]
    assert set(report["teacher"]) >= {"accuracy", "num_parameters", "size_bytes", "latency_ms"}
    assert set(report["student"]) >= {"accuracy", "agreement", "num_parameters", "size_bytes", "latency_ms"}
    arts = alice.http.get(f"/v1/jobs/{job['id']}/artifacts").json()
    names = {a["name"] for a in arts["data"]}
    assert {"student.pt", "student.safetensors", "student.json", "manifest.json"} <= names
    assert all(set(a) == {"name", "format", "size_bytes", "sha256"} for a in arts["data"])


def test_pagination_walks_newest_first(alice, tmp_path):
    # Three different files: the same bytes again would answer with the same dataset (content-addressed).
    paths = [write_npz(tmp_path / f"page{i}.npz", np.full((4, 2), i, dtype=np.float32), None) for i in range(3)]
    ids = [alice.upload("datasets", path).json()["id"] for path in paths]
    page1 = alice.http.get("/v1/datasets", params={"limit": 2}).json()
    assert [d["id"] for d in page1["data"]] == ids[::-1][:2]
    page2 = alice.http.get("/v1/datasets", params={"limit": 2, "after": page1["next_after"]}).json()
    assert page2["data"][0]["id"] == ids[0]
    assert_error(alice.http.get("/v1/datasets", params={"limit": 101}), 422, "invalid_request")


def test_report_is_404_until_the_job_has_one_and_cancel_of_finished_is_409(alice, done_job):
    job_id = done_job["job"]["id"]
    assert_error(alice.http.post(f"/v1/jobs/{job_id}/cancel"), 409, "job_finished")
    assert_error(alice.http.get(f"/v1/jobs/{job_id}/artifacts/nope.bin"), 404)


def _torch_save_archive(path: Path) -> Path:
    torch.save(torch.nn.Linear(2, 2), path)
    return path


def test_bad_model_uploads_are_refused_with_what_to_do(alice, tmp_path):
    not_model = tmp_path / "notes.pt"
    not_model.write_text("hello, I am not a model")
    err = assert_error(alice.upload("models", not_model), 422)
    assert "TorchScript" in err["message"] and "ONNX" in err["message"]
    err = assert_error(alice.upload("models", _torch_save_archive(tmp_path / "model.pt")), 422)
    assert "torch.save" in err["message"] and "TorchScript" in err["message"]
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    err = assert_error(alice.upload("models", raw), 422)
    assert "pickle" in err["message"]
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_error(alice.upload("models", empty), 422)
    # An ONNX-looking file that is not a valid model passes the sniff and is marked invalid by the worker.
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x08\x07garbage-that-is-not-protobuf" * 10)
    resp = alice.upload("models", fake)
    assert resp.status_code == 201
    body = alice.wait_upload("models", resp.json()["id"])
    assert body["status"] == "invalid" and body["error"]["code"] and body["error"]["message"]


def test_bad_dataset_uploads_are_refused_with_what_to_do(alice, tmp_path, files):
    no_x = tmp_path / "no_x.npz"
    np.savez(no_x, features=np.zeros((3, 2), np.float32))
    err = assert_error(alice.upload("datasets", no_x), 422, "invalid_dataset")
    assert "'x'" in err["message"]
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}, None], dtype=object))
    assert "pickled" in assert_error(alice.upload("datasets", objects), 422)["message"]
    err = assert_error(alice.upload("datasets", files["csv"], label_column="target"), 422, "invalid_dataset")
    assert "target" in err["message"] and "label" in err["message"]
    assert_error(alice.upload("datasets", files["csv"], max_length="many"), 422)
    assert_error(alice.upload("datasets", files["csv"], text_column="label"), 422)
    # Not multipart at all.
    assert_error(alice.http.post("/v1/datasets", content=b"x,y\n1,2\n"), 422)


def test_impossible_jobs_answer_422_or_404(alice, done_job):
    base = {"teacher_id": done_job["teacher"]["id"], "train_dataset_id": done_job["train"]["id"]}
    bad = [
        {"hyperparameters": {"epochs": 0}},
        {"hyperparameters": {"alpha": 2}},
        {"hyperparameters": {"loss": "cosine"}},
        {"hyperparameters": {"temperature": -1}},
        {"hyperparameters": {"epoch": 3}},
        {"student": {"architecture": "resnet152"}},
        {"student": {"architecture": "mlp", "hidden_sizes": [-4]}},
        {"export": ["tflite"]},
        {"student": {"architecture": "cnn"}},
    ]
    for extra in bad:
        assert_error(alice.http.post("/v1/jobs", json={**base, **extra}), 422)
    # Not JSON at all is a 400 that says so (issue "Polish what a newcomer trips on", point 12).
    assert_error(
        alice.http.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )
    assert_error(alice.http.post("/v1/jobs", json={**base, "teacher_id": "mdl_missing"}), 404)
    assert_error(alice.http.post("/v1/jobs", json={**base, "student": {"model_id": "mdl_missing"}}), 404)
    # A dataset used as a teacher is not found among models.
    assert_error(alice.http.post("/v1/jobs", json={**base, "teacher_id": done_job["train"]["id"]}), 404)
    assert_error(alice.http.get("/v1/jobs", params={"status": "exploded"}), 422)


def test_jobs_whose_teacher_does_not_fit_the_data_fail_with_a_precise_code(alice, done_job, tmp_path):
    x_train, y_train, _, _ = digits_arrays()
    wide = alice.ready_upload("datasets", write_npz(tmp_path / "wide.npz", x_train[:, :32], y_train))
    twelve = alice.ready_upload("datasets", write_npz(tmp_path / "twelve.npz", x_train, (y_train % 12) + 2))
    outcomes = {}
    for name, ds in (("input_mismatch", wide), ("class_mismatch", twelve)):
        resp = alice.http.post(
            "/v1/jobs",
            json={
                "teacher_id": done_job["teacher"]["id"],
                "train_dataset_id": ds["id"],
                "hyperparameters": {"epochs": 1},
            },
        )
        if resp.status_code == 422:
            outcomes[name] = resp.json()["error"]
        else:
            assert resp.status_code == 201, resp.text
            job = alice.wait_job(resp.json()["id"])
            assert job["status"] == "failed", job
            outcomes[name] = job["error"]
    assert outcomes["input_mismatch"]["code"] == "input_mismatch"
    assert "64" in outcomes["input_mismatch"]["message"] or "32" in outcomes["input_mismatch"]["message"]
    assert outcomes["class_mismatch"]["code"] == "class_mismatch"
    assert "10" in outcomes["class_mismatch"]["message"] and "12" in outcomes["class_mismatch"]["message"]


def test_a_model_used_by_a_live_job_cannot_be_deleted(alice, done_job):
    resp = alice.http.post(
        "/v1/jobs",
        json={
            "teacher_id": done_job["teacher"]["id"],
            "train_dataset_id": done_job["train"]["id"],
            "hyperparameters": {"epochs": 500},
        },
    )
    assert resp.status_code == 201
    job_id = resp.json()["id"]
    assert_error(alice.http.delete(f"/v1/models/{done_job['teacher']['id']}"), 409, "model_in_use")
    assert_error(alice.http.delete(f"/v1/datasets/{done_job['train']['id']}"), 409, "dataset_in_use")
    cancelled = alice.http.post(f"/v1/jobs/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    # A cancelled job is never resurrected by its worker.
    assert alice.wait_job(job_id)["status"] == "cancelled"


def test_upload_then_delete_removes_the_row_and_the_file(alice, svc, tmp_path):
    # Bytes of its own: files["eval"] again would be the dataset of done_job (uploads are content-addressed).
    ds = alice.ready_upload("datasets", write_npz(tmp_path / "deleted.npz", np.ones((4, 3), np.float32), None))
    stored = list((svc.data_dir / "storage").rglob(f"{ds['id']}/*"))
    assert stored, "the upload should be on disk"
    assert alice.http.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert_error(alice.http.get(f"/v1/datasets/{ds['id']}"), 404)
    assert not any(p.exists() for p in stored)


def test_upload_over_the_limit_is_413_and_leaves_nothing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limit")
    with running_service(tmp, extra_env={"DISTILLERY_MAX_UPLOAD_BYTES": "100000"}) as small:
        client = Client(small.url, small.new_key("carol"))
        body = io.BytesIO()
        with zipfile.ZipFile(body, "w") as zf:
            zf.writestr("x.npy", b"\0" * 200_000)

        def chunks():  # no Content-Length: the server must count what it reads
            boundary = b"--b0undary"
            yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n\r\n'
            data = body.getvalue()
            for i in range(0, len(data), 8192):
                yield data[i : i + 8192]
            yield b"\r\n" + boundary + b"--\r\n"

        resp = client.http.post(
            "/v1/datasets",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b0undary"},
        )
        assert_error(resp, 413, "payload_too_large")
        leftovers = [p for p in (small.data_dir / "storage").rglob("*") if p.is_file()]
        assert leftovers == []
        assert client.http.get("/v1/datasets").json()["data"] == []


def test_openapi_declares_the_multipart_bodies_and_the_error_envelope(svc):
    import httpx

    schema = httpx.get(svc.url + "/openapi.json").json()
    for path in ("/v1/models", "/v1/datasets"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["properties"]["file"]["format"] == "binary"
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1"):
                ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (path, method)
    assert httpx.get(svc.url + "/docs").status_code == 200


def test_a_revoked_key_is_refused_and_keys_are_stored_hashed(svc):
    import sqlite3

    key = svc.new_key("dave")
    client = Client(svc.url, key)
    assert client.http.get("/v1/jobs").status_code == 200
    with sqlite3.connect(svc.data_dir / "distillery.db") as db:
        stored = [row[0] for row in db.execute("SELECT key_hash FROM api_keys")]
    assert key not in stored and all(len(h) == 64 for h in stored)
    assert "revoked 1 key" in svc.cli("keys", "revoke", key)
    assert_error(client.http.get("/v1/jobs"), 401, "unauthorized")


def test_a_student_search_job_runs_through_the_service_and_impossible_ones_are_refused(alice, done_job):
    """A budget search over HTTP: refused with what to fix when it cannot work, else a report with its front."""
    base = {"teacher_id": done_job["teacher"]["id"], "train_dataset_id": done_job["train"]["id"]}
    refused = [
        ({"search": {"architectures": ["mlp"]}}, "needs a budget"),
        ({"search": {"architectures": ["cnn"], "max_parameters": 5000}}, "remove it from search.architectures"),
        ({"search": {"architectures": ["lstm"], "max_parameters": 5000}}, "token ids"),
        ({"search": {"architectures": ["mlp"], "max_parameters": 5000}, "architecture": "mlp"}, "search alone"),
    ]
    for student, words in refused:
        error = assert_error(alice.http.post("/v1/jobs", json={**base, "student": student}), 422)
        assert words in error["message"], error
    search = {"architectures": ["mlp"], "max_parameters": 3000, "trials": 3}
    resp = alice.http.post(
        "/v1/jobs",
        json={**base, "student": {"search": search}, "hyperparameters": {"epochs": 2, "recipe": "plain"}},
    )
    assert resp.status_code == 201, resp.text
    job = alice.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["student"]["search"]["max_parameters"] == 3000
    report = alice.http.get(f"/v1/jobs/{job['id']}/report").json()
    section = report["student_search"]
    assert report["student"]["num_parameters"] <= 3000
    assert sum(c["trained"] for c in section["candidates"]) == 3
    page = alice.http.get(f"/v1/jobs/{job['id']}/report.html").text
    assert "Student search" in page and "<svg" in page
    impossible = {"architectures": ["mlp"], "max_parameters": 50}
    resp = alice.http.post(
        "/v1/jobs", json={**base, "student": {"search": impossible}, "hyperparameters": {"epochs": 1}}
    )
    assert resp.status_code == 201, resp.text
    failed = alice.wait_job(resp.json()["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "budget_unreachable", failed
    assert "650 parameters" in failed["error"]["message"]
