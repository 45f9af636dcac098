"""Service benchmark: queue latency (POST /v1/jobs -> running) and API read throughput.

    .venv/bin/python tests/benchmarks/bench_service.py             # PostgreSQL + Redis (as deployed)
    .venv/bin/python tests/benchmarks/bench_service.py --embedded  # SQLite + embedded broker (`up`)

Starts a real API and one real Celery worker (tests/support/service.py), uploads a tiny TorchScript teacher
(Linear(8, 3)) and a 200-row .npz, then:

1. submits --jobs one-epoch jobs one after another, each only once the previous one has finished (the
   worker is idle), and measures the time from the POST /v1/jobs response to the job running, two ways:
   - poll: the first GET /v1/jobs/{id} (every --poll-ms) showing `running`, on the client's monotonic clock;
   - started_at: the job's `started_at` (set by the worker's claim) minus the wall-clock time the POST
     response arrived; the server is this machine, so the clocks are the same. The claim can happen before
     the response reaches the client, so small negative values are possible.
   Also the server-only `started_at - created_at`.
2. measures requests/s of GET /v1/jobs/{id} (auth, a database read, serialisation) against GET /healthz
   (routing only), single-threaded and with --threads threads, keep-alive httpx clients.

Prints numbers and ratios; asserts nothing about timing. PostgreSQL/Redis come from DISTILLERY_TEST_PG
and DISTILLERY_TEST_REDIS as in tests/conftest.py; a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from tests.support.service import Client, running_service  # noqa: E402

PG_ADMIN = os.environ.get("DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = 13  # a database index of the benchmark's own, emptied before and after
TERMINAL = ("succeeded", "failed", "cancelled")


@contextmanager
def postgres_database():
    """A fresh PostgreSQL database, dropped afterwards (as tests/conftest.py's postgres_url)."""
    import psycopg

    name = f"distillery_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_database():
    """A Redis database index, flushed before and after."""
    import redis

    url = f"{REDIS_URL}/{REDIS_DB}"
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()


def make_inputs(folder: Path) -> tuple[Path, Path]:
    """A scripted Linear(8, 3) teacher and 200 rows labelled by it."""
    import torch

    torch.manual_seed(0)
    teacher = torch.nn.Linear(8, 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        scripted = torch.jit.script(teacher)
        teacher_path = folder / "teacher.pt"
        scripted.save(str(teacher_path))
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    with torch.no_grad():
        y = teacher(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    data_path = folder / "train.npz"
    np.savez(data_path, x=x, y=y)
    return teacher_path, data_path


def parse_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_queue_latency(client: Client, body: dict, jobs: int, poll_s: float) -> dict:
    """Sequential jobs: POST, poll fast until running, then wait (slower polling) for the end."""
    poll_ms, started_ms, server_ms, missed, statuses = [], [], [], 0, {}
    for _ in range(jobs):
        resp = client.http.post("/v1/jobs", json=body)
        t_mono, t_wall = time.monotonic(), time.time()
        resp.raise_for_status()
        job_id = resp.json()["id"]
        seen_running = None
        while True:
            job = client.http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] != "queued":
                seen_running = time.monotonic() if job["status"] == "running" else None
                break
            time.sleep(poll_s)
        if seen_running is None:
            missed += 1  # the job ended between two polls: only the started_at measure counts
        else:
            poll_ms.append((seen_running - t_mono) * 1000)
        deadline = time.monotonic() + 300
        while job["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not finish: {job}")
            time.sleep(0.02)
            job = client.http.get(f"/v1/jobs/{job_id}").json()
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
        if job["status"] != "succeeded":
            print(f"  job {job_id} {job['status']}: {job.get('error')}", file=sys.stderr)
        if job.get("started_at"):
            started = parse_ts(job["started_at"])
            started_ms.append((started - t_wall) * 1000)
            server_ms.append((started - parse_ts(job["created_at"])) * 1000)
    return {"poll": poll_ms, "started_at": started_ms, "server": server_ms, "missed": missed, "statuses": statuses}


def throughput(url: str, path: str, headers: dict, requests: int, threads: int) -> float:
    """Requests per second for `requests` GETs of `path`, split over `threads` keep-alive clients."""
    per_thread = requests // threads
    barrier = threading.Barrier(threads + 1)
    errors: list[str] = []

    def work() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            for _ in range(20):  # warm the connection and the server's code paths
                http.get(path)
            barrier.wait()
            for _ in range(per_thread):
                r = http.get(path)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(work) for _ in range(threads)]
        barrier.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
        elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests to {path}: {errors[0]}")
    return per_thread * threads / elapsed


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "?"
        )
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedded", action="store_true", help="SQLite + embedded broker, not PG + Redis")
    parser.add_argument("--jobs", type=int, default=50, help="sequential one-epoch jobs (default 50)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="poll interval while queued (default 5)")
    parser.add_argument("--requests", type=int, default=2000, help="GETs per throughput run (default 2000)")
    parser.add_argument("--threads", type=int, default=8, help="threads for the concurrent run (default 8)")
    parser.add_argument("--export", default="safetensors", help="comma-separated export formats of each job")
    args = parser.parse_args(argv)

    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    backend = "SQLite + embedded broker (sqla+sqlite)" if args.embedded else "PostgreSQL + Redis"
    with tempfile.TemporaryDirectory(prefix="distillery-bench-") as tmp_name:
        tmp = Path(tmp_name)
        teacher_path, data_path = make_inputs(tmp)
        with (
            _backends(args.embedded) as (db_url, broker_url),
            running_service(tmp / "svc", database_url=db_url, broker_url=broker_url, workers=1) as svc,
        ):
            client = Client(svc.url, svc.new_key("bench"))
            teacher = client.ready_upload("models", teacher_path)
            train = client.ready_upload("datasets", data_path)
            body = {
                "teacher_id": teacher["id"],
                "train_dataset_id": train["id"],
                "student": {"architecture": "mlp", "hidden_sizes": [16]},
                "hyperparameters": {"recipe": "plain", "epochs": 1, "batch_size": 64},
                "export": [f for f in args.export.split(",") if f],
            }
            # One job first, not counted: imports and caches in the worker are paid once.
            warm = client.http.post("/v1/jobs", json=body)
            warm.raise_for_status()
            warm_job = client.wait_job(warm.json()["id"])
            if warm_job["status"] != "succeeded":
                print(f"warm-up job {warm_job['status']}: {warm_job.get('error')}\n{svc.log_tail()}")
                return 1
            t0 = time.monotonic()
            lat = measure_queue_latency(client, body, args.jobs, args.poll_ms / 1000)
            jobs_s = time.monotonic() - t0
            job_id = warm_job["id"]
            headers = {"Authorization": client.http.headers["Authorization"]}
            rates = {}
            for threads in (1, args.threads):
                for name, path, hdrs in (
                    ("GET /v1/jobs/{id}", f"/v1/jobs/{job_id}", headers),
                    ("GET /healthz", "/healthz", {}),
                ):
                    rates[(name, threads)] = throughput(svc.url, path, hdrs, args.requests, threads)

    print()
    print("Distillery service benchmark")
    print(f"command:  {command}")
    print(f"backend:  {backend}; 1 worker (solo pool); API: 1 uvicorn process")
    print(
        f"machine:  {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"commit {git_commit()}; client, API, worker and databases share the CPUs"
    )
    print()
    print(
        f"Queue latency, {args.jobs} sequential one-epoch jobs (worker idle before each POST), "
        f"{jobs_s:.1f} s in all; statuses: {lat['statuses']}"
    )
    print(f"  {'measure':<46}{'n':>5}{'median ms':>11}{'p95 ms':>9}{'min ms':>9}{'max ms':>9}")
    rows = [
        (f"POST response -> first GET 'running' (poll {args.poll_ms:g} ms)", lat["poll"]),
        ("POST response -> started_at (same clock)", lat["started_at"]),
        ("created_at -> started_at (server clock only)", lat["server"]),
    ]
    for label, values in rows:
        if values:
            print(
                f"  {label:<46}{len(values):>5}{statistics.median(values):>11.1f}{pct(values, 95):>9.1f}"
                f"{min(values):>9.1f}{max(values):>9.1f}"
            )
        else:
            print(f"  {label:<46}{0:>5}")
    if lat["missed"]:
        print(f"  ({lat['missed']} job(s) had already finished at the first non-queued poll)")
    print()
    print(f"API throughput, {args.requests} requests per run, httpx keep-alive (requests/s)")
    print(f"  {'threads':<9}{'GET /v1/jobs/{id}':>19}{'GET /healthz':>15}{'jobs/healthz':>15}")
    for threads in (1, args.threads):
        job_rate, health_rate = rates[("GET /v1/jobs/{id}", threads)], rates[("GET /healthz", threads)]
        print(f"  {threads:<9}{job_rate:>19.0f}{health_rate:>15.0f}{job_rate / health_rate:>15.2f}")
    return 0


@contextmanager
def _backends(embedded: bool):
    """(database_url, broker_url): None, None for the embedded defaults, else fresh PostgreSQL and Redis."""
    if embedded:
        yield None, None
        return
    with postgres_database() as db_url, redis_database() as broker_url:
        yield db_url, broker_url


if __name__ == "__main__":
    sys.exit(main())
