"""A 512 MiB upload, streamed from a generator, raises the API process's resident memory by < 64 MiB."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.service import running_service

SIZE = 512 * 1024**2
BOUNDARY = "memoryboundary"


def vm_kib(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process, in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def multipart_stream(size: int, chunk: int = 1024**2):
    """A multipart body with a `size`-byte file part (ONNX-looking, so it is accepted), as a generator."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = b"\x08" + b"\x00" * (chunk - 1)  # first byte: an ONNX ir_version tag
    rest = b"\x00" * chunk
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield (block if sent == 0 else rest)[:n]
        sent += n
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.slow
def test_512_mib_upload_keeps_api_memory_flat(tmp_path):
    with running_service(tmp_path, workers=1) as svc:
        key = svc.new_key("big")
        pid = svc.procs["api"].pid
        with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
            http.get("/v1/models")  # warm the route up first
            before_rss, before_hwm = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
            resp = http.post(
                "/v1/models",
                content=multipart_stream(SIZE),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            )
            assert resp.status_code == 201, resp.text
            assert resp.json()["size_bytes"] == SIZE
        after_hwm = vm_kib(pid, "VmHWM")
        growth_mib = (after_hwm - max(before_rss, 1)) / 1024
        print(
            f"API RSS before {before_rss / 1024:.1f} MiB, peak before {before_hwm / 1024:.1f} MiB, "
            f"peak after {after_hwm / 1024:.1f} MiB, growth {growth_mib:.1f} MiB"
        )
        assert after_hwm - before_hwm < 64 * 1024, f"peak RSS grew by {(after_hwm - before_hwm) / 1024:.1f} MiB"
