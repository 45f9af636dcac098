"""A causal-LM job handed back on SIGTERM resumes on another worker at its last finished epoch (issue 12 with the
reliability rules): the tiny GPT-2 job of tests/support/lm_tiny.py over HTTP, the embedded defaults, real
workers. No epoch finished before the hand-back is trained again, and the finished baseline not at all."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.job_service import job_events
from tests.support.lm_tiny import tiny_lm_job
from tests.support.service import Client, running_service

pytestmark = pytest.mark.slow


def _student_epochs(client: Client, job_id: str) -> list[int]:
    return [e["data"]["epoch"] for e in job_events(client, job_id)
            if e["type"] == "progress" and (e["data"] or {}).get("model") == "student"]  # fmt: skip


def test_an_lm_job_handed_back_on_sigterm_resumes_from_its_checkpoint(tmp_path):
    teacher, train, eval_ = (Path(p) for p in tiny_lm_job(tmp_path / "inputs"))
    env = {"DISTILLERY_PROGRESS_INTERVAL_S": "0"}  # every epoch's progress recorded as an event
    with running_service(tmp_path / "svc", extra_env=env) as svc:
        client = Client(svc.url, svc.new_key("alice"))
        body = {
            "teacher_id": client.ready_upload("models", teacher)["id"],
            "train_dataset_id": client.ready_upload("datasets", train)["id"],
            "eval_dataset_id": client.ready_upload("datasets", eval_)["id"],
            "student": {"architecture": "hf", "num_hidden_layers": 1},
            "lm": {
                "method": "forward_kl",
                "epochs": 120,
                "batch_size": 16,
                "max_length": 16,
                "max_new_tokens": 4,
                "generation_prompts": 4,
                "speed": False,
            },  # fmt: skip
        }
        created = client.http.post("/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 300
        while len(_student_epochs(client, job_id)) < 3:
            job = client.http.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, (job, svc.log_tail())
            time.sleep(0.1)
        svc.kill_worker("w0", signal.SIGTERM)
        assert svc.procs["worker-w0"].wait(timeout=120) == 0
        svc.start_worker("w1")
        job = client.wait_job(job_id, timeout=600)
        assert job["status"] == "succeeded", (job, svc.log_tail())

        events = job_events(client, job_id)
        resumes = [e["data"] for e in events if e["type"] == "resume"]
        assert [r["model"] for r in resumes] == ["baseline", "student"], resumes
        assert resumes[0]["epoch"] == 120 and resumes[1]["epoch"] >= 3
        epochs = _student_epochs(client, job_id)
        assert epochs == list(range(1, 121)), epochs  # each epoch trained once, across the two attempts
        baseline = [e["data"]["epoch"] for e in events
                    if e["type"] == "progress" and (e["data"] or {}).get("model") == "baseline"]  # fmt: skip
        assert baseline == list(range(1, 121))
        report = client.http.get(f"/v1/jobs/{job_id}/report").json()
        assert report["student"]["perplexity"] > 1 and len(report["lm_history"]["student"]) == 120
