"""`distillery up` restarts a worker that dies (the OOM killer, a stuck model's exit), and the service goes on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.support.service import Client, assert_no_leftovers, free_port, stop_up
from worker.examples import write_example


def _jobs_worker(up: psutil.Process) -> psutil.Process | None:
    for child in up.children(recursive=True):
        try:
            if any(arg.startswith("--queues=jobs") for arg in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_up_restarts_a_dead_worker_and_the_next_job_runs(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(DISTILLERY_API_PORT=str(port), DISTILLERY_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    distillery = str(Path(sys.executable).parent / "distillery")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen([distillery, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200 and _jobs_worker(psutil.Process(up.pid)):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        first = _jobs_worker(psutil.Process(up.pid))
        first.kill()  # SIGKILL, as the OOM killer does
        first.wait(timeout=30)
        deadline = time.monotonic() + 60
        while True:
            second = _jobs_worker(psutil.Process(up.pid))
            if second is not None and second.pid != first.pid:
                break
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(0.5)
        assert "exited with code -9; restarting it" in (tmp_path / "up.log").read_text()

        files = write_example(tmp_path / "example")
        client = Client(url, (tmp_path / "data" / "api_key").read_text().strip())
        teacher = client.ready_upload("models", files["teacher"])
        train = client.ready_upload("datasets", files["train"])
        resp = client.http.post(
            "/v1/jobs",
            json={"teacher_id": teacher["id"], "train_dataset_id": train["id"], "hyperparameters": {"epochs": 1}},
        )
        assert resp.status_code == 201, resp.text
        assert client.wait_job(resp.json()["id"], timeout=300)["status"] == "succeeded"
        assert second.is_running()
    finally:
        code = stop_up(up, log)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert_no_leftovers(up)
