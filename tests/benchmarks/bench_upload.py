"""Upload benchmark: a 2 GiB file through POST /v1/models against a plain file copy on the same disk.

Prints the API process's peak resident memory (VmHWM) before and after (the growth should stay under
100 MiB) and the upload throughput as a ratio to shutil.copyfile of a file of the same size, in the same
run, on the same disk (the service's data dir). Prints figures; asserts nothing about time.

    python -m tests.benchmarks.bench_upload [--size-mib 2048]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.service import running_service
from tests.test_upload_memory import BOUNDARY, multipart_stream, vm_kib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=2048)
    args = parser.parse_args()
    size = args.size_mib * 1024**2
    with tempfile.TemporaryDirectory(prefix="bench-upload-", dir=os.environ.get("BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        with running_service(tmp, extra_env={"DISTILLERY_MAX_UPLOAD_BYTES": str(size + 1024**2)}) as svc:
            key = svc.new_key("bench")
            pid = svc.procs["api"].pid
            with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=3600) as http:
                http.get("/v1/models")
                rss0, hwm0 = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
                start = time.perf_counter()
                resp = http.post(
                    "/v1/models",
                    content=multipart_stream(size),
                    headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                )
                assert resp.status_code == 201, resp.text
                os.sync()  # both sides are timed to durable bytes on disk
                upload_s = time.perf_counter() - start
                model_id = resp.json()["id"]
            hwm1 = vm_kib(pid, "VmHWM")
            stored = next(p for p in (svc.data_dir / "storage").rglob("model.onnx") if model_id in str(p))
            # The plain copy: same size, same disk, same run.
            copy_dest = svc.data_dir / "storage" / "copy.bin"
            os.sync()
            start = time.perf_counter()
            shutil.copyfile(stored, copy_dest)
            os.sync()
            copy_s = time.perf_counter() - start
            copy_dest.unlink()
        mib = size / 1024**2
        print(f"upload size            {mib:.0f} MiB")
        print(f"API RSS before         {rss0 / 1024:.1f} MiB")
        print(f"API peak RSS before    {hwm0 / 1024:.1f} MiB")
        print(f"API peak RSS after     {hwm1 / 1024:.1f} MiB")
        print(
            f"peak growth            {(hwm1 - hwm0) / 1024:.1f} MiB (limit 100 MiB: "
            f"{'ok' if hwm1 - hwm0 < 100 * 1024 else 'OVER'})"
        )
        print(
            f"upload                 {upload_s:.2f} s, {mib / upload_s:.0f} MiB/s "
            "(HTTP + multipart parse + sha256 + write + sync)"
        )
        print(f"shutil.copyfile + sync {copy_s:.2f} s, {mib / copy_s:.0f} MiB/s")
        print(f"upload / copy speed    {copy_s / upload_s:.2f}")


if __name__ == "__main__":
    main()
