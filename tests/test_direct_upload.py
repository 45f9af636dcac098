"""Presigned multipart uploads (issue 13, point 1): the file goes from the client straight to the object store.

Against moto's S3 server, real PostgreSQL and Redis, and a real worker: parts PUT with plain httpx to the signed
URLs, the completed upload validated (its sha256 checked by the worker while fetching, its format recognised in
the sandbox) and distilled by a job; sizes that do not add up, a wrong sha256, another tenant, a local store.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from distillery_client import Distillery
from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
from tests.support.direct_upload import create, file_chunks, put_parts, send_file
from tests.support.job_service import service_db
from tests.support.s3_server import client as s3_client
from tests.support.s3_server import keys, s3_server
from tests.support.service import Client, running_service

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PREFIX = "svc"
PART = 5 * 1024**2  # S3's smallest part: a file of a few MiB comes in several parts


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3")) as env:
        yield env


@pytest.fixture(scope="module")
def svc(tmp_path_factory, s3, module_postgres_url, module_redis_url):
    env = {k: v for k, v in s3.items() if k != "bucket"}
    env |= {
        "DISTILLERY_STORAGE_URL": f"s3://{s3['bucket']}/{PREFIX}",
        "DISTILLERY_DIRECT_UPLOAD_PART_BYTES": str(PART),
        "DISTILLERY_REAPER_INTERVAL_S": "1",
    }
    with running_service(
        tmp_path_factory.mktemp("direct"), module_postgres_url, module_redis_url, extra_env=env
    ) as service:
        yield service


@pytest.fixture(scope="module")
def alice(svc) -> Client:
    return Client(svc.url, svc.new_key("alice"))


def _big_npz(path, rows: int = 48_000):
    """An npz of about 12 MiB (three 5 MiB parts)."""
    rng = np.random.default_rng(0)
    return write_npz(path, rng.normal(size=(rows, 64)).astype(np.float32), rng.integers(0, 3, rows))


def _open_multipart_uploads(s3) -> list:
    return s3_client(s3).list_multipart_uploads(Bucket=s3["bucket"]).get("Uploads", [])


def test_files_sent_in_parts_to_the_store_are_validated_and_a_job_distils_them(alice, s3, tmp_path):
    teacher = send_file(alice.http, "model", train_digits_teacher(tmp_path), name="teacher")
    assert teacher.status_code == 201, teacher.text
    assert teacher.json()["status"] == "validating" and teacher.json()["format"] == "pending"
    x, y, _, _ = digits_arrays()
    train = send_file(alice.http, "dataset", write_npz(tmp_path / "train.npz", x, y))
    big_path = _big_npz(tmp_path / "big.npz")
    created = create(alice.http, "dataset", big_path.stat().st_size, hashlib.sha256(big_path.read_bytes()).hexdigest())
    assert created.status_code == 201 and len(created.json()["parts"]) == 3, created.text
    parts = put_parts(created.json(), big_path.stat().st_size, file_chunks(big_path))
    big = alice.http.post(f"/v1/uploads/{created.json()['id']}/complete", json={"parts": parts})
    assert big.status_code == 201, big.text

    teacher_row = alice.wait_upload("models", teacher.json()["id"])
    assert teacher_row["status"] == "ready" and teacher_row["format"] == "torchscript", teacher_row
    big_row = alice.wait_upload("datasets", big.json()["id"])
    assert big_row["status"] == "ready" and big_row["format"] == "npz" and big_row["info"]["rows"] == 48_000
    assert big_row["size_bytes"] == big_path.stat().st_size
    assert any(k.endswith(f"/datasets/{big_row['id']}/data.bin") for k in keys(s3, PREFIX + "/"))
    assert _open_multipart_uploads(s3) == []
    # A completed upload is gone from /v1/uploads.
    assert alice.http.delete(f"/v1/uploads/{created.json()['id']}").status_code == 404

    train_row = alice.wait_upload("datasets", train.json()["id"])
    body = {"teacher_id": teacher_row["id"], "train_dataset_id": train_row["id"]}
    body["hyperparameters"] = {"epochs": 1, "recipe": "plain"}
    job = alice.http.post("/v1/jobs", json=body)
    assert job.status_code == 201, job.text
    assert alice.wait_job(job.json()["id"])["status"] == "succeeded"


def test_parts_that_do_not_add_up_to_the_declared_size_answer_422_and_the_upload_stays_open(alice):
    data = np.random.default_rng(1).bytes(6 * 1024**2)  # two parts: 5 MiB and 1 MiB
    created = create(alice.http, "model", len(data), hashlib.sha256(data).hexdigest())
    assert created.status_code == 201, created.text
    upload = created.json()
    first, last = upload["parts"]
    etags = [_put(first["url"], data[: upload["part_size"]]), _put(last["url"], data[upload["part_size"] : -10])]
    parts = [{"number": n, "etag": e} for n, e in zip((1, 2), etags, strict=True)]
    done = alice.http.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": parts})
    assert done.status_code == 422 and done.json()["error"]["code"] == "size_mismatch", done.text
    message = done.json()["error"]["message"]
    assert f"hold {len(data) - 10} bytes, not the declared {len(data)}" in message, message
    missing = alice.http.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": parts[:1]})
    assert missing.status_code == 422 and "every part" in missing.json()["error"]["message"], missing.text
    # The right bytes for the last part, and the same upload completes.
    parts[1]["etag"] = _put(last["url"], data[upload["part_size"] :])
    done = alice.http.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": parts})
    assert done.status_code == 201 and done.json()["size_bytes"] == len(data), done.text


def _put(url: str, body: bytes) -> str:
    resp = httpx.put(url, content=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.headers["ETag"]


def test_a_wrong_sha256_makes_the_upload_invalid_with_checksum_mismatch(alice, tmp_path):
    path = train_digits_teacher(tmp_path)
    size = path.stat().st_size
    created = create(alice.http, "model", size, "0" * 64)
    assert created.status_code == 201, created.text
    parts = put_parts(created.json(), size, file_chunks(path))
    done = alice.http.post(f"/v1/uploads/{created.json()['id']}/complete", json={"parts": parts})
    assert done.status_code == 201, done.text
    row = alice.wait_upload("models", done.json()["id"])
    assert row["status"] == "invalid" and row["error"]["code"] == "checksum_mismatch", row
    assert hashlib.sha256(path.read_bytes()).hexdigest() in row["error"]["message"]
    # An unverified hash is never reused: the same declared sha256 again is a new upload, not this row.
    again = create(alice.http, "model", size, "0" * 64)
    assert again.status_code == 201, again.text


def test_content_refused_at_upload_is_refused_with_the_same_words(alice, tmp_path):
    pickle = tmp_path / "weights.pkl"
    pickle.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    ordinary = alice.upload("models", pickle)
    assert ordinary.status_code == 422, ordinary.text
    direct = send_file(alice.http, "model", pickle)
    assert direct.status_code == 201, direct.text
    row = alice.wait_upload("models", direct.json()["id"])
    assert row["status"] == "invalid" and row["error"] == ordinary.json()["error"], row


def test_another_tenant_gets_404_and_the_owner_can_abort(svc, alice, s3):
    bob = Client(svc.url, svc.new_key("bob"))
    created = create(alice.http, "dataset", 6 * 1024**2, "a" * 64, label_column="label")
    assert created.status_code == 201, created.text
    upload_id = created.json()["id"]
    parts = [{"number": 1, "etag": '"x"'}, {"number": 2, "etag": '"y"'}]
    assert bob.http.post(f"/v1/uploads/{upload_id}/complete", json={"parts": parts}).status_code == 404
    assert bob.http.delete(f"/v1/uploads/{upload_id}").status_code == 404
    assert any(u["UploadId"] for u in _open_multipart_uploads(s3))
    assert alice.http.delete(f"/v1/uploads/{upload_id}").status_code == 204
    assert alice.http.delete(f"/v1/uploads/{upload_id}").status_code == 404


def test_a_file_over_the_limit_answers_413_naming_it(alice):
    created = create(alice.http, "model", 3 * 1024**3, "b" * 64)
    assert created.status_code == 413, created.text
    assert str(2 * 1024**3) in created.json()["error"]["message"]
    bad = create(alice.http, "dataset", 10, "c" * 64, text_column="text")
    assert bad.status_code == 422 and "tokenizer" in bad.json()["error"]["message"], bad.text


def test_an_upload_left_past_its_expiry_is_aborted_by_the_reaper(svc, alice, s3):
    created = create(alice.http, "model", 6 * 1024**2, "d" * 64)
    upload_id = created.json()["id"]
    before = len(_open_multipart_uploads(s3))
    with service_db(svc).begin() as conn:
        conn.execute(
            text("UPDATE direct_uploads SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": upload_id}
        )
    deadline = time.monotonic() + 60
    while alice.http.delete(f"/v1/uploads/{upload_id}").status_code != 404:
        assert time.monotonic() < deadline, "the reaper never aborted the expired upload"
        time.sleep(0.5)
    assert len(_open_multipart_uploads(s3)) == before - 1


def test_the_sdk_sends_a_file_over_its_threshold_straight_to_the_store(svc, s3, tmp_path):
    path = _big_npz(tmp_path / "sdk.npz")
    seen: list[tuple[int, int]] = []
    with Distillery(svc.url, svc.new_key("sdk")) as client:
        dataset = client.upload_dataset(path, direct_threshold=1024**2, progress=lambda d, t: seen.append((d, t)))
        assert dataset.format == "pending"
        ready = client.wait_ready(dataset)[0]
        small = client.upload_model(train_digits_teacher(tmp_path), direct_threshold=2 * 1024**2)
    assert (
        ready.status == "ready"
        and ready.format == "npz"
        and ready.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)
    stored = keys(s3, PREFIX + "/")
    assert any(k.endswith(f"/datasets/{dataset.id}/data.bin") for k in stored)
    assert any(k.endswith(f"/models/{small.id}/model.pt") for k in stored), "a small file goes the usual way"


def test_a_local_store_answers_409_and_the_sdk_falls_back(tmp_path):
    with running_service(tmp_path) as local:
        http = Client(local.url, local.new_key("carol")).http
        created = create(http, "model", 1024, "e" * 64)
        assert created.status_code == 409 and created.json()["error"]["code"] == "direct_upload_unavailable"
        assert "POST /v1/models" in created.json()["error"]["message"]
        with Distillery(local.url, local.new_key("dave")) as client:
            model = client.upload_model(train_digits_teacher(tmp_path), direct_threshold=0)
            assert model.format == "torchscript"


def test_distillery_run_sends_files_over_the_threshold_straight_to_the_store_with_a_progress_bar(svc, s3, tmp_path):
    x, y, _, _ = digits_arrays()
    teacher, train = train_digits_teacher(tmp_path), write_npz(tmp_path / "cli-train.npz", x, y)
    env = {**svc.env, "DISTILLERY_URL": svc.url, "DISTILLERY_API_KEY": svc.new_key("cli"), "COLUMNS": "160"}
    env["DISTILLERY_DIRECT_UPLOAD_THRESHOLD"] = "1"  # every file of this run goes straight to the store
    argv = ["run", "--teacher", str(teacher), "--train", str(train), "--epochs", "1", "--out", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-m", "distillery_cli", *argv], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "upload teacher.pt" in result.stderr and "upload cli-train.npz" in result.stderr, result.stderr
    assert (tmp_path / "out" / "student.pt").is_file()
    model_id = re.search(r"\b(mdl_\w+) .*: ready \(torchscript\)", result.stderr)
    dataset_id = re.search(r"\b(dst_\w+) .*: ready \(npz\)", result.stderr)
    assert model_id and dataset_id, result.stderr
    stored = keys(s3, PREFIX + "/")
    assert any(k.endswith(f"/models/{model_id.group(1)}/model.bin") for k in stored)
    assert any(k.endswith(f"/datasets/{dataset_id.group(1)}/data.bin") for k in stored)
