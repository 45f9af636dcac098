"""Uploads and artifacts in an S3-compatible object store (issue 13, point 1), against a real S3-protocol server
(moto's server mode), real PostgreSQL and Redis, and a real worker: the whole job path with nothing of the
tenant's in the local data dir but the worker's fetched-input cache."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
from tests.support.s3_server import keys, s3_server
from tests.support.service import Client, running_service

pytestmark = pytest.mark.slow
PREFIX = "svc"


def test_the_job_path_runs_on_the_object_store(tmp_path, postgres_url, redis_url):
    with s3_server(tmp_path / "s3") as s3:
        env = {k: v for k, v in s3.items() if k != "bucket"}
        env["DISTILLERY_STORAGE_URL"] = f"s3://{s3['bucket']}/{PREFIX}"
        with running_service(tmp_path / "svc", postgres_url, redis_url, extra_env=env) as svc:
            client = Client(svc.url, svc.new_key("alice"))
            x, y, xt, yt = digits_arrays()
            teacher = client.ready_upload("models", train_digits_teacher(tmp_path))
            train = client.ready_upload("datasets", write_npz(tmp_path / "train.npz", x, y))
            body = {"teacher_id": teacher["id"], "train_dataset_id": train["id"], "hyperparameters": {"epochs": 1}}
            body["hyperparameters"]["recipe"] = "plain"
            created = client.http.post("/v1/jobs", json=body)
            assert created.status_code == 201, created.text
            job = client.wait_job(created.json()["id"])
            assert job["status"] == "succeeded", job

            stored = keys(s3, PREFIX + "/")
            tenant = next(k for k in stored if "/models/" in k).split("/")[1]  # keys: <prefix>/<tenant>/...
            assert any(k.endswith("/model.pt") and f"/models/{teacher['id']}/" in k for k in stored), stored
            assert any(f"/datasets/{train['id']}/" in k for k in stored), stored
            assert any(k.endswith("/student.pt") and f"/jobs/{job['id']}/" in k for k in stored), stored
            # The teacher's outputs, cached for jobs on any machine, under the tenant and the teacher's sha256.
            assert any("/cache/teacher_outputs/" in k and "/teacher-" in k for k in stored), stored
            # The local store holds the uploads only as the worker's fetched copies, never as the stored files.
            local = svc.data_dir / "storage" / tenant
            assert not (local / "models").exists() and not (local / "datasets").exists()

            resp = client.http.get(f"/v1/jobs/{job['id']}/artifacts/student.pt")
            assert resp.status_code == 200, resp.text
            assert hashlib.sha256(resp.content).hexdigest() == resp.headers["x-checksum-sha256"]

            # Deleting an upload removes its objects.
            spare = client.ready_upload("datasets", write_npz(tmp_path / "spare.npz", xt, yt))
            assert any(f"/datasets/{spare['id']}/" in k for k in keys(s3, PREFIX + "/"))
            assert client.http.delete(f"/v1/datasets/{spare['id']}").status_code == 204
            assert not any(f"/datasets/{spare['id']}/" in k for k in keys(s3, PREFIX + "/"))


def test_a_presigned_url_fetches_the_object_from_the_store(tmp_path):
    from app.object_store import ObjectStorage

    with s3_server(tmp_path / "s3") as s3:
        import os
        from unittest import mock

        with mock.patch.dict(os.environ, {k: v for k, v in s3.items() if k != "bucket"}):
            store = ObjectStorage(tmp_path / "local", f"s3://{s3['bucket']}/p")
            source = tmp_path / "blob.bin"
            source.write_bytes(b"x" * (9 * 1024**2))  # above boto3's multipart threshold (8 MiB)
            store.put(source, "t/jobs/j/out/blob.bin")
            assert not source.exists()
            url = store.presigned_url("t/jobs/j/out/blob.bin", "blob.bin")
            fetched = httpx.get(url, timeout=30)
            assert fetched.status_code == 200 and fetched.content == b"x" * (9 * 1024**2)
            assert "blob.bin" in fetched.headers["content-disposition"]
            assert b"".join(store.stream("t/jobs/j/out/blob.bin")) == fetched.content
            local = store.local_path("t/jobs/j/out/blob.bin")
            assert local.read_bytes() == fetched.content and "store-cache" in str(local)
            store.remove_tree("t/jobs/j")
            assert keys(s3, "p/") == [] and not local.exists()


def test_a_worker_on_another_disk_resumes_a_killed_job_from_the_checkpoint_in_the_store(
    tmp_path, postgres_url, redis_url
):
    """Two workers that share only PostgreSQL, Redis and the store: SIGKILL the first mid-training; the second,
    with a data dir of its own, fetches the checkpoint from the store and resumes from it."""
    import signal
    import time

    from tests.support.job_service import digits_files, job_events, upload_digits, wait_epoch

    fast = {
        "DISTILLERY_LEASE_TIMEOUT_S": "4",
        "DISTILLERY_REAPER_INTERVAL_S": "1",
        "DISTILLERY_WORKER_HEARTBEAT_INTERVAL_S": "1",
    }
    with s3_server(tmp_path / "s3") as s3:
        env = {**fast, **{k: v for k, v in s3.items() if k != "bucket"}}
        env["DISTILLERY_STORAGE_URL"] = f"s3://{s3['bucket']}/{PREFIX}"
        with running_service(tmp_path / "svc", postgres_url, redis_url, extra_env=env) as svc:
            client = Client(svc.url, svc.new_key("acme"))
            (tmp_path / "digits").mkdir()
            body = {**upload_digits(client, digits_files(tmp_path / "digits"))}
            body["hyperparameters"] = {"epochs": 40, "batch_size": 16, "recipe": "plain"}
            job_id = client.http.post("/v1/jobs", json=body).json()["id"]
            wait_epoch(client, job_id, 3)
            deadline = time.monotonic() + 60  # the worker copies the checkpoint after each epoch's metrics
            while not any(k.endswith("checkpoints/CURRENT") for k in keys(s3, PREFIX + "/")):
                assert time.monotonic() < deadline, "no checkpoint reached the store"
                time.sleep(0.2)
            svc.kill_worker("w0", signal.SIGKILL)
            elsewhere = tmp_path / "machine-b"
            svc.start_worker(
                "b", extra_env={"DISTILLERY_DATA_DIR": str(elsewhere), "DISTILLERY_STORAGE_DIR": str(elsewhere / "s")}
            )
            job = client.wait_job(job_id, timeout=300)
            assert job["status"] == "succeeded", (job, svc.log_tail())
            events = job_events(client, job_id)
            resumes = [e for e in events if e["type"] == "resume"]
            assert resumes, "\n".join(f"{e['type']}: {e['message'][:150]}" for e in events if e["type"] != "progress")
            resume = resumes[0]
            # From a checkpoint in the store, not from scratch (the last one copied before the kill: epoch 1 to 3).
            assert resume["data"]["epoch"] >= 1
            # Machine B had nothing of the job but what it fetched: the inputs into its cache, the checkpoint.
            assert any((elsewhere / "s" / "store-cache").rglob("model.pt"))
            assert any("/checkpoints/" in k for k in keys(s3, PREFIX + "/"))
            # ... and the teacher's outputs that machine A computed before the kill: B ran no teacher pass.
            report = client.http.get(f"/v1/jobs/{job_id}/report").json()
            assert report["teacher_outputs_cache"] == "hit", report["teacher_outputs_cache"]
            assert any((elsewhere / "s").rglob("cache/teacher_outputs/*/teacher-*.npy"))


def test_a_worker_killed_while_copying_a_checkpoint_leaves_the_previous_one_whole_in_the_store(tmp_path):
    """CI once killed the worker between the upload of epoch N+1's tensors and its JSON: the store held a torn
    pair and the next machine started over. The copy goes to the other slot and the pointer moves last."""
    import os
    from unittest import mock

    import torch

    from app.object_store import ObjectStorage
    from worker import checkpoint_sync
    from worker.engine.checkpoint import load_checkpoint, save_checkpoint

    with s3_server(tmp_path / "s3") as s3, mock.patch.dict(os.environ, {k: v for k, v in s3.items() if k != "bucket"}):
        machine_a = ObjectStorage(tmp_path / "a", f"s3://{s3['bucket']}/p")
        folder = checkpoint_sync.checkpoint_dir(machine_a, "t1", "j1")
        for epoch in (1, 2):
            save_checkpoint(
                str(folder), {"w": torch.full((4,), float(epoch))}, {"epoch": epoch, "step": 0, "global_step": epoch}
            )
            assert checkpoint_sync.push(machine_a, "t1", "j1") == 2
        save_checkpoint(str(folder), {"w": torch.full((4,), 3.0)}, {"epoch": 3, "step": 0, "global_step": 3})
        real = machine_a.client.upload_file
        calls = []

        def killed_after_the_tensors(source, bucket, key):
            calls.append(key)
            if len(calls) > 1:
                raise KeyboardInterrupt("SIGKILL")
            real(source, bucket, key)

        with mock.patch.object(machine_a.client, "upload_file", killed_after_the_tensors):
            with pytest.raises(KeyboardInterrupt):
                checkpoint_sync.push(machine_a, "t1", "j1")

        machine_b = ObjectStorage(tmp_path / "b", f"s3://{s3['bucket']}/p")
        assert checkpoint_sync.pull(machine_b, "t1", "j1") == 2
        loaded = load_checkpoint(str(checkpoint_sync.checkpoint_dir(machine_b, "t1", "j1")))
        assert loaded is not None, "the fetched pair is torn"
        tensors, meta = loaded
        assert meta["epoch"] == 2 and torch.equal(tensors["w"], torch.full((4,), 2.0))
        assert calls[0].endswith("/slot-a/checkpoint.safetensors"), calls  # epoch 2 is in slot-b, untouched
