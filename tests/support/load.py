"""The load scenario shared by the load test and its benchmark: many jobs at once, two workers."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import create_engine, text

from tests.support.service import Client, Service


def tiny_inputs(out: Path) -> dict[str, Path]:
    """A 3-class problem with 8 features and a small TorchScript teacher: jobs take about a second."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()
    with torch.no_grad():
        y = teacher(torch.from_numpy(x)).argmax(1).numpy()
    torch.jit.script(teacher).save(str(out / "teacher.pt"))
    np.savez(out / "data.npz", x=x, y=y)
    return {"teacher": out / "teacher.pt", "data": out / "data.npz"}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_load(service: Service, files: dict[str, Path], jobs: int = 200, threads: int = 16) -> dict:
    """Submit `jobs` jobs concurrently, wait for all, and return outcomes, claim counts and timings."""
    client = Client(service.url, service.new_key("load"))
    body = {
        "teacher_id": client.ready_upload("models", files["teacher"])["id"],
        "train_dataset_id": client.ready_upload("datasets", files["data"])["id"],
        "student": {"architecture": "mlp", "hidden_sizes": [8]},
        "hyperparameters": {"recipe": "plain", "epochs": 1, "batch_size": 64},
        "export": ["torchscript"],
    }
    start = time.time()
    with ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(lambda _: client.http.post("/v1/jobs", json=body), range(jobs)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201][:3]
    ids = [r.json()["id"] for r in responses]
    finished = [client.wait_job(job_id, timeout=1800) for job_id in ids]
    elapsed = time.time() - start
    url = service.env.get("DISTILLERY_DATABASE_URL") or f"sqlite:///{service.data_dir / 'distillery.db'}"
    with create_engine(url).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT job_id, count(*) FROM job_events "
                "WHERE type = 'status' AND message LIKE 'job running (attempt %' GROUP BY job_id"
            )
        ).all()
    claims = {job_id: count for job_id, count in rows}
    turnaround = sorted(_ts(j["finished_at"]) - _ts(j["created_at"]) for j in finished)
    # Queue latency: from the job's creation until a worker started it.
    waited = sorted(_ts(j["started_at"]) - _ts(j["created_at"]) for j in finished if j["started_at"])
    return {
        "ids": ids,
        "statuses": [j["status"] for j in finished],
        "attempts": [j["attempt"] for j in finished],
        "claims": [claims.get(job_id, 0) for job_id in ids],
        "elapsed_s": elapsed,
        "jobs_per_minute": 60 * jobs / elapsed,
        "turnaround_median_s": statistics.median(turnaround),
        "turnaround_p95_s": turnaround[int(0.95 * (len(turnaround) - 1))],
        "queue_median_s": statistics.median(waited) if waited else None,
        "queue_p95_s": waited[int(0.95 * (len(waited) - 1))] if waited else None,
    }
