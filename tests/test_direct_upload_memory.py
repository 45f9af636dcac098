"""A 2 GiB upload through the presigned flow leaves the API process's memory flat and arrives intact (issue 13).

The file's bytes are generated as they are sent (never held whole, never written to disk here) and go from this
client straight to the store (moto's S3 server) through the signed part URLs; the API only signs them and joins
the parts. Its peak resident memory (VmHWM) is compared before and after, as tests/test_upload_memory.py does for
the streamed upload; then the stored object is read back from the store and its sha256 compared with the source's.
Memory elsewhere: moto joins the parts in memory (about twice the file, transiently) and keeps the object in a
temporary file; this test's process holds one 1 MiB block at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import httpx
import pytest

from tests.support.direct_upload import create
from tests.support.s3_server import client as s3_client
from tests.support.s3_server import keys, s3_server
from tests.support.service import running_service
from tests.test_upload_memory import vm_kib

pytestmark = pytest.mark.slow
SIZE = 2 * 1024**3
BLOCK = 1024**2
BOUND_MIB = 50
SEED = os.urandom(BLOCK)


def block(index: int) -> bytes:
    """The file's index-th MiB: a random block made distinct by its index (a misplaced part changes the hash)."""
    return index.to_bytes(8, "little") + SEED[8:]


def source_sha256() -> str:
    digest = hashlib.sha256()
    for i in range(SIZE // BLOCK):
        digest.update(block(i))
    return digest.hexdigest()


def part_bytes(offset: int, length: int) -> Iterator[bytes]:
    # Parts are whole MiB (64 MiB by default), so each starts on a block.
    assert offset % BLOCK == 0 and length % BLOCK == 0
    for i in range(offset // BLOCK, (offset + length) // BLOCK):
        yield block(i)


def test_a_2_gib_presigned_upload_keeps_api_memory_flat_and_arrives_intact(tmp_path):
    expected = source_sha256()
    with s3_server(tmp_path / "s3") as s3:
        env = {k: v for k, v in s3.items() if k != "bucket"} | {"DISTILLERY_STORAGE_URL": f"s3://{s3['bucket']}/big"}
        # No uploads worker: the test reads the stored object back itself (the worker's hash check is proved by
        # tests/test_direct_upload.py); fetching 2 GiB once more would only lengthen the run.
        with running_service(tmp_path / "svc", queues="jobs", extra_env=env) as svc:
            key = svc.new_key("big")
            pid = svc.procs["api"].pid
            auth = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=svc.url, headers=auth, timeout=600) as http, httpx.Client(timeout=600) as store:
                create(http, "model", 10 * BLOCK, "0" * 64)  # warm the routes and the store client up first
                before_rss, before_hwm = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
                created = create(http, "model", SIZE, expected, name="big teacher")
                assert created.status_code == 201, created.text
                upload = created.json()
                parts = []
                for part in upload["parts"]:
                    offset = (part["number"] - 1) * upload["part_size"]
                    length = min(upload["part_size"], SIZE - offset)
                    resp = store.put(
                        part["url"], content=part_bytes(offset, length), headers={"Content-Length": str(length)}
                    )
                    assert resp.status_code == 200, resp.text
                    parts.append({"number": part["number"], "etag": resp.headers["ETag"]})
                done = http.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": parts})
                assert done.status_code == 201, done.text
                assert done.json()["size_bytes"] == SIZE and done.json()["sha256"] == expected
                after_hwm = vm_kib(pid, "VmHWM")
            growth_mib = (after_hwm - before_hwm) / 1024
            print(
                f"{len(parts)} parts of {upload['part_size'] // BLOCK} MiB; "
                f"API RSS before {before_rss / 1024:.1f} MiB, "
                f"peak before {before_hwm / 1024:.1f} MiB, peak after {after_hwm / 1024:.1f} MiB, "
                f"peak growth {growth_mib:.1f} MiB"
            )
            assert growth_mib < BOUND_MIB, f"the API's peak RSS grew by {growth_mib:.1f} MiB"

            (stored,) = [k for k in keys(s3, "big/") if k.endswith(f"/models/{done.json()['id']}/model.bin")]
            body = s3_client(s3).get_object(Bucket=s3["bucket"], Key=stored)["Body"]
            digest, received = hashlib.sha256(), 0
            for chunk in body.iter_chunks(BLOCK):
                digest.update(chunk)
                received += len(chunk)
            assert received == SIZE and digest.hexdigest() == expected
