"""A real S3-protocol server for tests: moto's standalone server mode, started as its own process."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.service import free_port


@contextlib.contextmanager
def s3_server(logs: Path, bucket: str = "distillery-test") -> Iterator[dict]:
    """Start moto_server on a free port with one bucket; yield the AWS_* environment that points at it."""
    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
        }
        client(env).create_bucket(Bucket=bucket)
        yield {**env, "bucket": bucket}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def client(env: dict):
    """A boto3 S3 client for the server `env` describes."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )


def keys(env: dict, prefix: str = "") -> list[str]:
    """Every object key in the bucket under `prefix`."""
    pages = client(env).get_paginator("list_objects_v2").paginate(Bucket=env["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


__all__ = ["client", "keys", "s3_server"]
